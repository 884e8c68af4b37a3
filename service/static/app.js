/* xor-dnn playground: draws the served model's decision surface through the service's own
 * batch API (POST predict, pinned with ?version=N) and lets the user probe it.
 *
 * Plain browser JavaScript in ES modules (this one wires the page; the others each hold one
 * concern), no build step, no external requests. Every URL is relative to the
 * page, so the page works unchanged behind an ingress path prefix (the service's root_path).
 *
 * The canvas carries its state for people and tests alike: data-state (loading | ready |
 * error), data-version (the version drawn), data-points and data-calls (grid points and the
 * predict calls that computed them), data-ms (how long those calls took). #probe-result
 * carries the last probe: data-x, data-y, data-probability, data-class-id, data-version,
 * data-ms. The timeline (timeline.js) adds data-source, data-frame and data-epoch.
 */

import { draw, eventPoint, gridValue } from "./plot.js";
import { probeAt } from "./probe.js";
import { renderProbes } from "./panel.js";
import { el, state } from "./state.js";
import { installTimeline } from "./timeline.js";
import { installCompare } from "./compare.js";
import { refreshVersions, showVersion, switchModel } from "./versions.js";

function fitCanvas() {
  const dpr = window.devicePixelRatio || 1;
  const size = Math.round((el.canvas.clientWidth || 500) * dpr);
  if (size > 0 && (el.canvas.width !== size || el.canvas.height !== size)) {
    el.canvas.width = size;
    el.canvas.height = size;
    draw();
  }
}

el.canvas.addEventListener("click", (ev) => {
  const [x, y] = eventPoint(ev);
  probeAt(x, y);
});

el.canvas.addEventListener("mousemove", (ev) => {
  const [x, y] = eventPoint(ev);
  const approx = state.grid
    ? ` · surface P ≈ ${gridValue(x, y).toFixed(3)} (click for the exact value)`
    : "";
  el.hover.textContent = `x = ${x.toFixed(2)}, y = ${y.toFixed(2)}${approx}`;
});

el.canvas.addEventListener("mouseleave", () => {
  el.hover.textContent = "Move over the plot to read coordinates.";
});

el.probeForm.addEventListener("submit", (ev) => {
  ev.preventDefault();
  const x = el.probeX.value.trim() === "" ? NaN : Number(el.probeX.value);
  const y = el.probeY.value.trim() === "" ? NaN : Number(el.probeY.value);
  const bad = [
    ["x", x],
    ["y", y],
  ].filter(([, v]) => !Number.isFinite(v) || Math.abs(v) > 1e6);
  if (bad.length) {
    const span = document.createElement("span");
    span.className = "error";
    const fields = bad.map(([k]) => k).join(" and ");
    span.textContent = `${fields}: enter a number between -1000000 and 1000000.`;
    el.probeResult.replaceChildren(span);
    el.probeResult.dataset.state = "error";
    return;
  }
  probeAt(x, y);
});

el.clearProbes.addEventListener("click", () => {
  state.probes = [];
  el.probeResult.replaceChildren();
  delete el.probeResult.dataset.state;
  renderProbes();
  draw();
});

el.select.addEventListener("change", () => {
  const v = Number(el.select.value);
  // Picking a version by hand pins it; re-ticking "follow" un-pins.
  state.follow = false;
  el.follow.checked = false;
  if (Number.isInteger(v) && v !== state.version) showVersion(v);
});

el.modelSelect.addEventListener("change", () => switchModel(el.modelSelect.value));

el.follow.addEventListener("change", () => {
  state.follow = el.follow.checked;
  if (state.follow && state.defaultVersion !== null && state.defaultVersion !== state.version) {
    showVersion(state.defaultVersion);
  }
});

for (const box of [el.showTrain, el.showTest, el.showMistakes])
  box.addEventListener("change", draw);

document.addEventListener("visibilitychange", () => {
  if (!document.hidden) refreshVersions();
});

installTimeline();
installCompare();
if (typeof ResizeObserver === "function") new ResizeObserver(fitCanvas).observe(el.canvas);
fitCanvas();
refreshVersions();
