"""The micro-batcher alone: a fake model in its thread, no FastAPI, no TensorFlow."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Hashable
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from service import batcher as batcher_mod
from service.batcher import Batcher, BatchStats
from service.errors import (
    DeadlineExceeded,
    InvalidInput,
    ModelFailure,
    Overloaded,
    PayloadTooLarge,
    Unavailable,
)

pytestmark = pytest.mark.timeout(30)

POISON = 666.0  # a point with this x makes the fake model raise


class FakeModel:
    """predict(key, pts) = x + 10*y + 1000*key, recorded per call; can be held at a gate.

    The output depends on both the key and each point, so a result that reaches the wrong
    waiter, or ran under the wrong key, cannot pass for a right one.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[Hashable, NDArray[np.float32]]] = []
        self.threads: set[int] = set()
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Semaphore(0)
        self.wrong_shape = False

    def __call__(self, key: Hashable, points: NDArray[np.float32]) -> NDArray[np.float32]:
        self.threads.add(threading.get_ident())
        self.calls.append((key, points.copy()))
        self.entered.release()
        if not self.gate.wait(timeout=20):
            raise RuntimeError("test gate never opened")
        if np.any(points[:, 0] == POISON):
            raise RuntimeError("poisoned batch")
        if self.wrong_shape:
            return np.zeros(points.shape[0] + 1, dtype=np.float32)
        return expected(points, key)

    def hold(self) -> None:
        self.gate.clear()

    def release(self) -> None:
        self.gate.set()

    async def wait_entered(self, timeout: float = 5.0) -> None:
        """Block (without blocking the loop) until the model thread has entered a call."""
        ok = await asyncio.to_thread(self.entered.acquire, True, timeout)
        assert ok, "the model was never called"

    @property
    def batch_sizes(self) -> list[int]:
        return [int(p.shape[0]) for _, p in self.calls]


def expected(points: NDArray[np.float32], key: Hashable = None) -> NDArray[np.float32]:
    offset = 1000.0 * float(key) if isinstance(key, int) else 0.0
    return (points[:, 0] + 10.0 * points[:, 1] + offset).astype(np.float32)


def pts(*xs: float, y: float = 0.0) -> NDArray[np.float32]:
    return np.array([[x, y] for x in xs], dtype=np.float32)


