"""Measure the API's memory and CPU, and check them against the Deployment's requests/limits.

Starts the real service (on a model folder you give, or a tiny model it trains), waits until
ready, samples RSS and CPU (psutil) while idle and then under a bounded closed-loop burst of
``POST /predict`` calls from loopback (``bench/_loadgen.py``: wrk when installed), prints a
table and exits non-zero when the prod overlay's sizing does not fit what was measured:

* peak RSS must stay under 80 % of the container memory limit (headroom for a second loaded
  version during a hot swap and for allocator growth), and idle RSS under the memory request;
* a saturated pod must use more CPU than the HPA's target (averageUtilization x CPU request),
  or the autoscaler could never scale out. On a shared machine the load generator competes
  with the server for cores: quote figures from an otherwise idle machine.

    python deploy/measure_resources.py [--model-dir models/xor] [--seconds 20] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess  # nosec B404
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: the bench helpers live in the checkout

from bench import _loadgen  # noqa: E402
from bench._process import start_server  # noqa: E402
from bench._resources import MIB, cpu_seconds, rss_mb, sample  # noqa: E402


def quantity(text: str) -> float:
    """A Kubernetes quantity (cpu or memory) as a float: cores or bytes."""
    units = {"m": 1e-3, "Ki": 1024, "Mi": MIB, "Gi": 1024 * MIB}
    m = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(text))
    if not m:
        raise ValueError(f"bad quantity {text!r}")
    return float(m.group(1)) * units.get(m.group(2), 1)


def prod_sizing() -> tuple[dict[str, dict[str, float]], float]:
    """The API container's requests/limits and the HPA's CPU target (a fraction)."""
    out = subprocess.run(
        ["kubectl", "kustomize", str(ROOT / "k8s" / "overlays" / "prod")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    docs = {d["kind"]: d for d in yaml.safe_load_all(out) if d}
    res = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]["resources"]
    sizes = {k: {r: quantity(v) for r, v in res[k].items()} for k in ("requests", "limits")}
    (metric,) = docs["HorizontalPodAutoscaler"]["spec"]["metrics"]
    return sizes, metric["resource"]["target"]["averageUtilization"] / 100


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, help="models/<name> folder (default: train one)")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--points", type=int, default=16, help="points per request")
    opts = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = opts.model_dir
        if model_dir is None:
            from tests.support import publish_tiny_model

            model_dir = Path(tmp) / "xor"
            publish_tiny_model(model_dir, epochs=5)
        t0 = time.monotonic()
        server = start_server(model_dir, Path(tmp) / "server.log", "--log-level", "warning")
        try:
            pid = server.proc.pid
            ready_s = time.monotonic() - t0
            startup_cpu = cpu_seconds(pid)
            time.sleep(2)  # a settling pause before the idle figure, not a synchronisation
            idle_rss = rss_mb(pid) * MIB
            cpu0, w0 = cpu_seconds(pid), time.monotonic()
            samples: list[tuple[float, float, int]] = []

            async def run() -> dict[str, Any]:
                sampler = asyncio.create_task(sample(pid, 0.2, samples))
                try:
                    return await asyncio.to_thread(
                        _loadgen.run, server.port, duration=opts.seconds,
                        concurrency=opts.concurrency, points=opts.points,
                        generator=_loadgen.pick_generator("auto"), timeout=10,
                    )  # fmt: skip
                finally:
                    sampler.cancel()

            result = asyncio.run(run())
            load_cores = (cpu_seconds(pid) - cpu0) / (time.monotonic() - w0)
            peak = max([idle_rss, rss_mb(pid) * MIB] + [rss * MIB for _, rss, _ in samples])
        finally:
            server.stop()
        ok, failed = result["ok"], _loadgen.error_count(result)

    res, hpa_target = prod_sizing()
    scale_at = hpa_target * res["requests"]["cpu"]
    rows = [
        ("start to ready", f"{ready_s:.1f} s", f"startup CPU {startup_cpu:.1f} core-s"),
        ("RSS idle (model loaded, warm)", f"{idle_rss / MIB:.0f} MiB",
         f"request {res['requests']['memory'] / MIB:.0f} MiB"),
        ("RSS peak under load", f"{peak / MIB:.0f} MiB",
         f"limit {res['limits']['memory'] / MIB:.0f} MiB (80 % = "
         f"{0.8 * res['limits']['memory'] / MIB:.0f})"),
        ("CPU under load (server process)", f"{load_cores:.2f} cores",
         f"request {res['requests']['cpu']:.2f}, HPA scales out above {scale_at:.2f}"),
        ("requests answered 200 / other", f"{ok} / {failed}",
         f"{ok / opts.seconds:.0f} req/s, {opts.concurrency} concurrent, {opts.points} pts each"),
    ]  # fmt: skip
    width = max(len(r[0]) for r in rows)
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>14}  {note}")
    problems = []
    if peak > 0.8 * res["limits"]["memory"]:
        problems.append("peak RSS above 80 % of the memory limit")
    if idle_rss > res["requests"]["memory"]:
        problems.append("idle RSS above the memory request")
    if load_cores <= scale_at:
        problems.append("a saturated pod stays under the HPA target: it would never scale out")
    if failed or not ok:
        problems.append("requests failed during the burst")
    for p in problems:
        print(f"FAIL: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
