"""Service benchmark: the prediction routes against the bare-ASGI and FastAPI floors, the
unbatched and the naive baselines.

    python -m bench.serve                      # the full run, a few minutes; exit 1 on a miss
    python -m bench.serve --duration 2 --repeats 1 --concurrency 1,32   # a quick look
    python -m bench.serve --targets service,bare,floor --protocols predict,v1,v2

What runs, each in its own process on 127.0.0.1 (one uvicorn worker each):

==========  ===========================================================================
service     ``xor-dnn serve`` on a model trained for the run (the real thing, batching on)
bare        one bare ASGI callable: body, ``model_validate_json``, orjson of the same
            response shape; no framework, no model (the transport's limit)
floor       the same in FastAPI: pydantic request/response models and JSON path, no model
core        the floor + service.batcher.Batcher + a signature call: batching without the
            service's middleware, metrics and registry (shows where a gap comes from)
unbatched   the floor + one SavedModel signature call per request, in the thread pool
naive       the tutorial: ``keras.models.load_model`` + ``model.predict`` per request
==========  ===========================================================================

``--protocols`` picks the routes driven: ``predict`` (``POST /predict``, every target),
``v1`` (``/v1/models/xor:predict``, row form) and ``v2`` (``/v2/models/xor/infer``, JSON);
``bare`` and ``floor`` answer all three with their own shapes, the other baselines only
``predict``. The load generator, its own process, sends single-point requests over
keep-alive connections, closed loop at each concurrency: ``wrk`` (``bench/wrk/predict.lua``)
when it is installed (Debian: ``apt-get install wrk``), else ``bench/_loadgen.py``
(``--loadgen`` picks). wrk costs the machine half the CPU per request, which on 2 cores the
servers need; open-loop runs always use ``bench/_loadgen.py`` (wrk has no fixed rate). Targets and
servers are interleaved (each repeat visits every target, in a rotated order) and the median
of the repeats is reported, so a burst of load from elsewhere on this shared machine lands
on all targets alike; each run starts once every server is idle (an overloaded baseline's
backlog would otherwise eat into the next target's run). Then ``/predict`` is driven open
loop at half of its peak throughput and its p99 latency is checked.

Targets (exit status 1 if one is missed), for each protocol driven:

* the service >= 50% of the bare floor's throughput at concurrency 32;
* the service >= 90% of the FastAPI floor's throughput at concurrency 32;
* ``/predict`` >= 30x the naive baseline's throughput at concurrency 32;
* ``/predict`` p99 <= 5 ms at half of its peak throughput (open loop); with ``bare`` in the
  run, the bare app is driven at the same rate, alternated, and when its own p99 is over
  5 ms (the machine's tail, not the service's) the service's must be within the bare app's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import _loadgen
from bench._apps import PROTOCOL_PATHS
from bench._cli import add_loadgen
from bench._loadgen import GENERATORS, error_count, pick_generator
from bench._metrics import metric
from bench._process import ServerProcess as Server
from bench._process import free_port, start_process, wait_until_ready
from bench._resources import cpu_seconds, runnable_threads

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TARGETS = ("service", "bare", "floor", "core", "unbatched", "naive")
# Targets that answer every protocol's route; the others answer /predict only.
ALL_PROTOCOLS = ("service", "baseline", "bare", "floor")

BARE_RATIO_MIN = 0.50
FLOOR_RATIO_MIN = 0.90
NAIVE_RATIO_MIN = 30.0
P99_MAX_MS = 5.0
TARGET_CONCURRENCY = 32


@dataclass
class Cell:
    """Repeated runs of one target at one concurrency (or rate)."""

    runs: list[dict[str, Any]] = field(default_factory=list)

    def median(self, key: str) -> float:
        values = [r[key] for r in self.runs if r.get(key) == r.get(key)]  # drop NaN
        return statistics.median(values) if values else float("nan")

    @property
    def errors(self) -> int:
        return sum(error_count(r) for r in self.runs)


SETTLE_CPU_SHARE = 0.03
SETTLE_TIMEOUT_S = 60.0


def settle(servers: list[Server], *, window: float = 0.2) -> float:
    """Wait until no server burns CPU (a backlog from the previous run); return the wait.

    A server overloaded in one run keeps working after its load generator stops: the naive
    baseline at c=128 still has some 128 queued ``model.predict`` calls (~6 s of CPU), which
    would land on whichever target is measured next. Each run therefore starts once every
    server used under ``SETTLE_CPU_SHARE`` of a core over ``window`` seconds and has no thread
    waiting for a CPU (on a loaded machine a busy server can get almost no CPU in a window; at
    most ``SETTLE_TIMEOUT_S``).
    """
    started = time.monotonic()
    before = [cpu_seconds(s.proc.pid) for s in servers]
    while time.monotonic() - started < SETTLE_TIMEOUT_S:
        time.sleep(window)
        after = [cpu_seconds(s.proc.pid) for s in servers]
        busy = [b - a for a, b in zip(before, after, strict=True) if a == a and b == b]
        if all(d < SETTLE_CPU_SHARE * window for d in busy) and not any(
            runnable_threads(s.proc.pid) for s in servers
        ):
            break
        before = after
    return time.monotonic() - started


def child_env(root: Path = ROOT) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    return env


def start(
    name: str, argv: list[str], port: int, workdir: Path, ready_path: str, root: Path = ROOT
) -> Server:
    log = workdir / f"{name}.log"
    return start_process(
        argv, log, port, ready_path=ready_path, name=name, env=child_env(root), wait=False, cwd=root
    )


def wait_ready(server: Server, timeout: float) -> None:
    try:
        wait_until_ready(server, timeout)
    except RuntimeError as exc:
        raise SystemExit(f"{exc} (log: {server.log_path})") from None


@contextlib.contextmanager
def running(servers: list[Server]) -> Iterator[list[Server]]:
    try:
        yield servers
    finally:
        for s in servers:
            s.stop(timeout=30)


def post_predict(server: Server, x: float, y: float) -> dict[str, Any]:
    body = json.dumps({"points": [{"x": x, "y": y}]}).encode()
    req = urllib.request.Request(
        server.url + "/predict", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        payload: dict[str, Any] = json.loads(r.read())
        return payload


def sanity_check(servers: dict[str, Server]) -> None:
    """Every target answers the same shape; the service agrees with a direct signature call."""
    points = [(0.5, 0.5), (-0.5, 0.5), (1.5, -2.0), (-3.0, -1.0)]
    for x, y in points:
        answers = {name: post_predict(s, x, y) for name, s in servers.items()}
        for name, a in answers.items():
            preds = a.get("predictions")
            if not isinstance(preds, list) or len(preds) != 1:
                raise SystemExit(f"{name}: unexpected answer {a}")
        if "service" in answers and "unbatched" in answers:
            got = answers["service"]["predictions"][0]["probability"]
            want = answers["unbatched"]["predictions"][0]["probability"]
            if abs(got - want) > 1e-6:
                raise SystemExit(f"service says {got} for ({x}, {y}), the model says {want}")


def load(port: int, *, protocol: str = "predict", **kwargs: Any) -> dict[str, Any]:
    return _loadgen.run(
        port, env=child_env(), path=PROTOCOL_PATHS[protocol], protocol=protocol, **kwargs
    )


def batch_counters(server: Server) -> tuple[float, float] | None:
    """(model calls, requests batched) so far, from the service's /metrics."""
    if server.name != "service":
        return None
    try:
        with urllib.request.urlopen(server.url + "/metrics", timeout=5) as r:
            text = r.read().decode()
    except (urllib.error.URLError, OSError):
        return None
    calls = metric(text, "xor_dnn_batch_requests_count")
    if not calls:
        return None
    return calls, metric(text, "xor_dnn_batch_requests_sum")


