"""The reliability scenarios behind ``bench/reliability.py`` and ``tests/hardening``: each
starts real ``python -m service`` processes, drives them with an asyncio HTTP/1.1 client and
returns its figures as a dict (the bench prints them, the tests assert on them).

Outcome of each request the client sends:

* **ok**: a 200;
* **refused**: a 429/503 answer, or the connection refused / closed before a single byte of
  answer (the server never took the request: a client may safely retry);
* **failed**: any other status (500, 504, ...);
* **lost**: the server started answering and the answer never completed, or the request
  timed out on the client. A graceful shutdown or a hot reload must lose nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench._loadgen import build_requests, percentile, read_response
from service.process import ServerProcess, start_server, wait_until_ready, worker_pids

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


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def settled_fds(pid: int, *, at_most: int | None = None, timeout: float = 15.0) -> int:
    """The process's open descriptors once the connections a load left behind are closed.

    A client's closed connection stays open on the server until its event loop reads the
    FIN, so a count taken the moment the load ends includes sockets about to close. With
    ``at_most``, wait until the count is at most that (a leak never gets there: the last count
    is returned at ``timeout``); without, until it stops falling (three equal reads in a row).
    """
    deadline = time.monotonic() + timeout
    count, same = open_fds(pid), 0
    while time.monotonic() < deadline:
        if at_most is not None and count <= at_most:
            return count
        time.sleep(0.1)
        previous, count = count, open_fds(pid)
        same = same + 1 if count == previous else 0
        if at_most is None and same >= 2:
            return count
    return count


def slope_per_minute(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) samples, per minute."""
    if len(samples) < 2:
        return 0.0
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_v = sum(v for _, v in samples) / n
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    if var == 0:
        return 0.0
    cov = sum((t - mean_t) * (v - mean_v) for t, v in samples)
    return cov / var * 60.0


# -- load ----------------------------------------------------------------------------------


@dataclass
class Outcomes:
    """Per-request results of one load phase."""

    ok_latencies: list[float] = field(default_factory=list)
    refused_latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    refused: int = 0
    failed: int = 0
    lost: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    # Open loop only: how late each request was written after its due time. A large p99 means
    # the generator (or its connection pool), not the server, set the pace.
    send_lags: list[float] = field(default_factory=list)
    # Open loop only: the same answers timed from the write instead (server + both event loops).
    ok_from_write: list[float] = field(default_factory=list)
    refused_from_write: list[float] = field(default_factory=list)

    @property
    def sent(self) -> int:
        return len(self.ok_latencies) + self.refused + self.failed + self.lost

    def summary(self, seconds: float) -> dict[str, Any]:
        ok = sorted(self.ok_latencies)
        ref = sorted(self.refused_latencies)
        return {
            "sent": self.sent,
            "ok": len(ok),
            "refused": self.refused,
            "failed": self.failed,
            "lost": self.lost,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "errors": dict(self.errors),
            "ok_per_s": len(ok) / seconds if seconds > 0 else 0.0,
            "ok_p50_ms": percentile(ok, 50) * 1e3,
            "ok_p99_ms": percentile(ok, 99) * 1e3,
            "refused_p50_ms": percentile(ref, 50) * 1e3,
            "refused_p99_ms": percentile(ref, 99) * 1e3,
            "send_lag_p99_ms": percentile(sorted(self.send_lags), 99) * 1e3,
            "ok_from_write_p99_ms": percentile(sorted(self.ok_from_write), 99) * 1e3,
            "refused_from_write_p50_ms": percentile(sorted(self.refused_from_write), 50) * 1e3,
            "refused_from_write_p99_ms": percentile(sorted(self.refused_from_write), 99) * 1e3,
        }


class _Client:
    """One keep-alive connection that classifies each request's outcome (see module doc)."""

    def __init__(self, port: int, timeout: float) -> None:
        self.port = port
        self.timeout = timeout
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def send(self, raw: bytes, out: Outcomes, due: float | None = None) -> None:
        """Latency counts from ``due`` when given (open loop), else from now."""
        now = time.perf_counter()
        started = now if due is None else due
        if due is not None:
            out.send_lags.append(now - due)
        try:
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
            assert self.reader is not None
            self.writer.write(raw)
            async with asyncio.timeout(self.timeout):
                status, keep_alive = await read_response(self.reader)
        except (ConnectionRefusedError, ConnectionResetError, BrokenPipeError) as exc:
            self.close()
            out.refused += 1
            out.errors[type(exc).__name__] += 1
            await asyncio.sleep(0.01)
            return
        except asyncio.IncompleteReadError as exc:
            self.close()
            # Nothing of an answer: the server closed an idle connection (not our request's).
            if exc.partial:
                out.lost += 1
            else:
                out.refused += 1
            out.errors["closed" if not exc.partial else "partial_answer"] += 1
            await asyncio.sleep(0.01)
            return
        except (TimeoutError, OSError) as exc:
            self.close()
            out.lost += 1
            out.errors[type(exc).__name__] += 1
            return
        answered = time.perf_counter()
        elapsed = answered - started
        out.statuses[status] += 1
        if status == 200:
            out.ok_latencies.append(elapsed)
            if due is not None:
                out.ok_from_write.append(answered - now)
        elif status in (429, 503):
            out.refused += 1
            out.refused_latencies.append(elapsed)
            if due is not None:
                out.refused_from_write.append(answered - now)
        else:
            out.failed += 1
        if not keep_alive:
            self.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def closed_loop(
    port: int,
    concurrency: int,
    duration: float,
    *,
    timeout: float = 30.0,
    stop: asyncio.Event | None = None,
    path: str = "/predict",
) -> tuple[Outcomes, float]:
    """``concurrency`` connections, each sending its next request when the last is answered."""
    reqs = build_requests("127.0.0.1", port, path, 256, seed=concurrency)
    out = Outcomes()
    started = time.perf_counter()
    end = started + duration

    async def worker(i: int) -> None:
        client = _Client(port, timeout)
        n = i
        while time.perf_counter() < end and not (stop and stop.is_set()):
            await client.send(reqs[n % len(reqs)], out)
            n += concurrency
        client.close()

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return out, time.perf_counter() - started


