/* The playground's shared state: constants, the page's elements, what is drawn. */

export const DOMAIN = 5; // the plot covers [-DOMAIN, DOMAIN]², the lesson's data range
export const GRID = 96; // samples per side: 9,216 points, 9 predict calls of 1,024
export const MAX_POINTS_PER_CALL = 1024; // the service's default max_points_per_request
export const CONCURRENCY = 3; // parallel calls per batch of points: enough to let the service batch
export const MAX_RETRIES = 5;
export const MAX_PROBES = 20;
// The lesson's convention, as in the training pictures: class 0 blue, class 1 orange
// (#1f77b4, #ff7f0e, also --class0/--class1 in style.css). The surface uses paler tints of
// the same hues (--surface0/--surface1) so points stay visible.
export const COLOURS = { 0: [31, 119, 180], 1: [255, 127, 14] };
export const SURFACE = { 0: [110, 172, 214], 1: [248, 190, 122], mid: [240, 241, 242] };
export const INK = "#1f2328";
export const MISTAKE = "#d62728";

const params = new URLSearchParams(window.location.search);
// ?model= picks the model first shown; otherwise the server's default model (GET models), or
// "xor" from a server that lists no models (single-model, before GET models existed).
export const MODEL_PARAM = params.get("model");
export const FALLBACK_MODEL = "xor";
// ?poll_ms= lets tests and demos watch a hot-load without waiting the default 3 s.
export const POLL_MS = clamp(Number(params.get("poll_ms")) || 3000, 250, 60000);

const $ = (id) => document.getElementById(id);
export const el = {
  canvas: $("surface"),
  select: $("version"),
  follow: $("follow"),
  info: $("model-info"),
  hover: $("hover"),
  showTrain: $("show-train"),
  showTest: $("show-test"),
  showMistakes: $("show-mistakes"),
  mistakes: $("mistakes-summary"),
  probeForm: $("probe-form"),
  probeX: $("probe-x"),
  probeY: $("probe-y"),
  probeResult: $("probe-result"),
  probes: $("probes"),
  clearProbes: $("clear-probes"),
  stats: $("surface-stats"),
  status: $("status"),
  timeline: $("timeline"),
  play: $("play"),
  epoch: $("epoch"),
  epochLabel: $("epoch-label"),
  live: $("live"),
  curves: $("curves"),
  frameStats: $("frame-stats"),
  modelCard: $("model-choice"),
  modelSelect: $("model"),
  compare: $("compare"),
  compareToggle: $("compare-toggle"),
  compareModels: $("compare-models"),
  comparePanels: $("compare-panels"),
  compareSummary: $("compare-summary"),
};

export const state = {
  model: MODEL_PARAM || FALLBACK_MODEL, // the model drawn
  models: null, // [{name, ready, default_version, versions}] from GET models, or null
  multi: false, // the server lists its models: predictions go to models/{name}/predict
  modelsRoute: null, // whether the server has GET models (null: not asked yet)
  versions: [],
  defaultVersion: null,
  version: null, // the version drawn or being drawn; every request is pinned to it
  follow: true,
  grid: null, // Float64Array GRID*GRID of P(class 1), row 0 at y = +DOMAIN
  surface: null, // GRID x GRID canvas holding the colour map
  sample: [], // [{x, y, cls, split}]
  samplePred: null, // Int8Array of predicted classes for the sample
  probes: [], // [{n, x, y, p, cls, version}]
  probeSeq: 0,
  chunk: MAX_POINTS_PER_CALL, // shrinks if the service caps requests lower
  drawGen: 0,
  abort: null,
  statusTimer: 0,
  pollTimer: 0,
  history: null, // the drawn version's training history (timeline.js), or null
  frame: null, // index of the recorded frame drawn, or null: the served model's surface
  live: null, // the served model's {grid, surface, samplePred} while a frame is drawn
  playTimer: 0,
};

// Grid coordinates never change: build them once.
export const gridPoints = new Float64Array(GRID * GRID * 2);
for (let j = 0; j < GRID; j++) {
  for (let i = 0; i < GRID; i++) {
    const k = 2 * (j * GRID + i);
    gridPoints[k] = -DOMAIN + (2 * DOMAIN * i) / (GRID - 1);
    gridPoints[k + 1] = DOMAIN - (2 * DOMAIN * j) / (GRID - 1);
  }
}

export function clamp(v, lo, hi) {
  return Math.min(hi, Math.max(lo, v));
}
