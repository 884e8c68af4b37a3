"""Fast variants of ``bench/reliability.py``: the same scenarios with short load phases.

Each starts its own real server(s), so together they take about a minute and a half.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench import _reliability as rel
from bench._resources import FD_SLACK, open_fds, settled_fds

pytestmark = pytest.mark.slow


def test_overload_refuses_excess_and_recovers(model_dir: Path, tmp_path: Path) -> None:
    f = rel.overload(model_dir, tmp_path, seconds=3.0, concurrency=256, calm_seconds=1.0)
    hot = f["overload"]
    assert hot["ok"] > 0 and hot["failed"] == 0 and hot["lost"] == 0, hot
    assert f["rss_max_mb"] - f["rss_before_mb"] < 150, f
    assert f["recovery_first_ok_s"] is not None and f["recovery_first_ok_s"] < 1.0, f
    after = f["calm_after"]
    assert after["failed"] == after["lost"] == after["refused"] == 0, after
    assert f["healthy_after"]


def test_open_loop_overload_refuses_excess_and_recovers(model_dir: Path, tmp_path: Path) -> None:
    f = rel.overload_open(model_dir, tmp_path, seconds=1.5, factors=(2.0,), calm_seconds=1.0)
    (hot,) = f["phases"]
    # Twice the measured peak cannot all be served: the excess must be refused, not queued.
    assert hot["ok"] > 0 and hot["refused"] > 0, hot
    assert hot["failed"] == 0 and hot["lost"] == 0, hot
    assert hot["sent"] == hot["ok"] + hot["refused"], hot
    assert f["rss_max_mb"] - f["rss_before_mb"] < 150, f
    assert f["recovery_first_ok_s"] is not None and f["recovery_first_ok_s"] < 1.0, f
    after = f["calm_after"]
    assert after["failed"] == after["lost"] == after["refused"] == 0, after
    assert f["healthy_after"]


def test_soak_at_half_peak_has_no_errors_and_no_fd_growth(model_dir: Path, tmp_path: Path) -> None:
    f = rel.soak(model_dir, tmp_path, seconds=8.0)
    assert f["ok"] > 0 and f["failed"] == f["lost"] == f["refused"] == 0, f
    assert f["fds_end"] - f["fds_start"] <= FD_SLACK, f
    # Too short to judge a slope on; only a runaway leak shows in 8 s.
    assert f["rss_end_mb"] - f["rss_start_mb"] < 100, f


# Holds socket pairs on command: "brief" closes them after a moment (like connections a load
# leaves behind), "keep" never does (a leak).
_HOLDER = """
import socket, sys, time
print("ready", flush=True)
for line in sys.stdin:
    pairs = [socket.socketpair() for _ in range(10)]
    print("opened", flush=True)
    if line.strip() == "brief":
        time.sleep(0.3)
        for a, b in pairs:
            a.close(); b.close()
    else:
        kept = pairs
"""


@pytest.mark.timeout(60)
def test_fd_check_ignores_closing_connections_and_catches_a_leak() -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdin is not None and holder.stdout is not None
    try:
        assert holder.stdout.readline().strip() == "ready"
        start = settled_fds(holder.pid)
        budget = start + FD_SLACK

        holder.stdin.write("brief\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "opened"
        assert open_fds(holder.pid) >= start + 20  # counted while still open...
        assert settled_fds(holder.pid, at_most=budget) <= budget  # ...not once closed

        holder.stdin.write("keep\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "opened"
        assert settled_fds(holder.pid, at_most=budget, timeout=1.0) >= start + 20
    finally:
        holder.kill()
        holder.communicate()


def test_sigterm_under_load_loses_nothing(model_dir: Path, tmp_path: Path) -> None:
    f = rel.sigterm_under_load(model_dir, tmp_path, load_seconds=1.5, concurrency=16)
    assert f["ok"] > 0 and f["lost"] == 0 and f["failed"] == 0, f
    assert f["exit_code"] == 0 and f["exit_seconds"] < f["drain_timeout_s"], f


def test_killed_worker_is_replaced_and_metrics_stay_consistent(
    model_dir: Path, tmp_path: Path
) -> None:
    f = rel.worker_killed(model_dir, tmp_path, seconds=6.0)
    assert f["restart_seconds"] is not None, f
    assert len(f["workers_after"]) == 2 and f["workers_before"][0] not in f["workers_after"], f
    assert f["ok"] > 0 and f["failed"] == 0, f
    assert f["metrics_monotonic"], f
    assert f["metrics_predict_200"] >= f["client_predict_200"] - f["lost"], f


def test_hot_reload_under_load_swaps_good_and_rejects_corrupt(
    model_dir: Path, tmp_path: Path
) -> None:
    f = rel.hot_reload(model_dir, tmp_path)
    assert [s["ok"] for s in f["steps"]] == [True] * 5, f["steps"]
    assert f["ok"] > 0 and f["failed"] == f["lost"] == f["refused"] == 0, f


def test_scorer_on_full_disk_fails_cleanly(model_dir: Path, tmp_path: Path) -> None:
    f = rel.scorer_disk_full(model_dir, tmp_path, rows=50_000)
    if "skipped" in f:
        pytest.skip(f["skipped"])
    assert f["exit_code"] == 1, f
    assert f["files_left"] == [], f  # no partial output, no temp file
    assert f["status_line"].get("status") == "error", f
    assert not f["traceback"], f
