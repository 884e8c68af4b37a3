/* The training history replayed: a timeline under the surface (play/pause, a slider over the
 * recorded epochs, loss and accuracy curves with a marker) that redraws the surface from the
 * grids training recorded (GET models/{name}/versions/{v}/history, training/history.py).
 *
 * The canvas says what it shows: data-source="model" (the served model, through predict) or
 * "history" with data-frame (index into the recorded frames) and data-epoch. The timeline is
 * hidden when the version has no history (trained with --no-history).
 */

import { api } from "./api.js";
import { renderMistakes } from "./panel.js";
import { draw, surfaceImage } from "./plot.js";
import { DOMAIN, GRID, INK, clamp, el, state } from "./state.js";

const FRAME_MS = 450; // one recorded epoch per step while playing
const TEST_COLOUR = "#8250df"; // not a class colour: the curves are about the model, not a class

/** Fetch and show the history of `version` if its metadata names one; else hide the timeline.
 * `isCurrent()` says whether the page still wants this version when the answer arrives. */
export async function loadHistory(model, meta, version, signal, isCurrent) {
  stop();
  state.frame = null;
  state.history = null;
  markLive();
  if (!meta || typeof meta.history_file !== "string") {
    hide();
    return;
  }
  const path = `models/${encodeURIComponent(model)}/versions/${version}/history`;
  // A version's history never changes: let the browser cache it (ETag, immutable).
  const doc = await api(path, { signal, cache: "default" });
  if (!isCurrent()) return;
  const history = parseHistory(doc);
  if (history === null) {
    hide();
    return;
  }
  state.history = history;
  el.epoch.max = String(history.frames.length - 1);
  el.epoch.value = String(history.frames.length - 1);
  el.timeline.hidden = false;
  el.timeline.dataset.frames = String(history.frames.length);
  renderLabel();
  drawCurves();
}

export function hide() {
  stop();
  state.history = null;
  state.frame = null;
  el.timeline.hidden = true;
  delete el.timeline.dataset.frames;
}

function parseHistory(doc) {
  const g = doc && doc.grid;
  if (!g || !Array.isArray(doc.frames) || doc.frames.length === 0) return null;
  const size = Number(g.size);
  const [x0, x1] = Array.isArray(g.x) ? g.x.map(Number) : [];
  const [y0, y1] = Array.isArray(g.y) ? g.y.map(Number) : [];
  if (!Number.isInteger(size) || size < 2 || ![x0, x1, y0, y1].every(Number.isFinite)) return null;
  if (!(x1 > x0 && y1 > y0)) return null;
  const frames = [];
  for (const f of doc.frames) {
    let bytes;
    try {
      bytes = Uint8Array.from(atob(String(f.grid)), (c) => c.charCodeAt(0));
    } catch {
      return null;
    }
    if (bytes.length !== size * size) return null;
    frames.push({
      epoch: Number(f.epoch),
      trainLoss: num(f.train_loss),
      trainAcc: num(f.train_accuracy),
      testLoss: num(f.test_loss),
      testAcc: num(f.test_accuracy),
      norms: f.weight_norms && typeof f.weight_norms === "object" ? f.weight_norms : {},
      bytes,
    });
  }
  return {
    size,
    x0,
    x1,
    y0,
    y1,
    epochs: Number(doc.epochs_trained) || frames[frames.length - 1].epoch,
    finalIsServed: doc.final_equals_published === true,
    frames,
  };
}

function num(v) {
  return Number.isFinite(v) ? v : null;
}

/** P(class 1) of frame `frame` at (x, y): bilinear between recorded samples, held at the edge
 * of the recorded range (the training data's). */
