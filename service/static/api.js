/* The service's HTTP API as the page uses it: JSON calls with one error type, and predictions
 * for many points split into concurrent, retried predict calls. */

import { CONCURRENCY, MAX_RETRIES, clamp, state } from "./state.js";

export class ApiError extends Error {
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

export async function api(path, { body, signal, cache = "no-store" } = {}) {
  const init = {
    method: "GET",
    signal,
    cache,
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

export function sleep(ms, signal) {
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

/** The predict path of `model` at `version` (null: its default): models/{name}/predict when
 * the server lists its models, else the single-model server's predict. */
export function predictPath(model, version) {
  const base = state.multi ? `models/${encodeURIComponent(model)}/predict` : "predict";
  return version === null || version === undefined ? base : `${base}?version=${version}`;
}

/** P(class 1) and class ids for n points (flat [x0, y0, x1, y1, ...]) on one version.
 *
 * Split into calls of at most state.chunk points, CONCURRENCY in flight so the service's
 * micro-batcher sees concurrent work. A 413 teaches us the service's per-request limit; a
 * 429 or 503 is retried after the Retry-After the service sent.
 */
export async function predictPoints(flat, version, signal, stats, model = state.model) {
  const n = flat.length / 2;
  const probs = new Float64Array(n);
  const classes = new Int8Array(n);
  let next = 0;
  const worker = async () => {
    while (next < n) {
      const start = next;
      const end = Math.min(n, start + state.chunk);
      next = end;
      await predictRange(flat, start, end, model, version, signal, stats, probs, classes);
    }
  };
  const workers = Math.max(1, Math.min(CONCURRENCY, Math.ceil(n / state.chunk)));
  await Promise.all(Array.from({ length: workers }, worker));
  return { probs, classes };
}

async function predictRange(flat, start, end, model, version, signal, stats, probs, classes) {
  const points = [];
  for (let i = start; i < end; i++) points.push({ x: flat[2 * i], y: flat[2 * i + 1] });
  for (let attempt = 0; ; attempt++) {
    try {
      const data = await api(predictPath(model, version), { body: { points }, signal });
      stats.calls += 1;
      const preds = data.predictions;
      if (!Array.isArray(preds) || preds.length !== end - start) {
        throw new ApiError(
          200,
          `predict answered ${preds && preds.length} predictions for ${end - start} points`,
        );
      }
      const pinned = version !== null && version !== undefined;
      if (pinned && data.model_version !== undefined && Number(data.model_version) !== version) {
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
        const args = [model, version, signal, stats, probs, classes];
        await predictRange(flat, start, start + half, ...args);
        await predictRange(flat, start + half, end, ...args);
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
