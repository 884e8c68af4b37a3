"""What a process costs the machine, read with psutil: RSS, CPU time, open descriptors, and
a sampler and trend for load phases. Shared by the benchmarks, the deploy sizing check and the
tests."""

from __future__ import annotations

import asyncio
import contextlib
import time

import psutil

MIB = 1024 * 1024
# Descriptors a soak may end with beyond its start (lazily opened pools, a log rotation).
FD_SLACK = 8


def rss_mb(pid: int) -> float:
    return float(psutil.Process(pid).memory_info().rss) / MIB


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far; NaN once it is gone."""
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return float("nan")
    return float(times.user + times.system)


def runnable_threads(pid: int) -> int:
    """Threads of a process running or waiting for a CPU right now (state R); 0 once it is gone.

    CPU time alone cannot tell a busy process from an idle one on a loaded machine: a process
    with work may get almost no CPU in a short window, but its thread stays runnable.
    """
    try:
        threads = psutil.Process(pid).threads()
    except psutil.Error:
        return 0
    count = 0
    for thread in threads:
        with contextlib.suppress(psutil.Error):  # a thread may end between the two reads
            count += psutil.Process(thread.id).status() == psutil.STATUS_RUNNING
    return count


def open_fds(pid: int) -> int:
    return int(psutil.Process(pid).num_fds())


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


async def sample(pid: int, every: float, into: list[tuple[float, float, int]]) -> None:
    """Append (seconds, RSS MiB, open fds) every ``every`` seconds until cancelled."""
    started = time.perf_counter()
    while True:
        with contextlib.suppress(psutil.Error):
            into.append((time.perf_counter() - started, rss_mb(pid), open_fds(pid)))
        await asyncio.sleep(every)
