"""The reliability scenarios behind ``bench/reliability.py`` and ``tests/hardening``: each
starts real ``python -m service`` processes, drives them with the shared load client
(``bench/_loadgen.py``, whose module doc defines a request's outcome: ok, refused, failed or
lost) and returns its figures as a dict (the bench prints them, the tests assert on them).
A graceful shutdown or a hot reload must lose nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import json
import os
import shutil
import signal
import subprocess  # nosec B404
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from bench._corruptions import CORRUPTIONS, publish_copy
from bench._loadgen import Outcomes, closed_loop, open_loop
from bench._metrics import metric, scrape
from bench._process import ServerProcess, start_server, wait_until_ready, worker_pids
from bench._resources import FD_SLACK, open_fds, rss_mb, sample, settled_fds, slope_per_minute

REPO = Path(__file__).resolve().parents[1]


# -- servers -------------------------------------------------------------------------------


# The bench reads no log lines, and an info line per request would cost CPU under load.
QUIET = ("--log-level", "warning")


@contextlib.contextmanager
def running(model_dir: Path, log_path: Path, *args: str) -> Iterator[ServerProcess]:
    server = start_server(model_dir, log_path, *QUIET, *args)
    try:
        yield server
    finally:
        server.kill()


def peak_rps(port: int, seconds: float = 3.0, concurrency: int = 32) -> float:
    out, elapsed = asyncio.run(closed_loop(port, concurrency, seconds))
    return len(out.ok_latencies) / elapsed


# -- scenarios -----------------------------------------------------------------------------


def overload(
    model_dir: Path,
    work: Path,
    *,
    seconds: float = 10.0,
    concurrency: int = 512,
    calm_seconds: float = 3.0,
) -> dict[str, Any]:
    """Calm, then far past peak (a small queue bound makes the excess refused), then calm."""
    args = ("--max-queue-points", "64", "--max-batch-size", "64")
    with running(model_dir, work / "overload.log", *args) as server:
        pid = server.proc.pid
        before, _ = asyncio.run(closed_loop(server.port, 8, calm_seconds))
        rss_before = rss_mb(pid)
        samples: list[tuple[float, float, int]] = []

        async def storm() -> tuple[Outcomes, float]:
            sampler = asyncio.create_task(sample(pid, 0.5, samples))
            try:
                return await closed_loop(server.port, concurrency, seconds, timeout=30)
            finally:
                sampler.cancel()

        hot, hot_s = asyncio.run(storm())
        rss_after = rss_mb(pid)
        first_ok, after, healthy = _recovery(server, calm_seconds)
    return {
        "concurrency": concurrency,
        "seconds": seconds,
        "overload": hot.summary(hot_s),
    } | _around_overload(
        before, after, calm_seconds, rss_before, rss_after, samples, first_ok, healthy
    )


def _around_overload(
    before: Outcomes,
    after: Outcomes,
    calm_seconds: float,
    rss_before: float,
    rss_after: float,
    samples: list[tuple[float, float, int]],
    first_ok: float | None,
    healthy: bool,
) -> dict[str, Any]:
    """What both overload scenarios report around the storm: calm phases, memory, recovery."""
    return {
        "calm_before": before.summary(calm_seconds),
        "calm_after": after.summary(calm_seconds),
        "rss_before_mb": rss_before,
        "rss_after_mb": rss_after,
        "rss_max_mb": max((s[1] for s in samples), default=rss_after),
        "recovery_first_ok_s": first_ok,
        "healthy_after": healthy,
    }


def _recovery(server: ServerProcess, calm_seconds: float) -> tuple[float | None, Outcomes, bool]:
    """After an overload: seconds to the first 200, a calm closed-loop phase, and /readyz."""
    started = time.perf_counter()
    first_ok = None
    while first_ok is None and time.perf_counter() - started < 10:
        r = httpx.post(f"{server.url}/predict", json={"points": [{"x": 1, "y": -1}]})
        if r.status_code == 200:
            first_ok = time.perf_counter() - started
    after, _ = asyncio.run(closed_loop(server.port, 8, calm_seconds))
    healthy = httpx.get(f"{server.url}/readyz").status_code == 200
    return first_ok, after, healthy


def overload_open(
    model_dir: Path,
    work: Path,
    *,
    seconds: float = 5.0,
    factors: tuple[float, ...] = (2.0, 4.0),
    pool: int = 256,
    calm_seconds: float = 3.0,
) -> dict[str, Any]:
    """Open-loop overload: measure peak, then arrivals at ``factors`` x peak for ``seconds``
    each (latency from each request's due time), then calm. Unlike the closed loop, a refused
    request is not replaced at once by its retry, so a refusal's latency is its own cost plus
    queueing at the server's socket, not 512 / throughput."""
    args = ("--max-queue-points", "64", "--max-batch-size", "64")
    with running(model_dir, work / "overload_open.log", *args) as server:
        pid = server.proc.pid
        peak = peak_rps(server.port)
        before, _ = asyncio.run(closed_loop(server.port, 8, calm_seconds))
        rss_before = rss_mb(pid)
        samples: list[tuple[float, float, int]] = []
        phases: list[dict[str, Any]] = []
        for factor in factors:
            rate = peak * factor

            async def storm(rate: float = rate) -> tuple[Outcomes, float]:
                sampler = asyncio.create_task(sample(pid, 0.5, samples))
                try:
                    return await open_loop(server.port, rate, seconds, timeout=10, pool=pool)
                finally:
                    sampler.cancel()

            hot, hot_s = asyncio.run(storm())
            phases.append(
                {"factor": factor, "rate": rate, "sent_per_s": hot.sent / hot_s}
                | hot.summary(hot_s)
            )
        rss_after = rss_mb(pid)
        first_ok, after, healthy = _recovery(server, calm_seconds)
    return {
        "peak_rps": peak,
        "seconds": seconds,
        "pool": pool,
        "phases": phases,
    } | _around_overload(
        before, after, calm_seconds, rss_before, rss_after, samples, first_ok, healthy
    )


def soak(
    model_dir: Path, work: Path, *, seconds: float = 60.0, fraction: float = 0.5
) -> dict[str, Any]:
    """An open-loop run at ``fraction`` of the measured peak: errors, RSS and fd trends.

    ``fds_start`` and ``fds_end`` are counted with the load's connections closed (see
    :func:`settled_fds`), so only descriptors the server kept count as growth."""
    with running(model_dir, work / "soak.log") as server:
        pid = server.proc.pid
        peak = peak_rps(server.port)
        rate = max(10.0, peak * fraction)
        asyncio.run(open_loop(server.port, rate, 2.0))  # warm: allocator pools, connections
        fds_start = settled_fds(pid)
        samples: list[tuple[float, float, int]] = []

        async def run() -> tuple[Outcomes, float]:
            sampler = asyncio.create_task(sample(pid, 1.0, samples))
            try:
                return await open_loop(server.port, rate, seconds)
            finally:
                sampler.cancel()

        out, elapsed = asyncio.run(run())
        samples.append((elapsed, rss_mb(pid), open_fds(pid)))
        fds_end = settled_fds(pid, at_most=fds_start + FD_SLACK)
    return {
        "peak_rps": peak,
        "rate": rate,
        "seconds": seconds,
        **out.summary(elapsed),
        "rss_start_mb": samples[0][1],
        "rss_end_mb": samples[-1][1],
        "rss_slope_mb_per_min": slope_per_minute([(t, r) for t, r, _ in samples]),
        "fds_start": fds_start,
        "fds_end": fds_end,
        "fds_max": max(s[2] for s in samples),
    }


def sigterm_under_load(
    model_dir: Path, work: Path, *, load_seconds: float = 2.0, concurrency: int = 32
) -> dict[str, Any]:
    """SIGTERM while ``concurrency`` clients keep sending: nothing the server took is lost."""
    drain = 20.0
    server = start_server(model_dir, work / "sigterm.log", *QUIET, "--drain-timeout-s", str(drain))
    try:

        async def scenario() -> tuple[Outcomes, float, float]:
            stop = asyncio.Event()
            load = asyncio.create_task(closed_loop(server.port, concurrency, 600, stop=stop))
            await asyncio.sleep(load_seconds)
            sent_at = time.perf_counter()
            server.proc.send_signal(signal.SIGTERM)
            code_wait = asyncio.to_thread(server.proc.wait, 60)
            await code_wait
            exit_s = time.perf_counter() - sent_at
            stop.set()
            out, elapsed = await load
            return out, elapsed, exit_s

        out, elapsed, exit_s = asyncio.run(scenario())
    finally:
        server.kill()
    return {
        **out.summary(elapsed),
        "exit_code": server.proc.returncode,
        "exit_seconds": exit_s,
        "drain_timeout_s": drain,
    }


def worker_killed(model_dir: Path, work: Path, *, seconds: float = 8.0) -> dict[str, Any]:
    """``--workers 2``: SIGKILL one worker under load; the other serves, the supervisor
    restarts it, and the merged metrics stay consistent (counters never go backwards)."""
    with running(model_dir, work / "workers.log", "--workers", "2") as server:
        workers = worker_pids(server.proc.pid)
        victim = workers[0]
        scrapes: list[float] = []

        async def scenario() -> tuple[Outcomes, float, float | None, list[int]]:
            load = asyncio.create_task(closed_loop(server.port, 16, seconds))
            await asyncio.sleep(seconds / 4)
            scrapes.append(
                metric(
                    await asyncio.to_thread(scrape, server.url),
                    "xor_dnn_http_requests_total",
                    route="/predict",
                    status="200",
                )
            )
            os.kill(victim, signal.SIGKILL)
            killed_at = time.perf_counter()
            restarted = None
            now: list[int] = []
            while time.perf_counter() - killed_at < seconds:
                now = worker_pids(server.proc.pid)
                if restarted is None and len(now) == 2 and victim not in now:
                    restarted = time.perf_counter() - killed_at
                text = await asyncio.to_thread(scrape, server.url)
                scrapes.append(
                    metric(text, "xor_dnn_http_requests_total", route="/predict", status="200")
                )
                await asyncio.sleep(0.5)
            out, elapsed = await load
            return out, elapsed, restarted, now

        out, elapsed, restarted, now = asyncio.run(scenario())
        wait_until_ready(server, 60)
        final = scrape(server.url)
        counted = metric(final, "xor_dnn_http_requests_total", route="/predict", status="200")
        queue_gauge = metric(final, "xor_dnn_queue_points")
    return {
        **out.summary(elapsed),
        "workers_before": workers,
        "workers_after": now,
        "restart_seconds": restarted,
        "metrics_monotonic": all(b >= a for a, b in itertools.pairwise(scrapes)),
        "metrics_predict_200": counted,
        "client_predict_200": len(out.ok_latencies),
        "queue_gauge_after": queue_gauge,
    }


def hot_reload(model_dir: Path, work: Path) -> dict[str, Any]:
    """Under load: a good new version swapped in, three corrupt ones rejected, and the model
    folder made unreadable for a while; every request must still get a 200."""
    root = work / "reload-models" / "xor"
    root.mkdir(parents=True)
    shutil.copytree(model_dir / "1", root / "1")
    good = model_dir / "2"
    steps: list[dict[str, Any]] = []
    with running(root, work / "reload.log") as server:

        def default_version() -> int:
            return int(httpx.get(f"{server.url}/models/xor", timeout=5).json()["default_version"])

        async def wait_for(check: Callable[[], bool], limit: float) -> float | None:
            started = time.perf_counter()
            while time.perf_counter() - started < limit:
                if await asyncio.to_thread(check):
                    return time.perf_counter() - started
                await asyncio.sleep(0.1)
            return None

        async def scenario() -> tuple[Outcomes, float]:
            stop = asyncio.Event()
            load = asyncio.create_task(closed_loop(server.port, 8, 600, stop=stop))
            await asyncio.sleep(1.0)
            await asyncio.to_thread(publish_copy, good, root, 2, lambda p: None)
            took = await wait_for(lambda: default_version() == 2, 60)
            steps.append(
                {
                    "step": "publish good version 2",
                    "ok": took is not None,
                    "detail": f"default 2 after {took or float('nan'):.2f} s",
                }
            )
            for offset, (name, damage) in enumerate(CORRUPTIONS.items()):
                version = 3 + offset
                await asyncio.to_thread(publish_copy, good, root, version, damage)
                failed = await wait_for(
                    lambda v=version: (
                        metric(  # type: ignore[misc]
                            scrape(server.url), "xor_dnn_model_load_failures_total", version=str(v)
                        )
                        >= 1
                    ),
                    60,
                )
                steps.append(
                    {
                        "step": f"publish v{version}: {name}",
                        "ok": failed is not None and default_version() == 2,
                        "detail": f"rejected after {failed or float('nan'):.2f} s, "
                        f"default {default_version()}",
                    }
                )
            # Unreadable: the folder's path stops being a listable directory for 2 s (as root,
            # permission bits are not enforced, so a file stands in for EACCES: both are
            # OSError on listing). Every loaded version must stay loaded and serving. The
            # file and the folder trade places atomically: a rename then a write would leave
            # an instant with no folder at all, which the poll rightly reads as "no versions".
            stand_in = root.with_name("xor-unreadable")
            stand_in.write_text("not a folder")
            exchange_paths(root, stand_in)
            await asyncio.sleep(2.0)
            during = await asyncio.to_thread(
                lambda: (
                    httpx.post(
                        f"{server.url}/predict?version=1", json={"points": [{"x": 1, "y": 1}]}
                    ).status_code
                )
            )
            exchange_paths(root, stand_in)
            stand_in.unlink()
            await asyncio.sleep(1.0)
            steps.append(
                {
                    "step": "model dir unreadable for 2 s",
                    "ok": during == 200 and default_version() == 2,
                    "detail": f"pinned v1 answered {during} while unreadable",
                }
            )
            stop.set()
            return await load

        out, elapsed = asyncio.run(scenario())
    return {**out.summary(elapsed), "steps": steps}


def exchange_paths(a: Path, b: Path) -> None:
    """Swap two existing paths in one step (Linux ``renameat2`` with ``RENAME_EXCHANGE``):
    at no instant is either path missing."""
    libc = ctypes.CDLL(None, use_errno=True)
    at_fdcwd, rename_exchange = -100, 2
    if libc.renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange):
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno), str(a))


