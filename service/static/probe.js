/* Probes: ask the model about one point, exactly, on the version drawn. */

import { ApiError, api, predictPath } from "./api.js";
import { fmtNum, probeLine, renderProbes } from "./panel.js";
import { draw } from "./plot.js";
import { MAX_PROBES, el, state } from "./state.js";

export async function probeAt(rawX, rawY) {
  // Rounded before sending, so the point shown is exactly the point the model was asked about.
  const x = Number(rawX.toFixed(3));
  const y = Number(rawY.toFixed(3));
  const version = state.version;
  if (version === null) {
    el.probeResult.textContent = "No model version is loaded yet.";
    return;
  }
  el.probeResult.dataset.state = "loading";
  const t0 = performance.now();
  try {
    const model = state.model;
    const data = await api(predictPath(model, version), { body: { points: [{ x, y }] } });
    // The version or model changed meanwhile: ask the one now drawn.
    if (version !== state.version || model !== state.model) return probeAt(x, y);
    if (data.model_version !== undefined && Number(data.model_version) !== version) {
      throw new ApiError(200, `asked version ${version}, predict answered ${data.model_version}`);
    }
    const pred = data.predictions && data.predictions[0];
    if (!pred || !Number.isFinite(pred.probability))
      throw new ApiError(200, "predict answered no probability");
    const p = Number(pred.probability);
    const cls = pred.class_id === undefined ? (p >= 0.5 ? 1 : 0) : pred.class_id;
    const pr = { n: ++state.probeSeq, x, y, p, cls, version };
    state.probes.push(pr);
    if (state.probes.length > MAX_PROBES) state.probes.shift();
    probeLine(pr, el.probeResult);
    el.probeResult.dataset.ms = (performance.now() - t0).toFixed(1);
    el.probeResult.dataset.state = "ready";
    renderProbes();
    draw();
  } catch (err) {
    el.probeResult.dataset.state = "error";
    const span = document.createElement("span");
    span.className = "error";
    span.textContent = `Probe (${fmtNum(x)}, ${fmtNum(y)}) failed: ${err.message}`;
    el.probeResult.replaceChildren(span);
  }
}