async def until(cond: Callable[[], bool], timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not met in time"
        await asyncio.sleep(0.001)


@pytest.fixture
def model() -> FakeModel:
    return FakeModel()


@pytest.fixture
async def make_batcher(model: FakeModel) -> AsyncIterator[Callable[..., Any]]:
    made: list[Batcher] = []

    async def make(**kwargs: Any) -> Batcher:
        kwargs.setdefault("max_wait_s", 0.0)
        b = Batcher(model, **kwargs)
        await b.start()
        made.append(b)
        return b

    yield make
    model.release()
    for b in made:
        await b.stop(timeout=5)


async def start_blocking_call(model: FakeModel, batcher: Batcher) -> asyncio.Task[Any]:
    """Occupy the model thread with one request so the next submits queue up behind it."""
    model.hold()
    first = asyncio.create_task(batcher.submit(pts(-1.0)))
    await model.wait_entered()
    return first


def spawn(batcher: Batcher, points: NDArray[np.float32], **kw: Any) -> asyncio.Task[Any]:
    return asyncio.create_task(batcher.submit(points, **kw))


async def after_a_merged_batch(model: FakeModel, batcher: Batcher) -> None:
    """Run a batch that merged two requests: the batcher has seen concurrency, so the next
    batch lingers."""
    first = await start_blocking_call(model, batcher)
    queued = [spawn(batcher, pts(1.0)), spawn(batcher, pts(2.0))]
    await until(lambda: batcher.queued_requests == 2)
    model.release()
    await asyncio.gather(first, *queued)


# -- batch formation -----------------------------------------------------------------------


async def test_batches_are_capped_at_max_batch_size_in_points(
    model: FakeModel, make_batcher: Any
) -> None:
    batcher = await make_batcher(max_batch_size=4)
    first = await start_blocking_call(model, batcher)
    tasks = [spawn(batcher, pts(float(i))) for i in range(9)]
    await until(lambda: batcher.queued_requests == 9)
    assert batcher.queued_points == 9
    model.release()
    results = await asyncio.gather(*tasks)
    await first
    # One call while the rest queued, then the queue drained in capped batches, FIFO.
    assert model.batch_sizes == [1, 4, 4, 1]
    for i, r in enumerate(results):
        np.testing.assert_array_equal(r, expected(pts(float(i))))
    assert batcher.queued_points == 0 and batcher.queued_requests == 0


async def test_multi_point_requests_are_never_split_across_batches(
    model: FakeModel, make_batcher: Any
) -> None:
    batcher = await make_batcher(max_batch_size=5)
    first = await start_blocking_call(model, batcher)
    sizes = [2, 2, 2, 3, 1, 1]
    inputs = [pts(*(float(10 * i + j) for j in range(n)), y=float(i)) for i, n in enumerate(sizes)]
    tasks = [spawn(batcher, p) for p in inputs]
    await until(lambda: batcher.queued_requests == len(sizes))
    model.release()
    results = await asyncio.gather(*tasks)
    await first
    # 2+2 (a third 2 would overflow 5), then 2+3, then 1+1.
    assert model.batch_sizes == [1, 4, 5, 2]
    for p, r in zip(inputs, results, strict=True):
        np.testing.assert_array_equal(r, expected(p))


async def test_lone_request_on_an_idle_model_does_not_wait_for_max_wait(
    model: FakeModel, make_batcher: Any
) -> None:
    batcher = await make_batcher(max_wait_s=30.0)
    t0 = time.monotonic()
    out = await batcher.submit(pts(0.25, y=0.5))
    # Well under the 30 s window: only a bug that lingers would take that long.
    assert time.monotonic() - t0 < 10.0
    np.testing.assert_array_equal(out, expected(pts(0.25, y=0.5)))


async def test_under_concurrency_a_batch_lingers_for_max_wait_to_gather_more(
    model: FakeModel, make_batcher: Any
) -> None:
    stats: list[BatchStats] = []
    # max_wait is long enough that no scheduling delay on a busy machine can split a and b.
    batcher = await make_batcher(max_wait_s=1.0, max_batch_size=64, on_batch=stats.append)
    # A first busy period: the batch after it merges several requests, which marks the
    # traffic as concurrent and turns lingering on.
    first = await start_blocking_call(model, batcher)
    tasks = [spawn(batcher, pts(float(i))) for i in range(3)]
    await until(lambda: batcher.queued_requests == 3)
    model.release()
    await asyncio.gather(first, *tasks)
    assert model.batch_sizes == [1, 3]

    t0 = time.monotonic()
    a = spawn(batcher, pts(1.0))
    await until(lambda: batcher.queued_requests == 1)  # a lingers in the queue
    b = spawn(batcher, pts(2.0))
    ra, rb = await asyncio.gather(a, b)
    elapsed = time.monotonic() - t0
    # Both joined one batch, which ran once the oldest had waited max_wait.
    assert model.batch_sizes[2:] == [2]
    assert stats[-1].queue_wait_seconds[0] >= 0.95 and elapsed < 30.0
    np.testing.assert_array_equal(ra, expected(pts(1.0)))
    np.testing.assert_array_equal(rb, expected(pts(2.0)))


async def test_lingering_stops_as_soon_as_the_batch_is_full(
    model: FakeModel, make_batcher: Any
) -> None:
    batcher = await make_batcher(max_wait_s=60.0, max_batch_size=4)
    first = await start_blocking_call(model, batcher)
    warm = [spawn(batcher, pts(float(i))) for i in range(2)]
    await until(lambda: batcher.queued_requests == 2)
    model.release()
    await asyncio.gather(first, *warm)

    t0 = time.monotonic()
    results = await asyncio.gather(*(batcher.submit(pts(float(i))) for i in range(4)))
    assert time.monotonic() - t0 < 20.0  # not the 60 s window: the 4th point filled the batch
    assert model.batch_sizes[-1] == 4
    assert [float(r[0]) for r in results] == [0.0, 1.0, 2.0, 3.0]


# -- ordering and results ------------------------------------------------------------------


async def test_results_come_back_in_order_to_the_right_waiter(
    model: FakeModel, make_batcher: Any
) -> None:
    batcher = await make_batcher(max_batch_size=16)
    rng = np.random.default_rng(0)
    inputs = [
        rng.uniform(-5, 5, size=(int(rng.integers(1, 9)), 2)).astype(np.float32) for _ in range(200)
    ]
    results = await asyncio.gather(*(batcher.submit(p) for p in inputs))
    for p, r in zip(inputs, results, strict=True):
        assert r.dtype == np.float32 and r.shape == (p.shape[0],)
        np.testing.assert_array_equal(r, expected(p))
    assert sum(model.batch_sizes) == sum(p.shape[0] for p in inputs)
    assert max(model.batch_sizes) <= 16


async def test_predict_runs_in_a_thread_off_the_event_loop(
    model: FakeModel, make_batcher: Any
) -> None:
    batcher = await make_batcher()
    await batcher.submit(pts(1.0))
    await batcher.submit(pts(2.0))
    assert threading.get_ident() not in model.threads
    assert len(model.threads) == 1  # one dedicated model thread


async def test_request_larger_than_max_batch_size_runs_alone(
    model: FakeModel, make_batcher: Any
) -> None:
    batcher = await make_batcher(max_batch_size=4)
    first = await start_blocking_call(model, batcher)
    small_before = spawn(batcher, pts(1.0))
    big_input = pts(*(float(i) for i in range(10)), y=1.0)
    big = spawn(batcher, big_input)
    small_after = spawn(batcher, pts(2.0))
    await until(lambda: batcher.queued_requests == 3)
    model.release()
    r_before, r_big, r_after = await asyncio.gather(small_before, big, small_after)
    await first
    assert model.batch_sizes == [1, 1, 10, 1]
    np.testing.assert_array_equal(r_big, expected(big_input))
    np.testing.assert_array_equal(r_before, expected(pts(1.0)))
    np.testing.assert_array_equal(r_after, expected(pts(2.0)))


async def test_empty_request_returns_empty_without_a_model_call(
    model: FakeModel, make_batcher: Any
) -> None:
    batcher = await make_batcher()
    out = await batcher.submit(np.empty((0, 2), np.float32))
    assert out.shape == (0,) and model.calls == []


@pytest.mark.parametrize("bad", [np.zeros((3,)), np.zeros((2, 3)), np.zeros((1, 2, 2)), "xy"])
async def test_wrong_shape_is_invalid_input_naming_points(make_batcher: Any, bad: Any) -> None:
    batcher = await make_batcher()
    with pytest.raises(InvalidInput, match="points") as info:
        await batcher.submit(bad)
    assert info.value.status_code == 422 and info.value.field == "points"


# -- keys ----------------------------------------------------------------------------------


async def test_a_batch_only_merges_requests_of_the_same_key(
    model: FakeModel, make_batcher: Any
) -> None:
    batcher = await make_batcher(max_batch_size=64)
    first = await start_blocking_call(model, batcher)
    keys = [1, 2, 1, 2, 1, 3]
    inputs = [pts(float(i)) for i in range(len(keys))]
    tasks = [spawn(batcher, p, key=k) for p, k in zip(inputs, keys, strict=True)]
    await until(lambda: batcher.queued_requests == len(keys))
    model.release()
    results = await asyncio.gather(*tasks)
    await first
    per_call = [(k, [float(x) for x in p[:, 0]]) for k, p in model.calls[1:]]
    # Oldest key first; each batch takes every queued request of its key, in order.
    assert per_call == [(1, [0.0, 2.0, 4.0]), (2, [1.0, 3.0]), (3, [5.0])]
    for p, k, r in zip(inputs, keys, results, strict=True):
        np.testing.assert_array_equal(r, expected(p, k))


# -- bound and refusal ---------------------------------------------------------------------


async def test_full_queue_refuses_at_once_with_retry_after(
    model: FakeModel, make_batcher: Any
) -> None:
    batcher = await make_batcher(max_queue_points=5, retry_after_s=2.5)
    first = await start_blocking_call(model, batcher)
    queued = [spawn(batcher, pts(float(i))) for i in range(3)]
    two = spawn(batcher, pts(3.0, 4.0))
    await until(lambda: batcher.queued_points == 5)

    t0 = time.monotonic()
    with pytest.raises(Overloaded) as info:
        await batcher.submit(pts(9.0))
    assert time.monotonic() - t0 < 10.0  # refused at once, not after waiting for room
    err = info.value
    assert err.status_code == 429 and err.retry_after == 2.5
    assert "max_queue_points=5" in err.message
    assert batcher.queued_points == 5 and batcher.queued_requests == 4

    model.release()
    await asyncio.gather(first, two, *queued)
    # Once drained, the queue takes work again.
    np.testing.assert_array_equal(await batcher.submit(pts(7.0)), expected(pts(7.0)))


async def test_a_request_bigger_than_the_whole_queue_is_payload_too_large(
    make_batcher: Any,
) -> None:
    batcher = await make_batcher(max_queue_points=4)
    with pytest.raises(PayloadTooLarge, match="max_queue_points=4"):
        await batcher.submit(np.zeros((5, 2), np.float32))


# -- deadlines -----------------------------------------------------------------------------


async def test_deadline_passing_in_the_queue_raises_and_frees_the_slot(
    model: FakeModel, make_batcher: Any
) -> None:
    batcher = await make_batcher()
    first = await start_blocking_call(model, batcher)
    keep = spawn(batcher, pts(1.0))
    with pytest.raises(DeadlineExceeded) as info:
        await batcher.submit(pts(2.0), deadline=time.monotonic() + 0.05)
    assert info.value.status_code == 504
    assert batcher.queued_requests == 1 and batcher.queued_points == 1
    model.release()
    await asyncio.gather(first, keep)
    sent = [float(x) for _, p in model.calls for x in p[:, 0]]
    assert 2.0 not in sent  # the expired request never reached the model


async def test_deadline_already_past_is_refused_without_queueing(
    model: FakeModel, make_batcher: Any
) -> None:
    batcher = await make_batcher()
    with pytest.raises(DeadlineExceeded):
        await batcher.submit(pts(1.0), deadline=time.monotonic() - 1)
    assert model.calls == [] and batcher.queued_requests == 0


async def test_deadline_passing_while_the_batch_runs_fails_only_that_request(
    model: FakeModel, make_batcher: Any
) -> None:
    batcher = await make_batcher()
    model.hold()
    short = spawn(batcher, pts(1.0), deadline=time.monotonic() + 0.3)
    patient = spawn(batcher, pts(2.0))
    await model.wait_entered()  # both queued in the same loop tick: one batch, held in the model
    assert model.batch_sizes == [2]
    with pytest.raises(DeadlineExceeded, match="running batch"):
        await short
    model.release()
    np.testing.assert_array_equal(await patient, expected(pts(2.0)))


# -- cancellation --------------------------------------------------------------------------


async def test_cancelled_waiter_leaves_the_queue_and_is_skipped(
    model: FakeModel, make_batcher: Any
) -> None:
    batcher = await make_batcher()
    first = await start_blocking_call(model, batcher)
    a, gone, c = (spawn(batcher, pts(x)) for x in (1.0, 2.0, 3.0))
    await until(lambda: batcher.queued_requests == 3)
    gone.cancel()
    await until(lambda: batcher.queued_requests == 2)
    assert batcher.queued_points == 2
    model.release()
    ra, rc = await asyncio.gather(a, c)
    await first
    assert gone.cancelled()
    assert [float(x) for x in model.calls[1][1][:, 0]] == [1.0, 3.0]
    np.testing.assert_array_equal(ra, expected(pts(1.0)))
    np.testing.assert_array_equal(rc, expected(pts(3.0)))


async def test_cancelling_a_waiter_of_a_running_batch_does_not_break_the_others(
    model: FakeModel, make_batcher: Any
) -> None:
    batcher = await make_batcher()
    model.hold()
    tasks = [spawn(batcher, pts(float(x))) for x in range(4)]
    await model.wait_entered()
    assert model.batch_sizes == [4]  # the batch of 4 is now in the model
    tasks[1].cancel()
    model.release()
    results = await asyncio.gather(tasks[0], tasks[2], tasks[3])
    for x, r in zip((0.0, 2.0, 3.0), results, strict=True):
        np.testing.assert_array_equal(r, expected(pts(x)))
    assert tasks[1].cancelled()
    # The batcher keeps serving afterwards.
    np.testing.assert_array_equal(await batcher.submit(pts(5.0)), expected(pts(5.0)))


async def test_many_clients_leaving_at_random_never_affect_the_rest(
    model: FakeModel, make_batcher: Any
) -> None:
    batcher = await make_batcher(max_batch_size=8)
    rng = np.random.default_rng(1)
    inputs = [pts(float(i)) for i in range(120)]
    tasks = [spawn(batcher, p) for p in inputs]
    await asyncio.sleep(0)
    doomed = set(rng.choice(len(tasks), size=40, replace=False).tolist())
    for i in doomed:
        tasks[i].cancel()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    for i, (p, out) in enumerate(zip(inputs, outcomes, strict=True)):
        if i in doomed and isinstance(out, asyncio.CancelledError):
            continue
        assert isinstance(out, np.ndarray), f"request {i}: {out!r}"
        np.testing.assert_array_equal(out, expected(p))
    await until(lambda: batcher.queued_points == 0)


# -- model errors --------------------------------------------------------------------------


async def test_model_error_fails_only_that_batch_and_the_loop_carries_on(
    model: FakeModel, make_batcher: Any
) -> None:
    stats: list[BatchStats] = []
    batcher = await make_batcher(max_batch_size=3, on_batch=stats.append)
    first = await start_blocking_call(model, batcher)
    # Batches of 3: [0, 1, POISON] fails; [3, 4, 5] must still succeed.
    tasks = [spawn(batcher, pts(x)) for x in (0.0, 1.0, POISON, 3.0, 4.0, 5.0)]
    await until(lambda: batcher.queued_requests == 6)
    model.release()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    await first
    for out in outcomes[:3]:
        assert isinstance(out, ModelFailure) and out.status_code == 500
        assert "RuntimeError" in out.message and "3 points" in out.message
    assert outcomes[0] is not outcomes[1]  # each waiter gets its own exception object
    for x, out in zip((3.0, 4.0, 5.0), outcomes[3:], strict=True):
        assert isinstance(out, np.ndarray)
        np.testing.assert_array_equal(out, expected(pts(x)))
    assert [s.failed for s in stats] == [False, True, False]
    np.testing.assert_array_equal(await batcher.submit(pts(8.0)), expected(pts(8.0)))


async def test_model_returning_the_wrong_number_of_values_is_a_model_failure(
    model: FakeModel, make_batcher: Any
) -> None:
    batcher = await make_batcher()
    model.wrong_shape = True
    with pytest.raises(ModelFailure, match="ValueError"):
        await batcher.submit(pts(1.0, 2.0))
    model.wrong_shape = False
    np.testing.assert_array_equal(await batcher.submit(pts(1.0)), expected(pts(1.0)))


async def test_a_failing_on_batch_callback_never_fails_requests(
    model: FakeModel, make_batcher: Any
) -> None:
    def broken(_: BatchStats) -> None:
        raise RuntimeError("metrics bug")

    batcher = await make_batcher(on_batch=broken)
    np.testing.assert_array_equal(await batcher.submit(pts(1.0)), expected(pts(1.0)))
    np.testing.assert_array_equal(await batcher.submit(pts(2.0)), expected(pts(2.0)))


async def test_on_batch_reports_each_call(model: FakeModel, make_batcher: Any) -> None:
    stats: list[BatchStats] = []
    batcher = await make_batcher(on_batch=stats.append)
    first = await start_blocking_call(model, batcher)
    tasks = [spawn(batcher, pts(1.0, 2.0), key=7), spawn(batcher, pts(3.0), key=7)]
    await until(lambda: batcher.queued_requests == 2)
    await asyncio.sleep(0.02)
    model.release()
    await asyncio.gather(first, *tasks)
    s = stats[-1]
    assert (s.key, s.requests, s.points, s.failed) == (7, 2, 3, False)
    assert len(s.queue_wait_seconds) == 2 and all(w >= 0.015 for w in s.queue_wait_seconds)
    assert s.model_seconds >= 0


# -- lifecycle -----------------------------------------------------------------------------


async def test_submit_before_start_is_unavailable(model: FakeModel) -> None:
    with pytest.raises(Unavailable):
        await Batcher(model).submit(pts(1.0))


async def test_stop_drains_queued_work_then_refuses_new_submits(
    model: FakeModel, make_batcher: Any
) -> None:
    batcher = await make_batcher(max_batch_size=2)
    first = await start_blocking_call(model, batcher)
    tasks = [spawn(batcher, pts(float(x))) for x in range(5)]
    await until(lambda: batcher.queued_requests == 5)
    stopping = asyncio.create_task(batcher.stop(timeout=10))
    await asyncio.sleep(0.01)
    with pytest.raises(Unavailable, match="shutting down"):
        await batcher.submit(pts(9.0))
    model.release()
    results = await asyncio.gather(*tasks)
    await asyncio.gather(first, stopping)
    for x, r in enumerate(results):
        np.testing.assert_array_equal(r, expected(pts(float(x))))
    assert model.batch_sizes == [1, 2, 2, 1]
    with pytest.raises(Unavailable):
        await batcher.submit(pts(1.0))
    await batcher.stop(timeout=1)  # idempotent
    # The model thread ends too: nothing is left running after a clean stop.
    await until(lambda: not [t for t in threading.enumerate() if t.ident in model.threads])


async def test_stop_timeout_fails_what_is_left_and_returns(
    model: FakeModel, make_batcher: Any
) -> None:
    batcher = await make_batcher()
    first = await start_blocking_call(model, batcher)  # the model hangs until released
    queued = spawn(batcher, pts(1.0))
    await until(lambda: batcher.queued_requests == 1)
    t0 = time.monotonic()
    await batcher.stop(timeout=0.2)
    assert time.monotonic() - t0 < 20.0  # the hung model call is not waited for
    for task in (first, queued):
        with pytest.raises(Unavailable):
            await task
    assert batcher.queued_requests == 0 and batcher.queued_points == 0
    model.release()


async def test_a_stopped_batcher_cannot_restart(make_batcher: Any) -> None:
    batcher = await make_batcher()
    await batcher.stop(timeout=1)
    with pytest.raises(RuntimeError, match="cannot be restarted"):
        await batcher.start()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_batch_size": 0},
        {"max_wait_s": -1.0},
        {"max_queue_points": 0},
        {"retry_after_s": -1.0},
    ],
)
def test_bad_settings_are_rejected_by_name(model: FakeModel, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        Batcher(model, **kwargs)


# -- short calls inline --------------------------------------------------------------------


async def test_batches_marked_short_run_on_the_event_loop_and_the_rest_in_the_thread(
    model: FakeModel, make_batcher: Any
) -> None:
    # Batches of up to 2 points on key 1 are "short calls"; anything else goes to the thread.
    marked: list[tuple[Hashable, int]] = []

    def runs_inline(key: Hashable, n: int) -> bool:
        marked.append((key, n))
        return key == 1 and n <= 2

    batcher = await make_batcher(runs_inline=runs_inline)
    loop_thread = threading.get_ident()
    np.testing.assert_array_equal(
        await batcher.submit(pts(1.0, 2.0), key=1), expected(pts(1, 2), 1)
    )
    assert model.threads == {loop_thread}
    np.testing.assert_array_equal(
        await batcher.submit(pts(1, 2, 3), key=1), expected(pts(1, 2, 3), 1)
    )
    np.testing.assert_array_equal(await batcher.submit(pts(4.0), key=2), expected(pts(4.0), 2))
    assert len(model.threads) == 2 and loop_thread in model.threads
    # Asked when a request is submitted (an idle batcher answers a short call at once) and
    # again for the batch a queued one lands in.
    assert set(marked) == {(1, 2), (1, 3), (2, 1)}


async def test_an_idle_batcher_answers_a_short_call_at_once(
    model: FakeModel, make_batcher: Any
) -> None:
    stats: list[BatchStats] = []
    batcher = await make_batcher(runs_inline=lambda key, n: True, on_batch=stats.append)
    # No await point is reached: the call ran in submit itself, not in the collect loop.
    coro = batcher.submit(pts(1.0, 2.0))
    with pytest.raises(StopIteration) as done:
        coro.send(None)
    np.testing.assert_array_equal(done.value.value, expected(pts(1.0, 2.0)))
    assert [(s.requests, s.points, s.queue_wait_seconds) for s in stats] == [(1, 2, (0.0,))]
    assert batcher.idle and batcher.queued_requests == 0


async def test_a_burst_in_one_loop_turn_still_merges_into_one_batch(
    model: FakeModel, make_batcher: Any
) -> None:
    stats: list[BatchStats] = []
    batcher = await make_batcher(runs_inline=lambda key, n: True, on_batch=stats.append)
    # Five requests started in the same turn of the event loop (as uvicorn starts the requests
    # read from many connections at once): the first is answered at once, the rest queue and
    # run as one batch in the next turn.
    results = await asyncio.gather(*(batcher.submit(pts(float(i))) for i in range(5)))
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result, expected(pts(float(i))))
    assert [s.requests for s in stats] == [1, 4]
    # The next turn starts afresh: a lone request is answered at once again.
    await asyncio.sleep(0)
    await batcher.submit(pts(9.0))
    assert [s.requests for s in stats] == [1, 4, 1]


