/* The side panel and status line: model facts, sample mistakes, probe results. Text only
 * (textContent): metadata and answers are data, never markup. */

import { el, state } from "./state.js";

export function showStatus(message, isError = false) {
  clearTimeout(state.statusTimer);
  el.status.textContent = message;
  el.status.classList.toggle("error", isError);
  if (!isError && message) {
    state.statusTimer = setTimeout(() => showStatus(""), 6000);
  }
}

export function clearErrorStatus() {
  if (el.status.classList.contains("error")) showStatus("");
}

export function fmtNum(v, digits = 3) {
  return Number.isFinite(v) ? String(Number(v.toFixed(digits))) : "—";
}

function pct(v) {
  return `${(100 * v).toFixed(1)} %`;
}

export function architecture(cfg) {
  const hidden = Array.isArray(cfg.hidden_units) ? cfg.hidden_units : null;
  if (hidden === null) return "—";
  if (hidden.length === 0) return "2 → 1 (no hidden layer: one straight boundary)";
  const units = cfg.activation === "tanh" ? "tanh" : "ReLU"; // metadata before it: ReLU
  return `2 → ${hidden.join(" → ")} → 1 (${units} hidden layers, sigmoid output)`;
}

export function renderInfo(meta, version) {
  const cfg = meta && typeof meta.config === "object" && meta.config !== null ? meta.config : {};
  const rows = [["Name", meta.model_name || state.model]];
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
  if (Number.isFinite(cfg.learning_rate)) {
    const cosine = cfg.learning_rate_schedule === "cosine" ? ", cosine to 0" : "";
    training.push(`learning rate ${cfg.learning_rate}${cosine}`);
  }
  if (Number.isFinite(cfg.gce_q))
    training.push(
      cfg.gce_q > 0 ? `generalized cross-entropy, q ${cfg.gce_q}` : "binary cross-entropy",
    );
  if (Number.isFinite(cfg.swa_epochs) && cfg.swa_epochs > 0)
    training.push(`weights averaged over the last ${cfg.swa_epochs} epochs`);
  if (cfg.ensemble === true) training.push("served: the mean of every run");
  if (cfg.distill === true && !cfg.ensemble) {
    const teachers = Array.isArray(meta.published_runs) ? meta.published_runs.length : 0;
    training.push(
      teachers > 0
        ? `served: one network distilled from ${teachers} runs`
        : "served: one network distilled from the runs",
    );
  }
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

export function renderMistakes() {
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

export function probeLine(pr, target) {
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

export function renderProbes() {
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
