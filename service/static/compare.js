/* Side by side: two or more served models' decision surfaces on the same sample, each with its
 * accuracy, and the sample points where they disagree ringed on every panel. Shown only when
 * the server lists two or more models (GET models); each surface comes from that model's own
 * predict route (POST models/{name}/predict, pinned to its default version).
 *
 * For tests and people: #compare carries data-state (loading | ready | error) and
 * data-disagreements; each .compare-panel carries data-model, data-version, data-correct and
 * data-total (its classes on the sample against the sample's labels).
 */

import { api, predictPoints } from "./api.js";
import { architecture } from "./panel.js";
import { drawAxes, drawContour, surfaceImage } from "./plot.js";
import { COLOURS, DOMAIN, GRID, INK, MISTAKE, el, gridPoints, state } from "./state.js";

const MAX_PANELS = 4;
const PANEL_PX = 240;

const view = {
  open: false,
  chosen: null, // Set of model names ticked, or null: the first MAX_PANELS
  key: "", // what was drawn: names and default versions
  gen: 0,
  abort: null,
};

function servedModels() {
  return (state.models || []).filter(
    (m) => m.ready !== false && Number.isInteger(m.default_version),
  );
}

function chosenModels() {
  const models = servedModels();
  if (view.chosen === null) return models.slice(0, MAX_PANELS);
  return models.filter((m) => view.chosen.has(m.name)).slice(0, MAX_PANELS);
}

/** Called on every models poll: show the view's switch when two or more models are served,
 * keep the ticks in step, and redraw if what is compared changed. */
export function refreshCompare() {
  const models = servedModels();
  const available = state.multi && models.length >= 2;
  el.compareToggle.hidden = !available;
  if (!available) {
    el.compare.hidden = true;
    view.open = false;
    el.compareToggle.setAttribute("aria-expanded", "false");
    return;
  }
  renderChoices(models);
  if (view.open) {
    const key = chosenModels()
      .map((m) => `${m.name}@${m.default_version}`)
      .join(",");
    if (key !== view.key) render();
  }
}

function renderChoices(models) {
  const names = models.map((m) => m.name);
  const shown = [...el.compareModels.querySelectorAll("input")].map((i) => i.value);
  const ticked = new Set(chosenModels().map((m) => m.name));
  if (shown.join("|") !== names.join("|")) {
    el.compareModels.replaceChildren(
      ...names.map((name) => {
        const label = document.createElement("label");
        const box = document.createElement("input");
        box.type = "checkbox";
        box.value = name;
        box.addEventListener("change", onTick);
        label.append(box, ` ${name}`);
        return label;
      }),
    );
  }
  for (const box of el.compareModels.querySelectorAll("input")) {
    box.checked = ticked.has(box.value);
  }
}

function onTick() {
  const ticked = [...el.compareModels.querySelectorAll("input")]
    .filter((b) => b.checked)
    .map((b) => b.value);
  view.chosen = new Set(ticked);
  if (view.open) render();
}

function toggle() {
  view.open = !view.open;
  el.compare.hidden = !view.open;
  el.compareToggle.setAttribute("aria-expanded", String(view.open));
  el.compareToggle.textContent = view.open ? "Hide side by side" : "Compare models side by side";
  if (view.open) render();
  else if (view.abort) view.abort.abort();
}

function parseSample(rows) {
  if (!Array.isArray(rows)) return [];
  return rows
    .filter((r) => Array.isArray(r) && Number.isFinite(r[0]) && Number.isFinite(r[1]))
    .filter((r) => r[2] === 0 || r[2] === 1)
    .map(([x, y, cls, split]) => ({ x, y, cls, split: split === "test" ? "test" : "train" }));
}