async def test_while_requests_keep_arriving_together_short_calls_queue_and_merge(
    model: FakeModel, make_batcher: Any
) -> None:
    stats: list[BatchStats] = []
    batcher = await make_batcher(runs_inline=lambda key, n: True, on_batch=stats.append)

    async def burst() -> None:
        await asyncio.gather(*(batcher.submit(pts(float(i))) for i in range(5)))
        await asyncio.sleep(0)

    # Bursts merge 4 requests behind the one answered at once, until queueing has shown it
    # merges requests: then the whole burst queues and runs as one batch.
    for _ in range(10):
        await burst()
        if stats[-1].requests == 5:
            break
    assert stats[-1].requests == 5, [s.requests for s in stats]
    # Lone requests then queue too, and merge nothing: once the recent batches average near
    # one request, a short call is answered at once again.
    for _ in range(100):
        coro = batcher.submit(pts(1.0))
        try:
            coro.send(None)
        except StopIteration:
            break  # answered without waiting for the collect loop
        coro.close()
        await batcher.submit(pts(1.0))
        await asyncio.sleep(0)
    else:
        raise AssertionError("short calls never went back to being answered at once")


async def test_a_short_call_waits_its_turn_behind_a_batch_in_the_thread(
    model: FakeModel, make_batcher: Any
) -> None:
    # Key 2 is slow (the thread), key 1 short: a key-1 request submitted while a key-2 batch
    # runs queues behind it instead of overtaking the queue.
    stats: list[BatchStats] = []
    batcher = await make_batcher(runs_inline=lambda key, n: key == 1, on_batch=stats.append)
    model.hold()
    slow = asyncio.ensure_future(batcher.submit(pts(5.0), key=2))
    await model.wait_entered()
    quick = asyncio.ensure_future(batcher.submit(pts(6.0), key=1))
    await asyncio.sleep(0.05)
    assert not quick.done() and batcher.queued_requests == 1
    model.release()
    np.testing.assert_array_equal(await quick, expected(pts(6.0), 1))
    np.testing.assert_array_equal(await slow, expected(pts(5.0), 2))
    assert [(s.key, s.requests) for s in stats] == [(2, 1), (1, 1)]


