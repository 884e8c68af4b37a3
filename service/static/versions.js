/* Models and versions: poll the server's models (GET models, when it lists them) and the
 * drawn model's versions, follow the default or a pinned version, and draw one. */

import { api, predictPoints } from "./api.js";
import { refreshCompare } from "./compare.js";
import { clearErrorStatus, renderInfo, renderMistakes, renderProbes, showStatus } from "./panel.js";
import { draw, surfaceImage } from "./plot.js";
import { GRID, MODEL_PARAM, POLL_MS, el, gridPoints, state } from "./state.js";
import { hide as hideTimeline, loadHistory } from "./timeline.js";

/** GET models: the served models, or single-model mode when the server has no such route (a
 * server from before multi-model serving answers 404). */
async function refreshModels() {
  // Asked once more would only be another 404 in the server's log every poll; a page opened
  // before the server was upgraded is reloaded anyway.
  if (state.modelsRoute === false) return;
  let listing;
  try {
    listing = await api("models");
  } catch (err) {
    if (err.status !== 404) throw err;
    state.modelsRoute = false;
    state.multi = false;
    state.models = null;
    el.modelCard.hidden = true;
    return;
  }
  state.modelsRoute = true;
  const models = (Array.isArray(listing.models) ? listing.models : [])
    .filter((m) => m && typeof m.name === "string")
    .sort((a, b) => a.name.localeCompare(b.name));
  state.multi = true;
  state.models = models;
  const names = models.map((m) => m.name);
  if (!names.includes(state.model)) {
    const wanted = MODEL_PARAM && names.includes(MODEL_PARAM) ? MODEL_PARAM : null;
    const fallback = names.includes(listing.default_model) ? listing.default_model : names[0];
    const next = wanted || fallback;
    if (next && next !== state.model) switchModel(next, false);
  }
  renderModelOptions();
}

function renderModelOptions() {
  const names = (state.models || []).map((m) => m.name);
  const current = [...el.modelSelect.options].map((o) => o.value);
  if (current.join("|") !== names.join("|")) {
    el.modelSelect.replaceChildren(
      ...names.map((name) => {
        const opt = document.createElement("option");
        opt.value = name;
        opt.textContent = name;
        return opt;
      }),
    );
  }
  if (names.includes(state.model)) el.modelSelect.value = state.model;
  // One model needs no choice; the page looks as it did before multi-model serving.
  el.modelCard.hidden = names.length < 2;
  el.modelSelect.disabled = names.length < 2;
}

/** Draw `name` from now on (its default version, followed). */
export function switchModel(name, refresh = true) {
  if (name === state.model) return;
  state.model = name;
  state.versions = [];
  state.version = null;
  state.defaultVersion = null;
  state.follow = true;
  el.follow.checked = true;
  el.select.replaceChildren();
  if (state.abort) state.abort.abort();
  state.drawGen += 1;
  hideTimeline();
  if (refresh) refreshVersions();
}

export async function refreshVersions() {
  try {
    if (document.hidden && state.version !== null) return;
    await refreshModels();
    refreshCompare();
    const model = state.model;
    const info = await api(`models/${encodeURIComponent(model)}`);
    if (model !== state.model) return; // switched meanwhile; that switch refreshes

    const versions = (Array.isArray(info.versions) ? info.versions : [])
      .map(Number)
      .filter(Number.isInteger)
      .sort((a, b) => a - b);
    const added = state.versions.length
      ? versions.filter((v) => !state.versions.includes(v))
      : [];
    const lost = state.version !== null && !versions.includes(state.version);
    state.versions = versions;
    state.defaultVersion = Number.isInteger(info.default_version)
      ? info.default_version
      : (versions[versions.length - 1] ?? null);
    renderVersionOptions();
    if (versions.length === 0) {
      showStatus("The service has no model version loaded yet; waiting for one.", true);
      return;
    }
    clearErrorStatus();
    if (added.length) {
      showStatus(`Version ${added.join(", ")} hot-loaded${state.follow ? ": drawing it." : "."}`);
    }
    let target = state.version;
    if (target === null || (state.follow && target !== state.defaultVersion)) {
      target = state.defaultVersion;
    } else if (lost) {
      showStatus(
        `Version ${state.version} was unloaded; showing version ${state.defaultVersion}.`,
      );
      target = state.defaultVersion;
    }
    if (target !== state.version || el.canvas.dataset.state === "error") showVersion(target);
  } catch (err) {
    if (err.status === 404 || err.status === 503) {
      showStatus(`Waiting for the service to load a model version (${err.message}).`, true);
    } else {
      showStatus(`Cannot list the model's versions: ${err.message}`, true);
    }
  } finally {
    // One poll chain only: a visibilitychange refresh replaces the pending timer.
    clearTimeout(state.pollTimer);
    state.pollTimer = setTimeout(refreshVersions, POLL_MS);
  }
}

