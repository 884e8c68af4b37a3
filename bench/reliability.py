"""Reliability figures: overload (closed loop, and open loop at 2x/4x peak), soak, SIGTERM, a
killed worker, hot reload with corrupt versions, an unreadable model folder, and the batch
scorer on a full disk.

    python -m bench.reliability                      # full run (~10 min: 5 min soak)
    python -m bench.reliability --quick              # ~2 min, shorter load phases
    python -m bench.reliability --only overload,soak --json figures.json

Trains a small model with the training job first (or uses ``--model-dir``). Prints one table
of figures and one of targets; exits 1 when a target is missed. Run it on an otherwise idle
machine: the load generator shares the CPU with the server.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import _reliability as rel
from bench._resources import FD_SLACK

SCENARIOS = (
    "overload",
    "overload_open",
    "soak",
    "sigterm",
    "worker_kill",
    "hot_reload",
    "disk_full",
)

# Open-loop overload only: in the closed loop the refusal p99 is set by Little's law (clients
# outstanding / throughput), not by what a refusal costs. Timed from the write, not the due
# time: on 2 shared cores one Python generator cannot keep 2-4x peak on schedule, and its lag
# (printed) is the client's, not the service's; see docs/hardening.md.
OPEN_REFUSED_P99_MS = 50.0

# (scenario, what, predicate on its figures, target text)
Target = tuple[str, str, Callable[[dict[str, Any]], bool], str]
TARGETS: list[Target] = [
    ("overload", "no request failed or lost", lambda f: f["overload"]["failed"] == 0
     and f["overload"]["lost"] == 0, "0 failed, 0 lost"),
    ("overload", "accepted latency bounded", lambda f: f["overload"]["ok_p99_ms"] < 2000,
     "accepted p99 < 2 s"),
    ("overload", "memory flat", lambda f: f["rss_max_mb"] - f["rss_before_mb"] < 100,
     "RSS growth < 100 MB"),
    ("overload", "recovers at once", lambda f: f["recovery_first_ok_s"] is not None
     and f["recovery_first_ok_s"] < 1.0 and f["calm_after"]["failed"] == 0,
     "first 200 < 1 s after load"),
    ("overload_open", "no request failed or lost", lambda f: all(
        p["failed"] == 0 and p["lost"] == 0 for p in f["phases"]), "0 failed, 0 lost"),
    ("overload_open", "excess refused", lambda f: all(p["refused"] > 0 for p in f["phases"]),
     "429/503 at 2x and 4x"),
    ("overload_open", "refusals answered fast", lambda f: all(
        p["refused_from_write_p99_ms"] < OPEN_REFUSED_P99_MS for p in f["phases"]),
     f"refused p99 from the write < {OPEN_REFUSED_P99_MS:.0f} ms"),
    ("overload_open", "accepted latency bounded", lambda f: all(
        p["ok_from_write_p99_ms"] < 2000 for p in f["phases"]),
     "accepted p99 from the write < 2 s"),
    ("overload_open", "memory flat", lambda f: f["rss_max_mb"] - f["rss_before_mb"] < 100,
     "RSS growth < 100 MB"),
    ("overload_open", "recovers at once", lambda f: f["recovery_first_ok_s"] is not None
     and f["recovery_first_ok_s"] < 1.0 and f["calm_after"]["failed"] == 0,
     "first 200 < 1 s after load"),
    ("soak", "zero errors", lambda f: f["failed"] == 0 and f["lost"] == 0 and f["refused"] == 0,
     "0 refused/failed/lost"),
    ("soak", "no memory growth", lambda f: f["rss_slope_mb_per_min"] < 5.0,
     "RSS slope < 5 MB/min"),
    ("soak", "no fd growth", lambda f: f["fds_end"] - f["fds_start"] <= FD_SLACK,
     f"fds end-start <= {FD_SLACK}"),
    ("sigterm", "nothing accepted is lost", lambda f: f["lost"] == 0 and f["failed"] == 0,
     "0 lost, 0 failed"),
    ("sigterm", "exit 0 within drain timeout", lambda f: f["exit_code"] == 0
     and f["exit_seconds"] < f["drain_timeout_s"], "exit 0 < 20 s"),
    ("worker_kill", "supervisor restarts it", lambda f: f["restart_seconds"] is not None,
     "new worker"),
    ("worker_kill", "the other kept serving", lambda f: f["ok"] > 0 and f["failed"] == 0,
     "200s continue, 0 failed"),
    ("worker_kill", "metrics consistent", lambda f: f["metrics_monotonic"]
     and f["metrics_predict_200"] >= f["client_predict_200"] - f["lost"],
     "counters monotonic, >= client 200s"),
    ("hot_reload", "zero failed requests", lambda f: f["ok"] > 0 and f["failed"] == 0
     and f["lost"] == 0 and f["refused"] == 0, "0 refused/failed/lost"),
    ("hot_reload", "every step as expected", lambda f: all(s["ok"] for s in f["steps"]),
     "swap, 3 rejections, unreadable"),
    ("disk_full", "clean error, no partial file", lambda f: "skipped" in f
     or (f["exit_code"] == 1 and not f["files_left"] and not f["traceback"]
         and f["status_line"].get("status") == "error"),
     "exit 1, JSON error, no file"),
]  # fmt: skip


def run(names: list[str], model_dir: Path, work: Path, quick: bool) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for name in names:
        print(f"-- {name} ...", file=sys.stderr, flush=True)
        folder = work / name
        folder.mkdir()
        if name == "overload":
            figures[name] = rel.overload(model_dir, folder, seconds=5 if quick else 20)
        elif name == "overload_open":
            figures[name] = rel.overload_open(model_dir, folder, seconds=3 if quick else 10)
        elif name == "soak":
            figures[name] = rel.soak(model_dir, folder, seconds=20 if quick else 300)
        elif name == "sigterm":
            figures[name] = rel.sigterm_under_load(model_dir, folder)
        elif name == "worker_kill":
            figures[name] = rel.worker_killed(model_dir, folder)
        elif name == "hot_reload":
            figures[name] = rel.hot_reload(model_dir, folder)
        elif name == "disk_full":
            figures[name] = rel.scorer_disk_full(model_dir, folder)
    return figures


def _ms(value: Any) -> str:
    return (
        "-"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else (f"{value:.1f}")
    )


def print_tables(figures: dict[str, Any]) -> list[str]:
    """The figures and the targets; returns the missed targets."""
    print(
        "\n| phase | sent | ok | refused | failed | lost | ok/s | ok p50 ms | ok p99 ms "
        "| refused p50 ms | refused p99 ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    rows: list[tuple[str, dict[str, Any]]] = []
    if "overload" in figures:
        o = figures["overload"]
        rows += [
            ("overload: calm before", o["calm_before"]),
            (f"overload: {o['concurrency']} clients", o["overload"]),
            ("overload: calm after", o["calm_after"]),
        ]
    if "overload_open" in figures:
        o = figures["overload_open"]
        rows.append(("open loop: calm before", o["calm_before"]))
        rows += [
            (f"open loop: {p['factor']:g}x peak = {p['rate']:.0f}/s offered", p)
            for p in o["phases"]
        ]
        rows.append(("open loop: calm after", o["calm_after"]))
    for name in ("soak", "sigterm", "worker_kill", "hot_reload"):
        if name in figures:
            rows.append((name, figures[name]))
    for label, f in rows:
        print(
            f"| {label} | {f['sent']} | {f['ok']} | {f['refused']} | {f['failed']} | "
            f"{f['lost']} | {f['ok_per_s']:.0f} | {_ms(f['ok_p50_ms'])} | "
            f"{_ms(f['ok_p99_ms'])} | {_ms(f['refused_p50_ms'])} | {_ms(f['refused_p99_ms'])} |"
        )
    if "overload" in figures:
        o = figures["overload"]
        print(
            f"\noverload: RSS {o['rss_before_mb']:.0f} -> max {o['rss_max_mb']:.0f} MB; "
            f"first 200 after load {_ms((o['recovery_first_ok_s'] or math.nan) * 1e3)} ms"
        )
    if "overload_open" in figures:
        o = figures["overload_open"]
        lags = "; ".join(
            f"{p['factor']:g}x: sent {p['sent_per_s']:.0f}/s, "
            f"lag p99 {_ms(p['send_lag_p99_ms'])} ms, from the write: ok p99 "
            f"{_ms(p['ok_from_write_p99_ms'])} ms, refused p50/p99 "
            f"{_ms(p['refused_from_write_p50_ms'])}/{_ms(p['refused_from_write_p99_ms'])} ms"
            for p in o["phases"]
        )
        print(
            f"overload_open: peak {o['peak_rps']:.0f} req/s, {o['pool']} connections; generator "
            f"{lags}; RSS {o['rss_before_mb']:.0f} -> max {o['rss_max_mb']:.0f} MB; first 200 "
            f"after load {_ms((o['recovery_first_ok_s'] or math.nan) * 1e3)} ms"
        )
        for p in o["phases"]:
            if p["sent_per_s"] < 0.9 * p["rate"] or p["send_lag_p99_ms"] > 50:
                print(
                    f"overload_open: NOTE the generator, not the service, set the pace at "
                    f"{p['factor']:g}x (offered {p['rate']:.0f}/s, sent {p['sent_per_s']:.0f}/s, "
                    f"lag p99 {_ms(p['send_lag_p99_ms'])} ms): latencies from the due time "
                    "include that lag"
                )
    if "soak" in figures:
        s = figures["soak"]
        print(
            f"soak: {s['rate']:.0f} req/s (50% of peak {s['peak_rps']:.0f}) for {s['seconds']:.0f}"
            f" s; RSS {s['rss_start_mb']:.0f} -> {s['rss_end_mb']:.0f} MB, slope "
            f"{s['rss_slope_mb_per_min']:+.2f} MB/min; fds {s['fds_start']} -> {s['fds_end']}"
        )
    if "sigterm" in figures:
        t = figures["sigterm"]
        print(f"sigterm: exit {t['exit_code']} after {t['exit_seconds']:.2f} s")
    if "worker_kill" in figures:
        w = figures["worker_kill"]
        print(
            f"worker_kill: restarted after {_ms(w['restart_seconds'])} s; metrics 200s "
            f"{w['metrics_predict_200']:.0f} vs client {w['client_predict_200']}"
        )
    if "hot_reload" in figures:
        for step in figures["hot_reload"]["steps"]:
            print(
                f"hot_reload: {step['step']}: {'ok' if step['ok'] else 'FAILED'} ({step['detail']})"
            )
    if "disk_full" in figures:
        print(f"disk_full: {json.dumps(figures['disk_full'])}")

    missed = []
    print("\n| scenario | target | result |\n|---|---|---|")
    for scenario, what, check, text in TARGETS:
        if scenario not in figures:
            continue
        try:
            ok = check(figures[scenario])
        except (KeyError, TypeError):
            ok = False
        print(f"| {scenario} | {what} ({text}) | {'pass' if ok else 'MISSED'} |")
        if not ok:
            missed.append(f"{scenario}: {what}")
    return missed


def _train(work: Path) -> Path:
    from tests.support import publish_tiny_model

    root = work / "models" / "xor"
    publish_tiny_model(root, seed=0)
    publish_tiny_model(root, seed=1)
    return root


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model-dir", type=Path, help="versions 1 and 2 (default: train two)")
    p.add_argument("--quick", action="store_true", help="short load phases (~2 min in all)")
    p.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenarios")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(names) - set(SCENARIOS))
    if unknown:
        p.error(f"--only: unknown scenario(s) {unknown}; choose from {', '.join(SCENARIOS)}")
    with tempfile.TemporaryDirectory(prefix="xor-dnn-reliability-") as tmp:
        work = Path(tmp)
        model_dir = args.model_dir or _train(work)
        if not (model_dir / "1").is_dir() or not (model_dir / "2").is_dir():
            p.error(f"--model-dir {model_dir}: needs versions 1 and 2")
        figures = run(names, model_dir, work, args.quick)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str))
    missed = print_tables(figures)
    if missed:
        print(f"\nMISSED {len(missed)} target(s): {'; '.join(missed)}")
        return 1
    print("\nall targets met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