async def test_an_inline_batch_that_fails_fails_only_its_requests(
    model: FakeModel, make_batcher: Any
) -> None:
    stats: list[BatchStats] = []
    batcher = await make_batcher(runs_inline=lambda key, n: True, on_batch=stats.append)
    with pytest.raises(ModelFailure, match="RuntimeError"):
        await batcher.submit(pts(POISON))
    np.testing.assert_array_equal(await batcher.submit(pts(3.0)), expected(pts(3.0)))
    assert [s.failed for s in stats] == [True, False]
    assert all(s.model_seconds >= 0 for s in stats)


# -- lingering for calls that arrive one per loop turn (gRPC) -------------------------------
async def short_call_batcher(make_batcher: Any, **kw: Any) -> tuple[Batcher, list[BatchStats]]:
    """A batcher whose every call is short (runs inline), and the stats of its batches."""
    stats: list[BatchStats] = []
    batcher = await make_batcher(runs_inline=lambda key, n: True, on_batch=stats.append, **kw)
    return batcher, stats


async def one_call_per_turn(
    batcher: Batcher, calls: int, in_flight: int, **kw: Any
) -> list[NDArray[np.float32]]:
    """Submit ``calls`` single-point requests, at most one per event-loop turn and at most
    ``in_flight`` at a time, as grpc.aio hands a server its calls; their results in order."""
    tasks: list[asyncio.Task[Any]] = []
    for i in range(calls):
        while sum(not t.done() for t in tasks) >= in_flight:
            await asyncio.sleep(0)
        tasks.append(spawn(batcher, pts(float(i)), **kw))
        await asyncio.sleep(0)
    return await asyncio.gather(*tasks)