def measure(server: Server, **kwargs: Any) -> dict[str, Any]:
    """One load run, plus the server's CPU per request and (service) requests per model call."""
    before_cpu, before_batches = cpu_seconds(server.proc.pid), batch_counters(server)
    result = load(server.port, **kwargs)
    ok = max(result["ok"], 1)
    result["cpu_ms"] = (cpu_seconds(server.proc.pid) - before_cpu) / ok * 1e3
    after_batches = batch_counters(server)
    result["per_call"] = float("nan")
    if before_batches and after_batches and after_batches[0] > before_batches[0]:
        calls = after_batches[0] - before_batches[0]
        result["per_call"] = (after_batches[1] - before_batches[1]) / calls
    return result


def _ratio(a: float, b: float) -> str:
    """``a / b`` as ``1.23x``; ``-`` when ``b`` answered nothing in the run (naive at c=128
    completes no request within a few seconds under wrk, which counts only finished ones)."""
    return f"{a / b:.2f}x" if b > 0 and a == a and b == b else "-"


def fmt(v: float, digits: int = 1) -> str:
    return "-" if v != v else f"{v:,.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--duration", type=float, default=3.0, help="seconds per load run (3)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats per cell (3)")
    p.add_argument("--concurrency", default="1,8,32,128", help="closed-loop levels (1,8,32,128)")
    p.add_argument("--targets", default=",".join(TARGETS), help="subset of " + ",".join(TARGETS))
    p.add_argument(
        "--protocols",
        default="predict",
        help="routes driven: predict, v1, v2 (comma-separated; v1 and v2 need wrk)",
    )
    p.add_argument("--epochs", type=int, default=20, help="epochs of the benchmark model (20)")
    p.add_argument(
        "--service-arg",
        action="append",
        default=[],
        help="extra flag for xor-dnn serve, e.g. --service-arg=--max-batch-wait-ms=1",
    )
    add_loadgen(p, "the closed-loop generator (open loop is always the Python one)")
    p.add_argument(
        "--baseline-root",
        type=Path,
        help="also run `xor-dnn serve` from this checkout (e.g. `git worktree add /tmp/b main`)"
        " as the target 'baseline', interleaved with the others: before/after in one run",
    )
    p.add_argument(
        "--profile",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="after the runs, sample the service (and the baseline) with py-spy for this long "
        "under c=32 load and print where each request's CPU goes",
    )
    p.add_argument("--json", type=Path, help="also write every run's figures to this file")
    p.add_argument("--workdir", type=Path, help="keep models and logs here (default: a temp dir)")
    args = p.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",") if c]
    targets = [t for t in args.targets.split(",") if t]
    if args.baseline_root is not None and "baseline" not in targets:
        # Right after the service, whether or not --targets names it (once, either way).
        at = targets.index("service") + 1 if "service" in targets else 0
        targets.insert(at, "baseline")
    unknown = set(targets) - set(TARGETS) - ({"baseline"} if args.baseline_root else set())
    if unknown or not targets:
        p.error(f"--targets: unknown {sorted(unknown)}; choose from {', '.join(TARGETS)}")
    args.protocol_list = [x for x in args.protocols.split(",") if x]
    if not args.protocol_list or set(args.protocol_list) - set(PROTOCOL_PATHS):
        p.error(f"--protocols: choose from {', '.join(PROTOCOL_PATHS)}")
    if not (0 < args.duration <= 60 and 1 <= args.repeats <= 20 and levels):
        p.error("--duration must be in (0, 60], --repeats in [1, 20], --concurrency non-empty")

    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        workdir.mkdir(parents=True, exist_ok=True)
        args.generator = pick_generator(args.loadgen)
        return run(args, workdir, targets, levels)


