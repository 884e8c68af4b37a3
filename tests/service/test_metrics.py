"""The request path's metric recorders: what a scrape reads equals plain prometheus-client."""

from __future__ import annotations

import threading

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from service import metrics

BUCKETS = (0.001, 0.01, 0.1, 1.0)
# Bounds themselves (observe() counts a value equal to a bound in that bucket), values between,
# beyond the last bound, and the odd ones a latency never is but a bug could produce.
VALUES = [0.0, 0.001, 0.0010001, 0.005, 0.01, 0.5, 1.0, 7.0, -1.0, float("inf")]


def _pair(kind: type, name: str, **kwargs: object) -> tuple[CollectorRegistry, object, object]:
    """A plain and a deferred child of two identical metrics in one private registry."""
    registry = CollectorRegistry()
    plain = kind(f"{name}_plain", "doc", ["model"], registry=registry, **kwargs)
    deferred = kind(f"{name}_deferred", "doc", ["model"], registry=registry, **kwargs)
    return registry, plain.labels(model="m"), deferred.labels(model="m")


def _lines(registry: CollectorRegistry, name: str) -> list[str]:
    """The samples of metric ``name``, renamed to ``x`` so two metrics compare."""
    return sorted(
        line.replace(name, "x") for line in generate_latest(registry).decode().splitlines()
        if line.startswith(name) and "_created" not in line
    )  # fmt: skip


def test_a_deferred_histogram_reads_exactly_as_plain_observe_after_a_flush() -> None:
    registry, plain, child = _pair(Histogram, "t_hist", buckets=BUCKETS)
    recorder = metrics.deferred_histogram(child)
    for value in VALUES:
        plain.observe(value)  # type: ignore[attr-defined]
        recorder.observe(value)
    assert "x_count 0.0" in " ".join(_lines(registry, "t_hist_deferred")).replace(
        '{model="m"}', ""
    )  # recorded, not yet in the metric
    metrics.flush()
    plain_lines = _lines(registry, "t_hist_plain")
    assert _lines(registry, "t_hist_deferred") == plain_lines
    assert len(plain_lines) == len(BUCKETS) + 3  # the buckets, +Inf, count and sum


def test_a_deferred_counter_adds_up_and_one_child_has_one_recorder() -> None:
    _, plain, child = _pair(Counter, "t_count")
    recorder = metrics.deferred_counter(child)
    assert metrics.deferred_counter(child) is recorder
    for amount in (1, 2, 0.5):
        recorder.inc(amount)
        plain.inc(amount)  # type: ignore[attr-defined]
    metrics.flush()
    metrics.flush()  # a second flush adds nothing
    assert child._value.get() == plain._value.get() == 3.5  # type: ignore[attr-defined]


def test_reading_the_default_registry_flushes_first() -> None:
    from prometheus_client import REGISTRY

    labels = {"model": "t_flush", "protocol": "test", "version": "1"}
    recorder = metrics.deferred_counter(metrics.PREDICTED_POINTS.labels(**labels))
    before = REGISTRY.get_sample_value("xor_dnn_predicted_points_total", labels) or 0.0
    recorder.inc(7)
    assert REGISTRY.get_sample_value("xor_dnn_predicted_points_total", labels) == before + 7


def test_values_recorded_during_flushes_from_another_thread_are_never_lost_or_doubled() -> None:
    registry, _, child = _pair(Histogram, "t_race", buckets=BUCKETS)
    recorder = metrics.deferred_histogram(child)
    stop = threading.Event()

    def flush_often() -> None:
        while not stop.is_set():
            metrics.flush()

    flusher = threading.Thread(target=flush_often)
    flusher.start()
    try:
        for i in range(200_000):
            recorder.observe(0.005 if i % 2 else 0.5)
    finally:
        stop.set()
        flusher.join()
    metrics.flush()
    lines = dict(
        line.rsplit(" ", 1) for line in generate_latest(registry).decode().splitlines()
        if line.startswith("t_race_deferred") and "_created" not in line
    )  # fmt: skip
    assert float(lines['t_race_deferred_count{model="m"}']) == 200_000
    assert float(lines['t_race_deferred_bucket{le="0.01",model="m"}']) == 100_000
    assert float(lines['t_race_deferred_sum{model="m"}']) == pytest.approx(100_000 * 0.505)


def test_in_multiprocess_mode_the_child_itself_records(monkeypatch: pytest.MonkeyPatch) -> None:
    # Another worker answering a scrape reads this worker's files: they must be current.
    monkeypatch.setenv(metrics.MULTIPROC_ENV, "/nonexistent")
    _, _, child = _pair(Counter, "t_multi")
    assert metrics.deferred_counter(child) is child
    assert metrics.deferred_histogram(child) is child