async def test_calls_arriving_one_per_turn_never_merge_without_a_wait(
    model: FakeModel, make_batcher: Any
) -> None:
    batcher, stats = await short_call_batcher(make_batcher, max_batch_size=8)
    results = await one_call_per_turn(batcher, batcher_mod.PROBE_EVERY * 2, in_flight=8)
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result, expected(pts(float(i))))
    # Each call is answered at once, in the turn it arrives: nothing ever waits for another.
    assert {s.requests for s in stats} == {1}
    assert all(s.queue_wait_seconds == (0.0,) for s in stats)


async def test_a_probe_finds_concurrent_calls_and_they_merge_while_they_keep_coming(
    model: FakeModel, make_batcher: Any
) -> None:
    # A batch of 8 points is full: it runs without waiting out the linger (only the last,
    # partial one waits it out).
    batcher, stats = await short_call_batcher(make_batcher, max_batch_size=8)
    calls = batcher_mod.PROBE_EVERY + 200
    results = await one_call_per_turn(batcher, calls, in_flight=8, max_wait_s=1.0)
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result, expected(pts(float(i))))
    sizes = [s.requests for s in stats]
    # Answered at once until the probe (the PROBE_EVERY-th call) lingered and others joined
    # it; from then on the calls queue and merge into full batches.
    first_merged = next(i for i, n in enumerate(sizes) if n > 1)
    assert first_merged == batcher_mod.PROBE_EVERY - 1, sizes[:300]
    assert sizes[first_merged] == 8
    assert sizes[first_merged:-1].count(8) >= len(sizes[first_merged:-1]) - 2, sizes
    assert sum(sizes) == calls