def prepare_model(model_dir: Path, keras_path: Path, epochs: int, log: Path) -> None:
    """Train the benchmark model in a child process (TensorFlow stays out of this one) and
    publish it as a version of ``model_dir``, plus a Keras copy at ``keras_path``."""
    print(f"training the benchmark model ({epochs} epochs) ...", flush=True)
    with log.open("wb") as out:
        code = subprocess.call(
            [sys.executable, str(HERE / "_apps.py"), "prepare", "--model-dir",
             str(model_dir), "--keras", str(keras_path), "--epochs", str(epochs)],
            env=child_env(), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    if code != 0:
        tail = log.read_text(errors="replace")[-2000:]
        raise SystemExit(f"training the benchmark model failed ({code}):\n{tail}")


def run(args: argparse.Namespace, workdir: Path, targets: list[str], levels: list[int]) -> int:
    model_dir, keras_path = workdir / "models" / "xor", workdir / "xor.keras"
    t0 = time.monotonic()
    if not keras_path.exists():
        prepare_model(model_dir, keras_path, args.epochs, workdir / "prepare.log")
    apps = [sys.executable, str(HERE / "_apps.py")]
    commands = {
        "service": (
            [
                sys.executable,
                "-m",
                "xor_dnn",
                "serve",
                "--model-dir",
                str(model_dir),
                "--log-level",
                "warning",
                *args.service_arg,
            ],
            "/readyz",
        ),
        "bare": ([*apps, "bare"], "/healthz"),
        "floor": ([*apps, "floor"], "/healthz"),
        "core": ([*apps, "batched", "--model-dir", str(model_dir)], "/healthz"),
        "unbatched": ([*apps, "unbatched", "--model-dir", str(model_dir)], "/healthz"),
        "naive": ([*apps, "naive", "--keras", str(keras_path)], "/healthz"),
    }
    commands["baseline"] = commands["service"]  # the same command, from --baseline-root
    servers: list[Server] = []
    with running(servers):
        for name in targets:
            argv, ready = commands[name]
            port = free_port()
            argv = [*argv, "--port", str(port)]
            root = args.baseline_root.resolve() if name == "baseline" else ROOT
            servers.append(start(name, argv, port, workdir, ready, root))
        for s in servers:
            wait_ready(s, timeout=180)
        by_name = {s.name: s for s in servers}
        sanity_check(by_name)
        print(f"servers ready after {time.monotonic() - t0:.0f} s; warming up ...", flush=True)
        for s in servers:
            load(s.port, duration=1.0, concurrency=8, generator=args.generator)

        cells: dict[tuple[str, str, int], Cell] = {}
        for protocol in args.protocol_list:
            able = [s for s in servers if protocol == "predict" or s.name in ALL_PROTOCOLS]
            for c in levels:
                for rep in range(args.repeats):
                    order = able[rep % len(able) :] + able[: rep % len(able)]
                    for s in order:
                        waited = settle(servers)
                        if waited > 1.0:
                            print(f"  (waited {waited:.1f} s for the servers to go idle)")
                        r = measure(
                            s,
                            duration=args.duration,
                            concurrency=c,
                            generator=args.generator,
                            protocol=protocol,
                        )
                        cells.setdefault((s.name, protocol, c), Cell()).runs.append(r)
                        print(
                            f"  {protocol:<7} c={c:<4} {s.name:<10} {r['rps']:9.1f} req/s  "
                            f"p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:8.2f} ms  "
                            f"cpu {r['cpu_ms']:.3f} ms/req",
                            flush=True,
                        )

        open_loop: Cell | None = None
        bare_loop: Cell | None = None
        half_rate = float("nan")
        if "service" in by_name and "predict" in args.protocol_list:
            peak = max(cells[("service", "predict", c)].median("rps") for c in levels)
            half_rate = peak / 2
            open_loop = Cell()
            # The bare app at the same rate, alternated with the service: the machine's own
            # tail (a VM whose vCPU is taken away for milliseconds shows it in every server).
            loops = [("service", open_loop)]
            if "bare" in by_name:
                bare_loop = Cell()
                loops.append(("bare", bare_loop))
            for _ in range(args.repeats):
                for name, cell in loops:
                    settle(servers)
                    r = measure(by_name[name], duration=args.duration * 2, rate=half_rate)
                    cell.runs.append(r)
                    print(
                        f"  open loop {half_rate:.0f} req/s {name:<8} p50 {r['p50_ms']:.2f} ms  "
                        f"p99 {r['p99_ms']:.2f} ms",
                        flush=True,
                    )

        if args.profile > 0:
            for s in servers:
                if s.name in ("service", "baseline"):
                    settle(servers)
                    profile(s, seconds=args.profile, generator=args.generator, workdir=workdir)

    return report(
        args, targets, levels, cells, open_loop, bare_loop, half_rate, time.monotonic() - t0
    )


# Where the innermost Python frame of a sample lives -> what the CPU was spent on. The first
# matching fragment wins; C code (orjson, pydantic-core, numpy, httptools) counts under the
# Python frame that called it.
_PROFILE_CATEGORIES: tuple[tuple[str, str], ...] = (
    ("tensorflow", "model call (TensorFlow, model thread)"),
    ("keras", "model call (TensorFlow, model thread)"),
    ("service/registry.py", "model call (TensorFlow, model thread)"),
    ("prometheus_client", "metrics (prometheus_client)"),
    ("service/batcher.py", "batcher (queue, hand-off, results)"),
    ("service/dataplane.py", "data plane (limits, version, infer)"),
    ("service/codec.py", "decoding (pydantic validation, points)"),
    ("pydantic", "decoding (pydantic validation, points)"),
    ("service/routes/", "protocol handler (encode answer)"),
    ("service/dataroutes.py", "dispatcher and data lane (route match, handler call)"),
    ("service/middleware.py", "front door (ids, limits, CORS, hooks, log)"),
    ("service/responses.py", "front door (ids, limits, CORS, hooks, log)"),
    ("service/server.py", "HTTP server (uvicorn, httptools)"),
    ("service/deadlines.py", "timers"),
    ("uvicorn", "HTTP server (uvicorn, httptools)"),
    ("fastapi", "framework (FastAPI, Starlette)"),
    ("starlette", "framework (FastAPI, Starlette)"),
    ("numpy", "numpy"),
    ("asyncio", "event loop (asyncio, uvloop)"),
    ("uvloop", "event loop (asyncio, uvloop)"),
    ("threading.py", "event loop (asyncio, uvloop)"),
)


def profile(server: Server, *, seconds: float, generator: str, workdir: Path) -> None:
    """Sample ``server`` with py-spy under c=32 load; print CPU per request by category."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists() and shutil.which("py-spy") is None:
        print("  (--profile: py-spy is not installed: pip install py-spy)")
        return
    raw = workdir / f"{server.name}.pyspy.txt"
    # --nonblocking: py-spy's default pauses the process for each sample, and a paused
    # thread stops at its next kernel entry, so the samples pile up on the lines that make a
    # system call (asyncio.get_running_loop calls getpid() on Python 3.11; the socket
    # write), not where the time goes: 43% of a blocking profile of the service landed on
    # three get_running_loop calls, 1.3% of a non-blocking one (docs/batching.md).
    spy_cmd = [spy, "record", "-p", str(server.proc.pid), "-d", str(max(1, round(seconds))),
               "-r", "250", "-f", "raw", "-o", str(raw), "--gil", "--nonblocking"]  # fmt: skip
    sampler = subprocess.Popen(spy_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    r = measure(server, duration=seconds + 1, concurrency=TARGET_CONCURRENCY, generator=generator)
    _, err = sampler.communicate(timeout=seconds + 60)
    if sampler.returncode != 0 or not raw.exists():
        print(f"  (py-spy failed on {server.name}: {err.decode(errors='replace')[-500:]})")
        return
    shares: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";")
        category = "other"
        for frame in reversed(frames):
            found = next((c for fragment, c in _PROFILE_CATEGORIES if fragment in frame), None)
            if found is not None:
                category = found
                break
        shares[category] = shares.get(category, 0) + int(count)
        total += int(count)
    cpu_us = r["cpu_ms"] * 1000
    print(
        f"\n{server.name}: where the GIL-holding time goes (py-spy --gil, {total} samples over "
        f"{seconds:g} s at c={TARGET_CONCURRENCY}, {r['rps']:.0f} req/s, {cpu_us:.0f} µs of "
        "server CPU per request, shared out by the samples' shares)"
    )
    print("\n| spent in | share | µs/request |\n|---|---:|---:|")
    for category, n in sorted(shares.items(), key=lambda kv: -kv[1]):
        print(f"| {category} | {n / total:.0%} | {cpu_us * n / total:.1f} |")


def p99_limit(bare_p99: float | None) -> tuple[float, str]:
    """The open-loop p99 target and how it reads: ``P99_MAX_MS``, unless the bare app at the
    same rate in the same run is itself slower (the machine's tail, not the service's: a
    shared VM that loses its vCPU for milliseconds at a time), then the bare app's p99."""
    if bare_p99 is None or not bare_p99 > P99_MAX_MS:
        return P99_MAX_MS, f"<= {P99_MAX_MS:g} ms"
    return bare_p99, f"<= bare's {bare_p99:.2f} ms (> {P99_MAX_MS:g})"


def report(
    args: argparse.Namespace,
    targets: list[str],
    levels: list[int],
    cells: dict[tuple[str, str, int], Cell],
    open_loop: Cell | None,
    bare_loop: Cell | None,
    half_rate: float,
    seconds: float,
) -> int:
    print()
    print(
        f"Single-point requests, closed loop, median of {args.repeats} interleaved "
        f"runs of {args.duration:g} s (nproc={os.cpu_count()}, one worker per server; "
        f"closed loop by {GENERATORS[args.generator]}, open loop by bench/_loadgen.py)"
    )
    print()
    print(
        "| protocol | target | concurrency | req/s | p50 ms | p99 ms | server CPU ms/req "
        "| requests/model call | errors |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for protocol in args.protocol_list:
        for name in targets:
            for c in levels:
                cell = cells.get((name, protocol, c))
                if cell is None:
                    continue
                print(
                    f"| {protocol} | {name} | {c} | {fmt(cell.median('rps'))} "
                    f"| {fmt(cell.median('p50_ms'), 2)} | {fmt(cell.median('p99_ms'), 2)} "
                    f"| {fmt(cell.median('cpu_ms'), 3)} | {fmt(cell.median('per_call'))} "
                    f"| {cell.errors} |"
                )
    print()
    if "service" in targets and len(targets) > 1:
        others = [t for t in targets if t != "service"]
        print("| protocol | concurrency | " + " | ".join(f"service / {t}" for t in others) + " |")
        print("|---|---:|" + "---:|" * len(others))
        for protocol in args.protocol_list:
            for c in levels:
                svc = cells[("service", protocol, c)].median("rps")
                row = []
                for t in others:
                    cell = cells.get((t, protocol, c))
                    row.append(_ratio(svc, cell.median("rps")) if cell else "-")
                print(f"| {protocol} | {c} | " + " | ".join(row) + " |")
        print()
    if open_loop is not None:
        print(
            f"/predict open loop at {half_rate:.0f} req/s (half of its peak): "
            f"p50 {fmt(open_loop.median('p50_ms'), 2)} ms, p99 {fmt(open_loop.median('p99_ms'), 2)}"
            f" ms, {fmt(open_loop.median('per_call'))} requests/model call, "
            f"{open_loop.errors} errors"
        )
        if bare_loop is not None:
            print(
                "the bare app at the same rate (the machine's own tail): p50 "
                f"{fmt(bare_loop.median('p50_ms'), 2)} ms, "
                f"p99 {fmt(bare_loop.median('p99_ms'), 2)} ms"
            )
    checks: list[tuple[str, str, str, bool]] = []
    c = TARGET_CONCURRENCY
    if "service" in targets and c in levels:
        for protocol in args.protocol_list:
            svc = cells[("service", protocol, c)].median("rps")
            for base, minimum in (("bare", BARE_RATIO_MIN), ("floor", FLOOR_RATIO_MIN)):
                if base in targets:
                    base_rps = cells[(base, protocol, c)].median("rps")
                    ratio = svc / base_rps if base_rps > 0 else float("nan")
                    checks.append(
                        (
                            f"{PROTOCOL_PATHS[protocol]} vs {base} at c={c}",
                            f"{ratio:.0%}",
                            f">= {minimum:.0%}",
                            ratio >= minimum,
                        )
                    )
        if "naive" in targets and "predict" in args.protocol_list:
            naive_rps = cells[("naive", "predict", c)].median("rps")
            svc = cells[("service", "predict", c)].median("rps")
            ratio = svc / naive_rps if naive_rps > 0 else float("inf")
            checks.append(
                (
                    f"/predict vs naive at c={c}",
                    f"{ratio:.1f}x",
                    f">= {NAIVE_RATIO_MIN:g}x",
                    ratio >= NAIVE_RATIO_MIN,
                )
            )
    if open_loop is not None:
        p99 = open_loop.median("p99_ms")
        limit, need = p99_limit(bare_loop.median("p99_ms") if bare_loop else None)
        checks.append(
            (
                f"/predict p99 at half peak ({half_rate:.0f} req/s, open loop)",
                f"{p99:.2f} ms",
                need,
                p99 <= limit and open_loop.errors == 0,
            )
        )
    print()
    print("| target | measured | required | |")
    print("|---|---:|---:|---|")
    for label, shown, need, ok in checks:
        print(f"| {label} | {shown} | {need} | {'ok' if ok else 'MISSED'} |")
    print(f"\nwhole run: {seconds:.0f} s")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "cells": {f"{n}/{p}@{c}": cell.runs for (n, p, c), cell in cells.items()},
                    "open_loop": open_loop.runs if open_loop else [],
                    "bare_open_loop": bare_loop.runs if bare_loop else [],
                    "half_rate": half_rate,
                    "checks": [
                        {"check": label, "value": v, "required": need, "ok": ok}
                        for label, v, need, ok in checks
                    ],
                },
                indent=1,
            )
        )
    return 0 if all(ok for *_, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
