/* The canvas: the decision surface, its P = 0.5 contour, sample points and probes, and the
 * mapping between canvas pixels and model coordinates. */

import { COLOURS, DOMAIN, GRID, INK, MISTAKE, SURFACE, clamp, el, state } from "./state.js";

function colour(p) {
  const q = clamp(Number.isFinite(p) ? p : 0.5, 0, 1);
  const [from, to, t] =
    q < 0.5 ? [SURFACE[0], SURFACE.mid, q / 0.5] : [SURFACE.mid, SURFACE[1], (q - 0.5) / 0.5];
  return [0, 1, 2].map((c) => Math.round(from[c] + (to[c] - from[c]) * t));
}

export function surfaceImage(probs) {
  const off = document.createElement("canvas");
  off.width = GRID;
  off.height = GRID;
  const ctx = off.getContext("2d");
  const img = ctx.createImageData(GRID, GRID);
  for (let k = 0; k < probs.length; k++) {
    const [r, g, b] = colour(probs[k]);
    img.data[4 * k] = r;
    img.data[4 * k + 1] = g;
    img.data[4 * k + 2] = b;
    img.data[4 * k + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
  return off;
}

function toCanvas(x, y) {
  const { width: w, height: h } = el.canvas;
  return [((x + DOMAIN) / (2 * DOMAIN)) * w, ((DOMAIN - y) / (2 * DOMAIN)) * h];
}

function scale() {
  return el.canvas.width / 500;
}

export function draw() {
  const ctx = el.canvas.getContext("2d");
  const { width: w, height: h } = el.canvas;
  ctx.clearRect(0, 0, w, h);
  if (!state.surface) return;
  // Grid samples sit on the plot's edges, so the source rectangle runs between the first and
  // last pixel centres; bilinear smoothing then interpolates exactly between samples.
  ctx.imageSmoothingEnabled = true;
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(state.surface, 0.5, 0.5, GRID - 1, GRID - 1, 0, 0, w, h);
  drawAxes(ctx, w, h, scale());
  drawContour(ctx, w, h, state.grid, scale());
  drawSample(ctx);
  drawProbes(ctx);
}

export function drawAxes(ctx, w, h, s) {
  // A vertical and a horizontal line through the plot point (v, v), full width and height.
  const cross = (v) => {
    const cx = ((v + DOMAIN) / (2 * DOMAIN)) * w;
    const cy = ((DOMAIN - v) / (2 * DOMAIN)) * h;
    ctx.beginPath();
    ctx.moveTo(cx, 0);
    ctx.lineTo(cx, h);
    ctx.moveTo(0, cy);
    ctx.lineTo(w, cy);
    ctx.stroke();
  };
  ctx.save();
  ctx.lineWidth = s;
  ctx.strokeStyle = "rgba(31, 35, 40, 0.12)";
  for (let v = -DOMAIN + 1; v < DOMAIN; v++) cross(v);
  ctx.strokeStyle = "rgba(31, 35, 40, 0.35)";
  cross(0);
  ctx.restore();
}

/** The P = 0.5 contour of `g` (GRID x GRID) by marching squares, crossings linearly
 * interpolated, on a w x h canvas; `s` scales the line widths. */
export function drawContour(ctx, w, h, g, s) {
  const t = 0.5;
  const sx = w / (GRID - 1);
  const sy = h / (GRID - 1);
  const segs = [];
  const cross = (i0, j0, v0, i1, j1, v1) => {
    const f = (t - v0) / (v1 - v0);
    return [(i0 + (i1 - i0) * f) * sx, (j0 + (j1 - j0) * f) * sy];
  };
  for (let j = 0; j < GRID - 1; j++) {
    for (let i = 0; i < GRID - 1; i++) {
      const a = g[j * GRID + i];
      const b = g[j * GRID + i + 1];
      const c = g[(j + 1) * GRID + i + 1];
      const d = g[(j + 1) * GRID + i];
      const top = a >= t !== b >= t ? cross(i, j, a, i + 1, j, b) : null;
      const right = b >= t !== c >= t ? cross(i + 1, j, b, i + 1, j + 1, c) : null;
      const bottom = d >= t !== c >= t ? cross(i, j + 1, d, i + 1, j + 1, c) : null;
      const left = a >= t !== d >= t ? cross(i, j, a, i, j + 1, d) : null;
      const hits = [top, right, bottom, left].filter(Boolean);
      if (hits.length === 2) segs.push(hits);
      else if (hits.length === 4) {
        // Saddle: the cell centre decides which corners the boundary joins.
        const centre = (a + b + c + d) / 4;
        if (centre >= t === a >= t) segs.push([top, right], [bottom, left]);
        else segs.push([left, top], [right, bottom]);
      }
    }
  }
  ctx.save();
  ctx.lineCap = "round";
  for (const [style, width] of [
    ["rgba(255, 255, 255, 0.7)", 4.5 * s],
    [INK, 2 * s],
  ]) {
    ctx.strokeStyle = style;
    ctx.lineWidth = width;
    ctx.beginPath();
    for (const [p, q] of segs) {
      ctx.moveTo(p[0], p[1]);
      ctx.lineTo(q[0], q[1]);
    }
    ctx.stroke();
  }
  ctx.restore();
}

function rgb(c) {
  return `rgb(${c[0]}, ${c[1]}, ${c[2]})`;
}

function drawSample(ctx) {
  const s = scale();
  const onlyMistakes = el.showMistakes.checked && state.samplePred !== null;
  ctx.save();
  state.sample.forEach((pt, i) => {
    if (pt.split === "train" ? !el.showTrain.checked : !el.showTest.checked) return;
    const wrong = state.samplePred !== null && state.samplePred[i] !== pt.cls;
    const [cx, cy] = toCanvas(pt.x, pt.y);
    ctx.globalAlpha = onlyMistakes && !wrong ? 0.18 : 1;
    ctx.beginPath();
    ctx.arc(cx, cy, 3.6 * s, 0, 2 * Math.PI);
    ctx.fillStyle = rgb(COLOURS[pt.cls]);
    ctx.fill();
    ctx.lineWidth = 1.2 * s;
    ctx.strokeStyle = pt.split === "test" ? INK : "#ffffff";
    ctx.stroke();
    if (onlyMistakes && wrong) {
      ctx.beginPath();
      ctx.arc(cx, cy, 7.5 * s, 0, 2 * Math.PI);
      ctx.lineWidth = 2.2 * s;
      ctx.strokeStyle = MISTAKE;
      ctx.stroke();
    }
  });
  ctx.restore();
}

function drawProbes(ctx) {
  const s = scale();
  ctx.save();
  ctx.font = `bold ${Math.round(12 * s)}px system-ui, sans-serif`;
  ctx.textBaseline = "middle";
  for (const pr of state.probes) {
    const [cx, cy] = toCanvas(pr.x, pr.y);
    ctx.beginPath();
    ctx.moveTo(cx, cy - 8 * s);
    ctx.lineTo(cx + 8 * s, cy);
    ctx.lineTo(cx, cy + 8 * s);
    ctx.lineTo(cx - 8 * s, cy);
    ctx.closePath();
    ctx.fillStyle = pr.cls === null ? "#ffffff" : rgb(COLOURS[pr.cls]);
    ctx.fill();
    ctx.lineWidth = 2 * s;
    ctx.strokeStyle = INK;
    ctx.stroke();
    const label = String(pr.n);
    ctx.lineWidth = 3 * s;
    ctx.strokeStyle = "#ffffff";
    ctx.strokeText(label, cx + 10 * s, cy);
    ctx.fillStyle = INK;
    ctx.fillText(label, cx + 10 * s, cy);
  }
  ctx.restore();
}

export function eventPoint(ev) {
  // The content box, not the border box: the plot starts inside the canvas border.
  const r = el.canvas.getBoundingClientRect();
  const left = r.left + el.canvas.clientLeft;
  const top = r.top + el.canvas.clientTop;
  const fx = clamp((ev.clientX - left) / el.canvas.clientWidth, 0, 1);
  const fy = clamp((ev.clientY - top) / el.canvas.clientHeight, 0, 1);
  return [-DOMAIN + 2 * DOMAIN * fx, DOMAIN - 2 * DOMAIN * fy];
}

/** P(class 1) at (x, y) interpolated from the drawn grid: for the hover read-out only. */
export function gridValue(x, y) {
  const fi = ((x + DOMAIN) / (2 * DOMAIN)) * (GRID - 1);
  const fj = ((DOMAIN - y) / (2 * DOMAIN)) * (GRID - 1);
  const i = clamp(Math.floor(fi), 0, GRID - 2);
  const j = clamp(Math.floor(fj), 0, GRID - 2);
  const u = fi - i;
  const v = fj - j;
  const g = state.grid;
  const top = g[j * GRID + i] * (1 - u) + g[j * GRID + i + 1] * u;
  const bottom = g[(j + 1) * GRID + i] * (1 - u) + g[(j + 1) * GRID + i + 1] * u;
  return top * (1 - v) + bottom * v;
}