async def test_a_lone_caller_pays_one_wait_per_probe_and_after_concurrency_ends(
    model: FakeModel, make_batcher: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batcher_mod, "PROBE_EVERY", 20)
    batcher, stats = await short_call_batcher(make_batcher, max_batch_size=4)
    wait = 0.5

    async def lone(calls: int) -> list[float]:
        """One caller, one call at a time: the queue wait of each of its calls."""
        first = len(stats)
        for i in range(calls):
            await batcher.submit(pts(float(i)), max_wait_s=wait)
            await asyncio.sleep(0)
        return [s.queue_wait_seconds[0] for s in stats[first:]]

    waits = await lone(40)
    # Calls 20 and 40 were probes: each waited out the linger alone; the others not at all.
    assert [i for i, w in enumerate(waits) if w >= wait] == [19, 39]
    assert all(w == 0.0 for i, w in enumerate(waits) if i not in (19, 39))
    # Concurrent callers merge (the probe showed it) ...
    await one_call_per_turn(batcher, 60, in_flight=4, max_wait_s=wait)
    assert stats[-2].requests == 4
    # ... and once they are gone a lone caller waits once more, not on every call.
    waits = await lone(10)
    assert sum(w >= wait for w in waits) <= 1, waits
    assert all(s.requests == 1 for s in stats[-10:])


