"""Measure the API's memory and CPU, and check them against the Deployment's requests/limits.

Starts the real ``xor-dnn serve`` (on a model folder you give, or a tiny model it trains), waits
until ready, samples RSS and CPU from /proc while idle and then under a bounded burst of
concurrent ``POST /predict`` calls from loopback, prints a table and exits non-zero when the
prod overlay's sizing does not fit what was measured:

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
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
MI = 1024 * 1024


def quantity(text: str) -> float:
    """A Kubernetes quantity (cpu or memory) as a float: cores or bytes."""
    units = {"m": 1e-3, "Ki": 1024, "Mi": MI, "Gi": 1024 * MI}
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


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def burst(url: str, seconds: float, concurrency: int, points: int) -> tuple[int, int]:
    body = {"points": [{"x": (i % 10) - 4.5, "y": (i % 7) - 3.0} for i in range(points)]}
    ok = failed = 0
    stop = time.monotonic() + seconds
    async with httpx.AsyncClient(timeout=10) as client:

        async def worker() -> None:
            nonlocal ok, failed
            while time.monotonic() < stop:
                r = await client.post(url, json=body)
                ok, failed = (ok + 1, failed) if r.status_code == 200 else (ok, failed + 1)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ok, failed


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
            sys.path.insert(0, str(ROOT))
            from tests.support import publish_tiny_model

            model_dir = Path(tmp) / "xor"
            publish_tiny_model(model_dir, epochs=5)
        port = free_port()
        env = {**os.environ, "XOR_DNN_LOG_LEVEL": "warning", "TF_CPP_MIN_LOG_LEVEL": "2"}
        cmd = ["xor-dnn", "serve", "--model-dir", str(model_dir), "--port", str(port)]
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            base = f"http://127.0.0.1:{port}"
            while True:
                if proc.poll() is not None:
                    print(proc.stderr.read().decode() if proc.stderr else "", file=sys.stderr)
                    return 1
                try:
                    if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
            ready_s = time.monotonic() - t0
            startup_cpu = cpu_seconds(proc.pid)
            time.sleep(2)
            idle_rss = rss_bytes(proc.pid)
            cpu0, w0 = cpu_seconds(proc.pid), time.monotonic()
            peak = idle_rss

            async def sample() -> None:
                nonlocal peak
                while True:
                    peak = max(peak, rss_bytes(proc.pid))
                    await asyncio.sleep(0.2)

            async def run() -> tuple[int, int]:
                sampler = asyncio.create_task(sample())
                try:
                    return await burst(
                        f"{base}/predict", opts.seconds, opts.concurrency, opts.points
                    )
                finally:
                    sampler.cancel()

            ok, failed = asyncio.run(run())
            load_cores = (cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - w0)
            peak = max(peak, rss_bytes(proc.pid))
        finally:
            proc.terminate()
            proc.wait(timeout=60)

    res, hpa_target = prod_sizing()
    scale_at = hpa_target * res["requests"]["cpu"]
    rows = [
        ("start to ready", f"{ready_s:.1f} s", f"startup CPU {startup_cpu:.1f} core-s"),
        ("RSS idle (model loaded, warm)", f"{idle_rss / MI:.0f} MiB",
         f"request {res['requests']['memory'] / MI:.0f} MiB"),
        ("RSS peak under load", f"{peak / MI:.0f} MiB",
         f"limit {res['limits']['memory'] / MI:.0f} MiB (80 % = "
         f"{0.8 * res['limits']['memory'] / MI:.0f})"),
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