async function render() {
  const gen = ++view.gen;
  if (view.abort) view.abort.abort();
  const abort = new AbortController();
  view.abort = abort;
  const models = chosenModels();
  view.key = models.map((m) => `${m.name}@${m.default_version}`).join(",");
  el.compare.dataset.state = "loading";
  if (models.length < 2) {
    el.comparePanels.replaceChildren();
    el.compareSummary.textContent = "Tick two or more models to compare them.";
    el.compare.dataset.state = "ready";
    return;
  }
  try {
    const metas = await Promise.all(
      models.map((m) =>
        api(`models/${encodeURIComponent(m.name)}/versions/${m.default_version}`, {
          signal: abort.signal,
        }),
      ),
    );
    if (gen !== view.gen) return;
    // The same sample on every panel: the drawn model's, if it is compared, else the first's.
    const at = Math.max(0, models.findIndex((m) => m.name === state.model));
    const sample = parseSample(metas[at].sample);
    const flat = new Float64Array(sample.length * 2);
    sample.forEach((p, i) => {
      flat[2 * i] = p.x;
      flat[2 * i + 1] = p.y;
    });
    const answers = await Promise.all(
      models.map(async (m) => {
        const v = m.default_version;
        const [grid, pred] = await Promise.all([
          predictPoints(gridPoints, v, abort.signal, { calls: 0 }, m.name),
          sample.length ? predictPoints(flat, v, abort.signal, { calls: 0 }, m.name) : null,
        ]);
        return { grid: grid.probs, classes: pred ? pred.classes : new Int8Array(0) };
      }),
    );
    if (gen !== view.gen) return;
    const first = answers[0].classes;
    const disagree = sample.map((_, i) => answers.some((a) => a.classes[i] !== first[i]));
    const disagreements = disagree.filter(Boolean).length;
    el.comparePanels.replaceChildren(
      ...models.map((m, k) => panel(m, metas[k], answers[k], sample, disagree)),
    );
    el.compare.dataset.disagreements = String(disagreements);
    el.compareSummary.textContent =
      `${models.length} models on the same ${sample.length} sample points` +
      ` (from ${models[at].name}'s metadata): they disagree on ${disagreements}` +
      (disagreements ? ", ringed in red." : ".");
    el.compare.dataset.state = "ready";
  } catch (err) {
    if (gen !== view.gen || err.name === "AbortError") return;
    el.compare.dataset.state = "error";
    el.compareSummary.textContent = `Could not compare the models: ${err.message}`;
  }
}

function panel(model, meta, answer, sample, disagree) {
  const figure = document.createElement("figure");
  figure.className = "compare-panel";
  const canvas = document.createElement("canvas");
  const dpr = window.devicePixelRatio || 1;
  canvas.width = Math.round(PANEL_PX * dpr);
  canvas.height = Math.round(PANEL_PX * dpr);
  canvas.setAttribute("role", "img");
  canvas.setAttribute("aria-label", `Decision surface of model ${model.name}`);
  drawPanel(canvas, answer, sample, disagree);
  const correct = sample.filter((p, i) => answer.classes[i] === p.cls).length;
  const caption = document.createElement("figcaption");
  const title = document.createElement("strong");
  title.textContent = `${model.name} · version ${model.default_version}`;
  const cfg = meta && typeof meta.config === "object" && meta.config !== null ? meta.config : {};
  const lines = [architecture(cfg)];
  if (Number.isFinite(meta.test_accuracy)) {
    lines.push(`test accuracy ${(100 * meta.test_accuracy).toFixed(1)} % (metadata)`);
  }
  if (sample.length) {
    const pct = ((100 * correct) / sample.length).toFixed(1);
    lines.push(`${correct} of ${sample.length} sample points right (${pct} %)`);
  }
  caption.append(
    title,
    ...lines.map((text) => {
      const p = document.createElement("span");
      p.textContent = text;
      return p;
    }),
  );
  figure.append(canvas, caption);
  figure.dataset.model = model.name;
  figure.dataset.version = String(model.default_version);
  figure.dataset.correct = String(correct);
  figure.dataset.total = String(sample.length);
  return figure;
}

function drawPanel(canvas, answer, sample, disagree) {
  const ctx = canvas.getContext("2d");
  const { width: w, height: h } = canvas;
  const s = w / 500;
  ctx.imageSmoothingEnabled = true;
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(surfaceImage(answer.grid), 0.5, 0.5, GRID - 1, GRID - 1, 0, 0, w, h);
  drawAxes(ctx, w, h, s);
  drawContour(ctx, w, h, answer.grid, s);
  const at = (x, y) => [((x + DOMAIN) / (2 * DOMAIN)) * w, ((DOMAIN - y) / (2 * DOMAIN)) * h];
  sample.forEach((p, i) => {
    const [cx, cy] = at(p.x, p.y);
    ctx.beginPath();
    ctx.arc(cx, cy, 5 * s, 0, 2 * Math.PI);
    ctx.fillStyle = `rgb(${COLOURS[p.cls].join(", ")})`;
    ctx.fill();
    ctx.lineWidth = 1.5 * s;
    ctx.strokeStyle = p.split === "test" ? INK : "#ffffff";
    ctx.stroke();
    if (disagree[i]) {
      ctx.beginPath();
      ctx.arc(cx, cy, 11 * s, 0, 2 * Math.PI);
      ctx.lineWidth = 3.5 * s;
      ctx.strokeStyle = MISTAKE;
      ctx.stroke();
    }
  });
}

export function installCompare() {
  el.compareToggle.addEventListener("click", toggle);
}