async def test_the_oldest_request_of_a_batch_says_how_long_it_lingers(
    model: FakeModel, make_batcher: Any
) -> None:
    stats: list[BatchStats] = []
    batcher = await make_batcher(max_wait_s=30.0, max_batch_size=64, on_batch=stats.append)
    await after_a_merged_batch(model, batcher)
    # A request that may not wait heads the next batch: it runs at once despite the
    # batcher's 30 s default, though the batcher lingers after a merged batch.
    started = time.monotonic()
    await batcher.submit(pts(3.0), max_wait_s=0.0)
    assert time.monotonic() - started < 20
    assert stats[-1].requests == 1


async def test_a_linger_ends_once_as_many_callers_as_recently_seen_are_in(
    model: FakeModel, make_batcher: Any
) -> None:
    batcher, stats = await short_call_batcher(make_batcher, max_batch_size=1024)
    wait = 3.0
    # PROBE_EVERY - 1 calls answered at once, a probe that waits out its linger with the 8
    # callers there are, then 20 batches that run as soon as the 8 are in again.
    calls = batcher_mod.PROBE_EVERY - 1 + 8 * 21
    await one_call_per_turn(batcher, calls, in_flight=8, max_wait_s=wait)
    queued = [s for s in stats if s.requests > 1]
    assert [s.requests for s in queued] == [8] * 21
    assert max(queued[0].queue_wait_seconds) >= wait  # the probe waited its time out
    assert all(max(s.queue_wait_seconds) < wait for s in queued[1:])  # the rest did not