function renderVersionOptions() {
  const wanted = [...state.versions].reverse(); // newest first
  const labels = wanted.map(
    (v) => `version ${v}${v === state.defaultVersion ? " (default)" : ""}`,
  );
  const current = [...el.select.options].map((o) => o.textContent);
  if (current.join("|") !== labels.join("|")) {
    el.select.replaceChildren(
      ...wanted.map((v, i) => {
        const opt = document.createElement("option");
        opt.value = String(v);
        opt.textContent = labels[i];
        return opt;
      }),
    );
  }
  el.select.disabled = wanted.length === 0;
  if (state.version !== null && state.versions.includes(state.version)) {
    el.select.value = String(state.version);
  }
}

export async function showVersion(version) {
  const gen = ++state.drawGen;
  if (state.abort) state.abort.abort();
  const abort = new AbortController();
  state.abort = abort;
  state.version = version;
  if (state.versions.includes(version)) el.select.value = String(version);
  el.canvas.dataset.state = "loading";
  try {
    const model = state.model;
    const meta = await api(`models/${encodeURIComponent(model)}/versions/${version}`, {
      signal: abort.signal,
    });
    if (gen !== state.drawGen) return;
    renderInfo(meta, version);
    const sample = parseSample(meta.sample);
    const sampleFlat = new Float64Array(sample.length * 2);
    sample.forEach((s, i) => {
      sampleFlat[2 * i] = s.x;
      sampleFlat[2 * i + 1] = s.y;
    });
    const probeFlat = new Float64Array(state.probes.length * 2);
    state.probes.forEach((p, i) => {
      probeFlat[2 * i] = p.x;
      probeFlat[2 * i + 1] = p.y;
    });
    const stats = { calls: 0 };
    const t0 = performance.now();
    const none = Promise.resolve(null);
    const [grid, samplePred, probePred] = await Promise.all([
      predictPoints(gridPoints, version, abort.signal, stats, model),
      sample.length ? predictPoints(sampleFlat, version, abort.signal, { calls: 0 }, model) : none,
      state.probes.length
        ? predictPoints(probeFlat, version, abort.signal, { calls: 0 }, model)
        : none,
    ]);
    if (gen !== state.drawGen) return;
    const ms = performance.now() - t0;
    state.grid = grid.probs;
    state.surface = surfaceImage(grid.probs);
    state.sample = sample;
    state.samplePred = samplePred ? samplePred.classes : null;
    if (probePred) {
      state.probes.forEach((p, i) => {
        p.p = probePred.probs[i];
        p.cls = probePred.classes[i];
        p.version = version;
      });
    }
    draw();
    renderProbes();
    renderMistakes();
    el.stats.textContent =
      `Version ${version}: ${GRID}×${GRID} = ${(GRID * GRID).toLocaleString("en")} grid ` +
      `points in ${stats.calls} predict calls ` +
      `(at most ${state.chunk.toLocaleString("en")} points each), ` +
      `${Math.round(ms)} ms.`;
    el.canvas.dataset.points = String(GRID * GRID);
    el.canvas.dataset.calls = String(stats.calls);
    el.canvas.dataset.ms = ms.toFixed(1);
    el.canvas.dataset.version = String(version);
    el.canvas.dataset.model = model;
    try {
      await loadHistory(model, meta, version, abort.signal, () => gen === state.drawGen);
    } catch (err) {
      if (gen !== state.drawGen || err.name === "AbortError") return;
      hideTimeline();
      showStatus(`Version ${version}: its training history could not be read (${err.message}).`);
    }
    if (gen !== state.drawGen) return;
    el.canvas.dataset.state = "ready";
    clearErrorStatus();
  } catch (err) {
    if (gen !== state.drawGen || err.name === "AbortError") return;
    el.canvas.dataset.state = "error";
    if (err.status === 404) {
      showStatus(`Version ${version} is not loaded (any more); the list will refresh.`, true);
      state.version = null;
    } else {
      showStatus(`Could not draw version ${version}: ${err.message}`, true);
    }
  }
}

function parseSample(rows) {
  if (!Array.isArray(rows)) return [];
  const out = [];
  for (const row of rows) {
    if (!Array.isArray(row) || row.length < 3) continue;
    const [x, y, cls, split] = row;
    if (!Number.isFinite(x) || !Number.isFinite(y) || (cls !== 0 && cls !== 1)) continue;
    out.push({ x, y, cls, split: split === "test" ? "test" : "train" });
  }
  return out;
}