async def open_loop(
    port: int, rate: float, duration: float, *, timeout: float = 30.0, pool: int = 64
) -> tuple[Outcomes, float]:
    """Requests due at a fixed rate whatever the server does; latency counts from the due
    time, so waiting for one of the ``pool`` connections is counted (no coordinated omission)."""
    reqs = build_requests("127.0.0.1", port, "/predict", 256, seed=7)
    out = Outcomes()
    idle: asyncio.Queue[_Client] = asyncio.Queue()
    for _ in range(pool):
        idle.put_nowait(_Client(port, timeout))
    tasks: set[asyncio.Task[None]] = set()
    started = time.perf_counter()
    total = int(rate * duration)

    async def one(raw: bytes, due: float) -> None:
        client = await idle.get()
        try:
            await client.send(raw, out, due)
        finally:
            idle.put_nowait(client)

    for i in range(total):
        delay = started + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(reqs[i % len(reqs)], started + i / rate))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.gather(*tasks)
    while not idle.empty():
        idle.get_nowait().close()
    return out, time.perf_counter() - started


async def _sample(pid: int, every: float, into: list[tuple[float, float, int]]) -> None:
    started = time.perf_counter()
    while True:
        with contextlib.suppress(OSError):
            into.append((time.perf_counter() - started, rss_mb(pid), open_fds(pid)))
        await asyncio.sleep(every)


def peak_rps(port: int, seconds: float = 3.0, concurrency: int = 32) -> float:
    out, elapsed = asyncio.run(closed_loop(port, concurrency, seconds))
    return len(out.ok_latencies) / elapsed


def scrape(url: str) -> str:
    return httpx.get(f"{url}/metrics", timeout=10, headers={"Connection": "close"}).text


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of a metric's samples whose labels include ``labels``."""
    total = 0.0
    for m in re.finditer(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", text, re.M):
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(2))
    return total


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
            sampler = asyncio.create_task(_sample(pid, 0.5, samples))
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
                sampler = asyncio.create_task(_sample(pid, 0.5, samples))
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


# Descriptors a soak may end with beyond its start (lazily opened pools, a log rotation).
FD_SLACK = 8


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
            sampler = asyncio.create_task(_sample(pid, 1.0, samples))
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


def _publish_copy(src: Path, root: Path, version: int, damage: Callable[[Path], None]) -> None:
    """Write a version the way the training job does: a temp folder renamed into place."""
    tmp = root / f".tmp-{version}"
    shutil.copytree(src, tmp)
    damage(tmp)
    tmp.rename(root / str(version))


def _truncate_graph(path: Path) -> None:
    pb = path / "saved_model.pb"
    pb.write_bytes(pb.read_bytes()[:200])


def _drop_variables(path: Path) -> None:
    shutil.rmtree(path / "variables")


def _wrong_signature(path: Path) -> None:
    """Replace the SavedModel by one whose serving_default takes [None, 3]."""
    code = (
        "import sys, tensorflow as tf\n"
        "class M(tf.Module):\n"
        "    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name='points')])\n"
        "    def serve(self, points):\n"
        "        return {'probability': tf.reduce_sum(points, axis=1, keepdims=True)}\n"
        "m = M()\n"
        "tf.saved_model.save(m, sys.argv[1], signatures={'serving_default': m.serve})\n"
    )
    for item in ("saved_model.pb", "variables", "fingerprint.pb"):
        target = path / item
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, env=env)


CORRUPTIONS: dict[str, Callable[[Path], None]] = {
    "truncated saved_model.pb": _truncate_graph,
    "missing variables/": _drop_variables,
    "wrong signature shape": _wrong_signature,
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
            await asyncio.to_thread(_publish_copy, good, root, 2, lambda p: None)
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
                await asyncio.to_thread(_publish_copy, good, root, version, damage)
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
            # OSError on listing). Every loaded version must stay loaded and serving.
            hidden = root.with_name("xor-hidden")
            root.rename(hidden)
            root.write_text("not a folder")
            await asyncio.sleep(2.0)
            during = await asyncio.to_thread(
                lambda: (
                    httpx.post(
                        f"{server.url}/predict?version=1", json={"points": [{"x": 1, "y": 1}]}
                    ).status_code
                )
            )
            root.unlink()
            hidden.rename(root)
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