async def test_a_linger_never_costs_a_request_its_deadline(
    model: FakeModel, make_batcher: Any
) -> None:
    stats: list[BatchStats] = []
    batcher = await make_batcher(max_wait_s=30.0, max_batch_size=64, on_batch=stats.append)
    await after_a_merged_batch(model, batcher)  # the next batch lingers 30 s
    lingering = spawn(batcher, pts(3.0))
    await until(lambda: batcher._lingering is not None)
    # A request with 20 s left joins: the batch runs now, not after the 30 s linger, and
    # both are answered (not DeadlineExceeded).
    hurried = spawn(batcher, pts(4.0), deadline=time.monotonic() + 20)
    results = await asyncio.gather(lingering, hurried)
    np.testing.assert_array_equal(np.concatenate(results), expected(pts(3.0, 4.0)))
    assert stats[-1].requests == 2 and max(stats[-1].queue_wait_seconds) < 20
    # Its own deadline bounds a head's linger too: half of 20 s, not 30 s.
    queued = [spawn(batcher, pts(5.0), deadline=time.monotonic() + 20)]
    await until(lambda: batcher._lingering is not None)
    assert batcher._lingering[2] - time.monotonic() < 10.5
    queued.append(spawn(batcher, pts(6.0), max_wait_s=0.0))  # ends it: may not wait
    await asyncio.gather(*queued)