function frameValue(h, frame, x, y) {
  const n = h.size;
  const fi = clamp(((x - h.x0) / (h.x1 - h.x0)) * (n - 1), 0, n - 1);
  const fj = clamp(((h.y1 - y) / (h.y1 - h.y0)) * (n - 1), 0, n - 1);
  const i = Math.min(Math.floor(fi), n - 2);
  const j = Math.min(Math.floor(fj), n - 2);
  const u = fi - i;
  const v = fj - j;
  const b = frame.bytes;
  const top = b[j * n + i] * (1 - u) + b[j * n + i + 1] * u;
  const bottom = b[(j + 1) * n + i] * (1 - u) + b[(j + 1) * n + i + 1] * u;
  return (top * (1 - v) + bottom * v) / 255;
}

/** Draw recorded frame `index` on the surface. */
export function showFrame(index) {
  const h = state.history;
  if (h === null) return;
  const k = clamp(Math.round(index), 0, h.frames.length - 1);
  if (state.frame === null) {
    // Keep the served model's drawing to come back to.
    state.live = { grid: state.grid, surface: state.surface, samplePred: state.samplePred };
  }
  const frame = h.frames[k];
  const grid = new Float64Array(GRID * GRID);
  for (let j = 0; j < GRID; j++) {
    const y = DOMAIN - (2 * DOMAIN * j) / (GRID - 1);
    for (let i = 0; i < GRID; i++) {
      grid[j * GRID + i] = frameValue(h, frame, -DOMAIN + (2 * DOMAIN * i) / (GRID - 1), y);
    }
  }
  state.frame = k;
  state.grid = grid;
  state.surface = surfaceImage(grid);
  state.samplePred = Int8Array.from(state.sample, (pt) =>
    frameValue(h, frame, pt.x, pt.y) >= 0.5 ? 1 : 0,
  );
  el.epoch.value = String(k);
  draw();
  renderMistakes();
  renderLabel();
  drawCurves();
  el.canvas.dataset.source = "history";
  el.canvas.dataset.frame = String(k);
  el.canvas.dataset.epoch = String(frame.epoch);
}

/** Back to the served model's own surface (computed through predict). */
export function showLive() {
  stop();
  if (state.frame !== null && state.live) {
    state.grid = state.live.grid;
    state.surface = state.live.surface;
    state.samplePred = state.live.samplePred;
  }
  state.frame = null;
  state.live = null;
  markLive();
  if (state.history) el.epoch.value = String(state.history.frames.length - 1);
  draw();
  renderMistakes();
  renderLabel();
  drawCurves();
}

function markLive() {
  el.canvas.dataset.source = "model";
  delete el.canvas.dataset.frame;
  delete el.canvas.dataset.epoch;
}

export function play() {
  const h = state.history;
  if (h === null) return;
  if (state.playTimer) return stop();
  const last = h.frames.length - 1;
  if (state.frame === null || state.frame >= last) showFrame(0);
  el.play.textContent = "Pause";
  el.play.setAttribute("aria-pressed", "true");
  state.playTimer = setInterval(() => {
    if (state.frame === null || state.frame >= last) return stop();
    showFrame(state.frame + 1);
    if (state.frame >= last) stop();
  }, FRAME_MS);
}

export function stop() {
  if (state.playTimer) clearInterval(state.playTimer);
  state.playTimer = 0;
  el.play.textContent = "Play";
  el.play.setAttribute("aria-pressed", "false");
}

function fmt(v, digits) {
  return v === null ? "—" : v.toFixed(digits);
}

function renderLabel() {
  const h = state.history;
  if (h === null) return;
  el.live.hidden = state.frame === null;
  if (state.frame === null) {
    el.epochLabel.textContent =
      `Served model (${h.epochs} epochs). ${h.frames.length} recorded epochs: ` +
      "drag the slider or press Play.";
    el.frameStats.textContent = h.finalIsServed
      ? "The last recorded epoch is the served model."
      : "The served weights are an average of the last epochs (SWA), not the last epoch.";
    return;
  }
  const f = h.frames[state.frame];
  el.epochLabel.textContent = `Epoch ${f.epoch} of ${h.epochs}`;
  const norms = Object.entries(f.norms)
    .map(([k, v]) => `${k} ${Number.isFinite(v) ? v.toFixed(2) : "—"}`)
    .join(", ");
  el.frameStats.textContent =
    `Loss: train ${fmt(f.trainLoss, 3)}, test ${fmt(f.testLoss, 3)} · ` +
    `accuracy: train ${fmt(f.trainAcc, 3)}, test ${fmt(f.testAcc, 3)} · ` +
    `weight norms: ${norms || "—"}`;
}

