/* xor-dnn playground: draws the served model's decision surface through the service's own
 * batch API (POST predict, pinned with ?version=N) and lets the user probe it.
 *
 * Plain browser JavaScript, no build step, no external requests. Every URL is relative to the
 * page, so the page works unchanged behind an ingress path prefix (the service's root_path).
 *
 * The canvas carries its state for people and tests alike: data-state (loading | ready |
 * error), data-version (the version drawn), data-points and data-calls (grid points and the
 * predict calls that computed them), data-ms (how long those calls took). #probe-result
 * carries the last probe: data-x, data-y, data-probability, data-class-id, data-version,
 * data-ms.
 */
"use strict";

(() => {
  const DOMAIN = 5; // the plot covers [-DOMAIN, DOMAIN]², the lesson's data range
  const GRID = 96; // samples per side: 9,216 points, 9 predict calls of 1,024
  const MAX_POINTS_PER_CALL = 1024; // the service's default max_points_per_request
  const CONCURRENCY = 3; // parallel calls per batch of points: enough to let the service batch
  const MAX_RETRIES = 5;
  const MAX_PROBES = 20;
  // The lesson's convention, as in the training pictures: class 0 blue, class 1 orange
  // (#1f77b4, #ff7f0e, also --class0/--class1 in style.css). The surface uses paler tints of
  // the same hues (--surface0/--surface1) so points stay visible.
  const COLOURS = { 0: [31, 119, 180], 1: [255, 127, 14] };
  const SURFACE = { 0: [110, 172, 214], 1: [248, 190, 122], mid: [240, 241, 242] };
  const INK = "#1f2328";
  const MISTAKE = "#d62728";

  const params = new URLSearchParams(window.location.search);
  const MODEL = params.get("model") || "xor";
  // ?poll_ms= lets tests and demos watch a hot-load without waiting the default 3 s.
  const POLL_MS = clamp(Number(params.get("poll_ms")) || 3000, 250, 60000);

  const $ = (id) => document.getElementById(id);
  const el = {
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
  };

  const state = {
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
  };

  // Grid coordinates never change: build them once.
  const gridPoints = new Float64Array(GRID * GRID * 2);
  for (let j = 0; j < GRID; j++) {
    for (let i = 0; i < GRID; i++) {
      const k = 2 * (j * GRID + i);
      gridPoints[k] = -DOMAIN + (2 * DOMAIN * i) / (GRID - 1);
      gridPoints[k + 1] = DOMAIN - (2 * DOMAIN * j) / (GRID - 1);
    }
  }

  function clamp(v, lo, hi) {
    return Math.min(hi, Math.max(lo, v));
  }

  // ---------------------------------------------------------------- HTTP

  class ApiError extends Error {
    constructor(status, message, retryAfter) {
      super(message);
      this.name = "ApiError";
      this.status = status;
      this.retryAfter = retryAfter;
    }
  }

  function errorText(res, data, text) {
    const e = data && data.error;
    let msg = "";
    if (typeof e === "string") msg = e;
    else if (e && typeof e.message === "string") {
      msg = e.field && !e.message.includes(e.field) ? `${e.field}: ${e.message}` : e.message;
    } else if (data && data.detail !== undefined) {
      msg = typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail);
    }
    return `HTTP ${res.status}: ${msg || text.slice(0, 200) || res.statusText}`;
  }

  async function api(path, { body, signal } = {}) {
    const init = {
      method: "GET",
      signal,
      cache: "no-store",
      headers: { Accept: "application/json" },
    };
    if (body !== undefined) {
      init.method = "POST";
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch (err) {
      if (err.name === "AbortError") throw err;
      throw new ApiError(0, "the service is unreachable");
    }
    const text = await res.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
    }
    if (!res.ok) {
      const retry = Number(res.headers.get("Retry-After"));
      throw new ApiError(
        res.status,
        errorText(res, data, text),
        Number.isFinite(retry) ? retry : null,
      );
    }
    if (data === null) throw new ApiError(res.status, `${path}: the answer is not JSON`);
    return data;
  }

  function sleep(ms, signal) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(resolve, ms);
      if (signal) {
        signal.addEventListener(
          "abort",
          () => {
            clearTimeout(timer);
            reject(new DOMException("aborted", "AbortError"));
          },
          { once: true },
        );
      }
    });
  }

  /** P(class 1) and class ids for n points (flat [x0, y0, x1, y1, ...]) on one version.
   *
   * Split into calls of at most state.chunk points, CONCURRENCY in flight so the service's
   * micro-batcher sees concurrent work. A 413 teaches us the service's per-request limit; a
   * 429 or 503 is retried after the Retry-After the service sent.
   */
  async function predictPoints(flat, version, signal, stats) {
    const n = flat.length / 2;
    const probs = new Float64Array(n);
    const classes = new Int8Array(n);
    let next = 0;
    const worker = async () => {
      while (next < n) {
        const start = next;
        const end = Math.min(n, start + state.chunk);
        next = end;
        await predictRange(flat, start, end, version, signal, stats, probs, classes);
      }
    };
    const workers = Math.max(1, Math.min(CONCURRENCY, Math.ceil(n / state.chunk)));
    await Promise.all(Array.from({ length: workers }, worker));
    return { probs, classes };
  }

  async function predictRange(flat, start, end, version, signal, stats, probs, classes) {
    const points = [];
    for (let i = start; i < end; i++) points.push({ x: flat[2 * i], y: flat[2 * i + 1] });
    for (let attempt = 0; ; attempt++) {
      try {
        const data = await api(`predict?version=${version}`, { body: { points }, signal });
        stats.calls += 1;
        const preds = data.predictions;
        if (!Array.isArray(preds) || preds.length !== end - start) {
          throw new ApiError(
            200,
            `predict answered ${preds && preds.length} predictions for ${end - start} points`,
          );
        }
        if (data.model_version !== undefined && Number(data.model_version) !== version) {
          throw new ApiError(
            200,
            `asked version ${version}, predict answered version ${data.model_version}`,
          );
        }
        for (let k = 0; k < preds.length; k++) {
          const p = Number(preds[k].probability);
          probs[start + k] = p;
          classes[start + k] =
            preds[k].class_id === undefined ? (p >= 0.5 ? 1 : 0) : preds[k].class_id;
        }
        return;
      } catch (err) {
        if (err instanceof ApiError && err.status === 413 && end - start > 1) {
          const half = Math.ceil((end - start) / 2);
          state.chunk = Math.min(state.chunk, half);
          await predictRange(flat, start, start + half, version, signal, stats, probs, classes);
          await predictRange(flat, start + half, end, version, signal, stats, probs, classes);
          return;
        }
        if (
          err instanceof ApiError &&
          (err.status === 429 || err.status === 503) &&
          attempt < MAX_RETRIES
        ) {
          const wait = err.retryAfter ? err.retryAfter * 1000 : 250 * 2 ** attempt;
          await sleep(clamp(wait, 50, 5000), signal);
          continue;
        }
        throw err;
      }
    }
  }

  // ---------------------------------------------------------------- status line

  function showStatus(message, isError = false) {
    clearTimeout(state.statusTimer);
    el.status.textContent = message;
    el.status.classList.toggle("error", isError);
    if (!isError && message) {
      state.statusTimer = setTimeout(() => showStatus(""), 6000);
    }
  }

  function clearErrorStatus() {
    if (el.status.classList.contains("error")) showStatus("");
  }

  // ---------------------------------------------------------------- versions

  async function refreshVersions() {
    try {
      if (document.hidden && state.version !== null) return;
      const info = await api(`models/${encodeURIComponent(MODEL)}`);
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

  // ---------------------------------------------------------------- drawing a version

  async function showVersion(version) {
    const gen = ++state.drawGen;
    if (state.abort) state.abort.abort();
    const abort = new AbortController();
    state.abort = abort;
    state.version = version;
    if (state.versions.includes(version)) el.select.value = String(version);
    el.canvas.dataset.state = "loading";
    try {
      const meta = await api(`models/${encodeURIComponent(MODEL)}/versions/${version}`, {
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
        predictPoints(gridPoints, version, abort.signal, stats),
        sample.length ? predictPoints(sampleFlat, version, abort.signal, { calls: 0 }) : none,
        state.probes.length ? predictPoints(probeFlat, version, abort.signal, { calls: 0 }) : none,
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

  function colour(p) {
    const q = clamp(Number.isFinite(p) ? p : 0.5, 0, 1);
    const [from, to, t] =
      q < 0.5 ? [SURFACE[0], SURFACE.mid, q / 0.5] : [SURFACE.mid, SURFACE[1], (q - 0.5) / 0.5];
    return [0, 1, 2].map((c) => Math.round(from[c] + (to[c] - from[c]) * t));
  }

  function surfaceImage(probs) {
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

  function draw() {
    const ctx = el.canvas.getContext("2d");
    const { width: w, height: h } = el.canvas;
    ctx.clearRect(0, 0, w, h);
    if (!state.surface) return;
    // Grid samples sit on the plot's edges, so the source rectangle runs between the first and
    // last pixel centres; bilinear smoothing then interpolates exactly between samples.
    ctx.imageSmoothingEnabled = true;
    ctx.imageSmoothingQuality = "high";
    ctx.drawImage(state.surface, 0.5, 0.5, GRID - 1, GRID - 1, 0, 0, w, h);
    drawAxes(ctx, w, h);
    drawContour(ctx, w, h);
    drawSample(ctx);
    drawProbes(ctx);
  }

  function drawAxes(ctx, w, h) {
    const s = scale();
    ctx.save();
    ctx.strokeStyle = "rgba(31, 35, 40, 0.12)";
    ctx.lineWidth = s;
    for (let v = -DOMAIN + 1; v < DOMAIN; v++) {
      const [cx, cy] = toCanvas(v, v);
      ctx.beginPath();
      ctx.moveTo(cx, 0);
      ctx.lineTo(cx, h);
      ctx.moveTo(0, cy);
      ctx.lineTo(w, cy);
      ctx.stroke();
    }
    ctx.strokeStyle = "rgba(31, 35, 40, 0.35)";
    const [ox, oy] = toCanvas(0, 0);
    ctx.beginPath();
    ctx.moveTo(ox, 0);
    ctx.lineTo(ox, h);
    ctx.moveTo(0, oy);
    ctx.lineTo(w, oy);
    ctx.stroke();
    ctx.restore();
  }

  /** The P = 0.5 contour by marching squares over the grid, crossings linearly interpolated. */
  function drawContour(ctx, w, h) {
    const g = state.grid;
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
    const s = scale();
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

  // ---------------------------------------------------------------- side panel

  function fmtNum(v, digits = 3) {
    return Number.isFinite(v) ? String(Number(v.toFixed(digits))) : "—";
  }

  function pct(v) {
    return `${(100 * v).toFixed(1)} %`;
  }

  function architecture(cfg) {
    const hidden = Array.isArray(cfg.hidden_units) ? cfg.hidden_units : null;
    if (hidden === null) return "—";
    if (hidden.length === 0) return "2 → 1 (no hidden layer: one straight boundary)";
    return `2 → ${hidden.join(" → ")} → 1 (ReLU hidden layers, sigmoid output)`;
  }

  function renderInfo(meta, version) {
    const cfg = meta && typeof meta.config === "object" && meta.config !== null ? meta.config : {};
    const rows = [["Name", meta.model_name || MODEL]];
    let created = "";
    if (typeof meta.created_at === "string") {
      const d = new Date(meta.created_at);
      created = Number.isNaN(d.getTime())
        ? meta.created_at
        : d.toISOString().replace("T", " ").slice(0, 16) + " UTC";
    }
    rows.push(["Version", created ? `${version} · trained ${created}` : String(version)]);
    rows.push(["Architecture", architecture(cfg)]);
    let dropout = "—";
    if (Array.isArray(cfg.hidden_units) && cfg.hidden_units.length === 0)
      dropout = "none (no hidden layer)";
    else if (Number.isFinite(cfg.dropout))
      dropout = cfg.dropout > 0 ? `${cfg.dropout} after each hidden layer` : "none";
    rows.push(["Dropout", dropout]);
    // test_accuracy is the served run's; the mean/std/min describe every seeded run trained.
    const runs = Array.isArray(meta.test_accuracy_runs) ? meta.test_accuracy_runs.length : 0;
    const mean = Number.isFinite(meta.test_accuracy_mean) ? meta.test_accuracy_mean : null;
    let acc = "—";
    if (Number.isFinite(meta.test_accuracy)) acc = pct(meta.test_accuracy);
    else if (mean !== null) acc = pct(mean);
    if (mean !== null && runs > 1) {
      let spread = `mean ${pct(mean)}`;
      if (Number.isFinite(meta.test_accuracy_std))
        spread += ` ± ${(100 * meta.test_accuracy_std).toFixed(1)}`;
      if (Number.isFinite(meta.test_accuracy_min)) spread += `, min ${pct(meta.test_accuracy_min)}`;
      acc += ` (chosen of ${runs} seeded runs; all runs: ${spread})`;
    }
    rows.push(["Test accuracy", acc]);
    const training = [];
    if (Number.isFinite(cfg.epochs)) training.push(`${cfg.epochs} epochs`);
    if (Number.isFinite(cfg.batch_size)) training.push(`batch ${cfg.batch_size}`);
    if (Number.isFinite(cfg.learning_rate)) training.push(`learning rate ${cfg.learning_rate}`);
    rows.push(["Training", training.length ? training.join(", ") : "—"]);
    const data = meta.data && typeof meta.data === "object" ? meta.data : {};
    let rowsText = "—";
    if (Number.isFinite(data.rows)) {
      rowsText = `${data.rows.toLocaleString("en")} rows`;
      if (data.generated && typeof data.generated === "object") {
        const noise = Number.isFinite(data.generated.noise)
          ? `, noise ${data.generated.noise}`
          : "";
        rowsText += ` (generated${noise})`;
      } else if (typeof data.path === "string" && data.path) {
        rowsText += ` from ${data.path.split(/[\\/]/).pop()}`;
      }
    }
    rows.push(["Data", rowsText]);
    // textContent only: metadata is data, never markup.
    el.info.replaceChildren(
      ...rows.flatMap(([k, v]) => {
        const dt = document.createElement("dt");
        dt.textContent = k;
        const dd = document.createElement("dd");
        dd.textContent = v;
        dd.dataset.field = k.toLowerCase().replace(/\s+/g, "-");
        return [dt, dd];
      }),
    );
  }

  function renderMistakes() {
    if (state.samplePred === null || state.sample.length === 0) {
      el.mistakes.textContent = state.sample.length
        ? ""
        : "This version's metadata has no sample points.";
      return;
    }
    const tally = { train: [0, 0], test: [0, 0] };
    state.sample.forEach((pt, i) => {
      tally[pt.split][1] += 1;
      if (state.samplePred[i] !== pt.cls) tally[pt.split][0] += 1;
    });
    const wrong = tally.train[0] + tally.test[0];
    const parts = ["train", "test"]
      .filter((k) => tally[k][1])
      .map((k) => `${k} ${tally[k][0]}/${tally[k][1]}`)
      .join(", ");
    const total = state.sample.length;
    el.mistakes.textContent = `The model gets ${wrong} of ${total} sample points wrong (${parts}).`;
    el.mistakes.dataset.wrong = String(wrong);
  }

  function badge(cls) {
    const span = document.createElement("span");
    span.className = `badge c${cls}`;
    span.textContent = `class ${cls}`;
    return span;
  }

  function probeLine(pr, target) {
    const label = target === el.probeResult ? "P(class 1)" : "P";
    target.dataset.x = String(pr.x);
    target.dataset.y = String(pr.y);
    target.dataset.probability = String(pr.p);
    target.dataset.classId = String(pr.cls);
    target.dataset.version = String(pr.version);
    target.replaceChildren(
      `#${pr.n} (${fmtNum(pr.x)}, ${fmtNum(pr.y)}) → ${label} = `,
      Object.assign(document.createElement("strong"), {
        className: "probability",
        textContent: pr.p.toFixed(4),
      }),
      " ",
      badge(pr.cls),
    );
  }

  function renderProbes() {
    const list = state.probes.filter((p) => p.p !== null);
    el.probes.replaceChildren(
      ...list
        .slice()
        .reverse()
        .map((pr) => {
          const li = document.createElement("li");
          li.value = pr.n;
          probeLine(pr, li);
          return li;
        }),
    );
    el.clearProbes.hidden = list.length === 0;
  }

  async function probeAt(rawX, rawY) {
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
      const data = await api(`predict?version=${version}`, { body: { points: [{ x, y }] } });
      if (version !== state.version) return probeAt(x, y); // the version changed meanwhile
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

  function eventPoint(ev) {
    // The content box, not the border box: the plot starts inside the canvas border.
    const r = el.canvas.getBoundingClientRect();
    const left = r.left + el.canvas.clientLeft;
    const top = r.top + el.canvas.clientTop;
    const fx = clamp((ev.clientX - left) / el.canvas.clientWidth, 0, 1);
    const fy = clamp((ev.clientY - top) / el.canvas.clientHeight, 0, 1);
    return [-DOMAIN + 2 * DOMAIN * fx, DOMAIN - 2 * DOMAIN * fy];
  }

  /** P(class 1) at (x, y) interpolated from the drawn grid: for the hover read-out only. */
  function gridValue(x, y) {
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

  // ---------------------------------------------------------------- wiring

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

  if (typeof ResizeObserver === "function") new ResizeObserver(fitCanvas).observe(el.canvas);
  fitCanvas();
  refreshVersions();
})();
