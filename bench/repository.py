"""Model-repository benchmark: what a loaded model costs in memory, three models under mixed
load against one model alone at the same total rate, and a saturated model's effect on
another model's latency.

    python -m bench.repository                        # about three minutes; exit 1 on a miss
    python -m bench.repository --rate 300 --duration 5 --repeats 1

One ``xor-dnn serve --model-repository`` child process (explicit model control, admin token)
serves three copies ``a``, ``b``, ``c`` of one trained model; the load comes from this process,
open loop (each request timed from its due instant: bench/_loadgen.py), single-point
``POST /models/<name>/predict`` requests:

==========  ==================================================================================
memory      the server's RSS with 1, 2 and 3 models loaded (loaded through the repository API)
solo        each model alone at the total rate R
mixed       the three at R/3 each (total R)
quiet       ``a`` alone at R/3
saturated   ``a`` at R/3 while ``b`` is driven closed loop at ``--flood`` connections with a
            small queue (``--max-queue-points``), so ``b`` sheds load with 429s; the flood
            runs in a load-generator process of its own: wrk when installed (C: it leaves
            the measuring client a core on a 2-core machine), else ``bench._loadgen``
==========  ==================================================================================

Phases are interleaved over ``--repeats`` and the median p99 is reported. Targets (exit 1 on a
miss), the issue's: no model's p99 in *mixed* above 2x its *solo* p99; ``a``'s p99 in
*saturated* at most 1.2x its *quiet* p99.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench._cli import add_loadgen, load_parser
from bench._loadgen import open_loop, pick_generator, run_async, wrk_argv, wrk_summary
from bench._process import ServerProcess, start_server
from bench._resources import cpu_seconds, rss_mb
from bench.serve import child_env, prepare_model

MODELS = ("a", "b", "c")
TOKEN = "bench-repository-admin-token"
MIXED_MAX_RATIO = 2.0
SATURATED_MAX_RATIO = 1.2
FLOOD_NICENESS = 10
FLOOD_MARGIN_S = 1.0
"""The flood starts this long before the measured load and ends this long after it."""


def _path(name: str) -> str:
    return f"/models/{name}/predict"


async def _phase(
    server: ServerProcess,
    rates: dict[str, float],
    duration: float,
    flood: int,
    generator: str = "python",
) -> dict[str, Any]:
    """Open loop at ``rates`` per model, plus ``b`` closed loop at ``flood`` connections from
    ``generator`` (``wrk`` or ``python``).

    Each summary also gets the server's CPU time per answered request over the phase
    (``cpu_us``), which a busy machine disturbs far less than latency percentiles.
    """
    port = server.port
    jobs = [open_loop(port, rate, duration, path=_path(name)) for name, rate in rates.items()]
    flooding = None
    if flood:
        # The flood comes from a process of its own, started first and stopped last: in this
        # process its event loop would delay the measured model's requests and answers
        # itself (the client, not the server, would set their latency).
        # wrk (C) costs the machine far less CPU per request than the Python generator, so
        # on 2 cores the measuring client keeps most of a core to itself.
        flood_seconds = duration + 2 * FLOOD_MARGIN_S
        if generator == "wrk":
            argv = wrk_argv(port, flood_seconds, flood, path=_path("b"))
        else:
            argv = [
                sys.executable, "-m", "bench._loadgen", "--port", str(port), "--path",
                _path("b"), "--concurrency", str(flood), "--duration", str(flood_seconds),
            ]  # fmt: skip
        # The flood's generator yields the CPU to the measuring client: on 2 cores they share
        # one (the server has the other), and a client woken late adds its lateness to a's
        # latency. The flood still saturates b (the server, not the generator, is its limit).
        argv = ["nice", "-n", str(FLOOD_NICENESS), *argv]
        flooding = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=child_env()
        )
        await asyncio.sleep(FLOOD_MARGIN_S)
    cpu = cpu_seconds(server.proc.pid)
    results = await asyncio.gather(*jobs)
    cpu = cpu_seconds(server.proc.pid) - cpu
    out = {name: out.summary(seconds) for name, (out, seconds) in zip(rates, results, strict=True)}
    answered = sum(sum(o.statuses.values()) for o, _ in results)
    if flooding is not None:
        stdout, stderr = await flooding.communicate()
        code = flooding.returncode or 0
        if generator == "wrk":
            summary = wrk_summary(code, stdout.decode(), stderr.decode())
            # Not 200: b's 429s (its queue is full), as the Python generator counts them.
            summary["refused"] = summary["statuses"]["4xx/5xx"]
            summary["failed"] = sum(summary["errors"].values())
            summary["send_lag_p99_ms"] = float("nan")  # wrk sends when answered: no schedule
            flood_seconds = summary["seconds"]
        else:
            if code != 0:
                raise SystemExit(f"the flood's load generator failed ({code})")
            summary = json.loads(stdout.decode().strip().splitlines()[-1])
        out["b (flood)"] = summary
        # Its answers (200s and 429s) during the measured part, at its average rate.
        answered += round((summary["rps"] + summary["refused"] / flood_seconds) * duration)
    for summary in out.values():
        summary["cpu_us"] = cpu / max(1, answered) * 1e6
    return out


def main(argv: list[str] | None = None) -> int:
    p = load_parser(__doc__, duration=5.0, repeats=5, max_repeats=10)
    p.add_argument("--rate", type=float, default=300.0, help="total requests/s R (default 300)")
    p.add_argument("--flood", type=int, default=32, help="saturated: b's connections (32)")
    p.add_argument("--max-queue-points", type=int, default=16, help="each model's queue (16)")
    p.add_argument("--workdir", type=Path, help="keep the models and the log here")
    add_loadgen(p, "the flood's generator (the measured load is always bench/_loadgen.py's)")
    args = p.parse_args(argv)
    args.loadgen = pick_generator(args.loadgen)
    if not args.rate > 0:
        p.error(f"--rate must be > 0, got {args.rate}")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        return run(args, workdir)


def run(args: argparse.Namespace, workdir: Path) -> int:
    repo = workdir / "repository"
    if not (repo / "a").is_dir():
        prepare_model(repo / "a", workdir / "a.keras", args.epochs, workdir / "prepare.log")
        for name in MODELS[1:]:
            shutil.copytree(repo / "a", repo / name)
    server = start_server(
        repo,
        workdir / "server.log",
        "--model-control", "explicit", "--load-model", "a",
        "--max-queue-points", str(args.max_queue_points), "--poll-interval-s", "1",
        env={**child_env(), "XOR_DNN_ADMIN_TOKEN": TOKEN},
        source_flag="--model-repository",
    )  # fmt: skip
    try:
        memory = _memory(server.port, server.proc.pid)
        rounds = [_round(args, server) for _ in range(args.repeats)]
    finally:
        server.stop()
    return report(args, memory, rounds)


def _memory(port: int, pid: int) -> list[float]:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    sizes = [rss_mb(pid)]
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as http:
        for name in MODELS[1:]:
            r = http.post(f"/v2/repository/models/{name}/load", headers=auth)
            r.raise_for_status()
            time.sleep(1.0)  # let the allocator settle before reading
            sizes.append(rss_mb(pid))
        for name in MODELS:  # every model warm before the clock starts
            http.post(_path(name), json={"points": [{"x": 0.5, "y": -0.5}]}).raise_for_status()
    return sizes


def _round(args: argparse.Namespace, server: ServerProcess) -> dict[str, Any]:
    rate, d = args.rate, args.duration
    out: dict[str, Any] = {}
    for name in MODELS:
        out[f"solo {name}"] = run_async(_phase(server, {name: rate}, d, 0))[name]
    mixed = run_async(_phase(server, dict.fromkeys(MODELS, rate / 3), d, 0))
    out.update({f"mixed {name}": mixed[name] for name in MODELS})
    out["quiet a"] = run_async(_phase(server, {"a": rate / 3}, d, 0))["a"]
    saturated = run_async(_phase(server, {"a": rate / 3}, d, args.flood, args.loadgen))
    out["saturated a"], out["flood b"] = saturated["a"], saturated["b (flood)"]
    return out


def _median(rounds: list[dict[str, Any]], key: str, field: str) -> float:
    return float(statistics.median(float(r[key][field]) for r in rounds))


def report(args: argparse.Namespace, memory: list[float], rounds: list[dict[str, Any]]) -> int:
    print(f"\nRSS with 1, 2, 3 models loaded: {', '.join(f'{m:.0f} MiB' for m in memory)}")
    per_model = (memory[-1] - memory[0]) / (len(memory) - 1)
    print(f"one more loaded model: {per_model:.1f} MiB\n")
    print(f"median of {len(rounds)} rounds, {args.duration:g} s each, total rate {args.rate:g}/s\n")
    # send lag: how late the generator wrote its requests (a large one means the client,
    # not the server, set the pace: bench/_loadgen.py).
    print(
        "| phase | model | rate/s | ok/s | p50 ms | p99 ms | send lag p99 ms | refused | failed "
        "| server CPU µs/request |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    fields = ("rps", "p50_ms", "p99_ms", "send_lag_p99_ms", "refused", "failed", "cpu_us")
    for key in rounds[0]:
        phase, name = key.split(" ", 1)
        row = [_median(rounds, key, f) for f in fields]
        rate = {"solo": f"{args.rate:.0f}", "flood": "closed"}.get(phase, f"{args.rate / 3:.0f}")
        print(
            f"| {phase} | {name} | {rate} | {row[0]:.0f} | {row[1]:.2f} | {row[2]:.2f} "
            f"| {row[3]:.2f} | {row[4]:.0f} | {row[5]:.0f} | {row[6]:.0f} |"
        )
    misses = []
    for name in MODELS:
        ratio = _median(rounds, f"mixed {name}", "p99_ms") / _median(
            rounds, f"solo {name}", "p99_ms"
        )
        verdict = "met" if ratio <= MIXED_MAX_RATIO else "MISSED"
        target = f"(target <= {MIXED_MAX_RATIO:g})"
        print(f"\n{name}: mixed p99 / solo p99 = {ratio:.2f} {target} {verdict}")
        if ratio > MIXED_MAX_RATIO:
            misses.append(name)
    ratio = _median(rounds, "saturated a", "p99_ms") / _median(rounds, "quiet a", "p99_ms")
    verdict = "met" if ratio <= SATURATED_MAX_RATIO else "MISSED"
    print(
        f"a: p99 beside a saturated b / p99 alone = {ratio:.2f} "
        f"(target <= {SATURATED_MAX_RATIO:g}) {verdict}"
    )
    if ratio > SATURATED_MAX_RATIO:
        misses.append("saturated")
    failed = sum(_median(rounds, k, "failed") for k in rounds[0] if not k.startswith("flood"))
    if failed:
        misses.append("failed requests")
    return 1 if misses else 0


if __name__ == "__main__":
    sys.exit(main())