/** Two panels: loss (left) and accuracy (right) per recorded epoch, train solid and test
 * dashed, with a marker at the frame drawn. The x axis is the frame index: the recorded epochs
 * are log-spaced, so early training gets the room it deserves. */
function drawCurves() {
  const h = state.history;
  const c = el.curves;
  const dpr = window.devicePixelRatio || 1;
  const cssW = c.clientWidth || 500;
  const cssH = c.clientHeight || 150;
  if (c.width !== Math.round(cssW * dpr)) c.width = Math.round(cssW * dpr);
  if (c.height !== Math.round(cssH * dpr)) c.height = Math.round(cssH * dpr);
  const ctx = c.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, cssW, cssH);
  if (h === null) return;
  const n = h.frames.length;
  const gap = 16;
  const panelW = (cssW - gap) / 2;
  const lossMax = Math.max(
    0.05,
    ...h.frames.flatMap((f) => [f.trainLoss, f.testLoss]).filter((v) => v !== null),
  );
  const panels = [
    { x: 0, title: "loss", max: lossMax, keys: ["trainLoss", "testLoss"] },
    { x: panelW + gap, title: "accuracy", max: 1, keys: ["trainAcc", "testAcc"] },
  ];
  const top = 16;
  const bottom = cssH - 16;
  ctx.font = "11px system-ui, sans-serif";
  for (const p of panels) {
    const xOf = (k) => p.x + 4 + ((panelW - 8) * k) / Math.max(1, n - 1);
    const yOf = (v) => bottom - ((bottom - top) * clamp(v, 0, p.max)) / p.max;
    ctx.strokeStyle = "rgba(31, 35, 40, 0.25)";
    ctx.lineWidth = 1;
    ctx.strokeRect(p.x + 0.5, top + 0.5, panelW - 1, bottom - top);
    ctx.fillStyle = INK;
    ctx.textBaseline = "alphabetic";
    ctx.fillText(`${p.title} (max ${p.max.toFixed(2)})`, p.x + 2, top - 4);
    ctx.fillText(`epoch ${h.frames[0].epoch}`, p.x + 2, cssH - 3);
    const lastLabel = `${h.frames[n - 1].epoch}`;
    ctx.fillText(lastLabel, p.x + panelW - ctx.measureText(lastLabel).width - 2, cssH - 3);
    p.keys.forEach((key, s) => {
      ctx.strokeStyle = s === 0 ? INK : TEST_COLOUR;
      ctx.lineWidth = 1.6;
      ctx.setLineDash(s === 0 ? [] : [4, 3]);
      ctx.beginPath();
      let started = false;
      h.frames.forEach((f, k) => {
        if (f[key] === null) return;
        if (started) ctx.lineTo(xOf(k), yOf(f[key]));
        else ctx.moveTo(xOf(k), yOf(f[key]));
        started = true;
      });
      ctx.stroke();
    });
    ctx.setLineDash([]);
    const at = state.frame === null ? n - 1 : state.frame;
    ctx.strokeStyle = "rgba(214, 39, 40, 0.85)";
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    ctx.moveTo(xOf(at), top);
    ctx.lineTo(xOf(at), bottom);
    ctx.stroke();
  }
}

export function installTimeline() {
  el.epoch.addEventListener("input", () => {
    stop();
    showFrame(Number(el.epoch.value));
  });
  el.play.addEventListener("click", play);
  el.live.addEventListener("click", showLive);
  if (typeof ResizeObserver === "function") new ResizeObserver(drawCurves).observe(el.curves);
}