def scorer_disk_full(model_dir: Path, work: Path, *, rows: int = 50_000) -> dict[str, Any]:
    """``xor-dnn score`` into a 256 KiB tmpfs: a clean error, exit 1, no partial file.

    Needs root (mount); returns ``{"skipped": reason}`` otherwise.
    """
    mnt = work / "full"
    mnt.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True
    )
    if mounted.returncode != 0:
        return {"skipped": f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}"}
    try:
        data = work / "points.csv"
        with data.open("w") as f:
            f.write("x,y\n")
            for i in range(rows):
                f.write(f"{(i % 200) / 20 - 5:.6f},{(i % 170) / 17 - 5:.6f}\n")
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        cmd = [
            sys.executable, "-m", "xor_dnn.cli", "score", "-i", str(data),
            "-o", str(mnt / "scores.csv"), "--model-dir", str(model_dir), "--no-progress",
        ]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, env=env, cwd=REPO, timeout=300)
        stdout = done.stdout.decode(errors="replace").strip().splitlines()
        stderr = done.stderr.decode(errors="replace")
        last: dict[str, Any] = {}
        with contextlib.suppress(IndexError, json.JSONDecodeError):
            last = json.loads(stdout[-1])
        left = sorted(p.name for p in mnt.iterdir())
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
    return {
        "exit_code": done.returncode,
        "status_line": last,
        "traceback": "Traceback" in stderr,
        "files_left": left,
        "stderr_tail": stderr.strip().splitlines()[-1:] if stderr.strip() else [],
    }
