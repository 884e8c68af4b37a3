"""The micro-batcher: merges concurrent requests into one model call; asyncio + numpy only.

How a request travels::

    submit(points, key, deadline)          the request handler, on the event loop
      -> bounded queue (in points)          full: Overloaded at once, never a slow time-out
      -> collect loop                       one batch = oldest live request + the requests
                                            queued behind it with the same key, up to
                                            max_batch_size points
      -> model thread                       predict(key, (n, 2) float32) -> (n,) float32
                                            (on the event loop instead when runs_inline
                                            says the call is shorter than a hand-off)
      -> results sliced back in order       each waiter's future gets its own slice

Batch semantics (the rest of this module's docstrings rely on them):

* **No idle wait.** There is one model thread. While it runs a batch, new requests queue; the
  moment it is free the loop takes everything queued (up to ``max_batch_size``). So under
  load batches grow by themselves and a lone request on an idle model starts at once.
* **Linger only if asked, and only under concurrency.** ``max_wait_s`` (default 0; ``submit``
  can ask for another per request) lets a batch wait for more requests, measured from the
  arrival of its oldest request (so a request that already waited behind a busy model never
  waits again); the batch's oldest request says how long. It applies only when the previous
  batch merged several requests, so a single client does not pay it. For this model on CPU
  the default 0 measured best for HTTP (docs/batching.md): the HTTP layer, not the model, is
  the bottleneck, and HTTP requests merge by themselves (below). gRPC calls do not: grpc.aio
  hands the server one call per loop turn, so they merge only if they wait (docs/grpc.md).
* **Concurrency is probed.** A request that may linger but finds the batcher idle is answered
  at once (below), so nothing would ever show that others are coming. One such request in
  :data:`PROBE_EVERY` is queued and lingers instead: if others join it, batches merge and
  lingering goes on while they keep merging; a single client pays one wait per
  :data:`PROBE_EVERY` requests.
* **A linger ends once the usual callers are in.** A lingering batch (not a probe) runs as
  soon as the queue holds as many requests as the largest of the last
  :data:`RECENT_BATCHES` batches: with 8 closed-loop callers it runs when the eighth arrives
  instead of waiting out its time for a ninth that does not exist. The largest, not the
  last: the last would ratchet down (a batch cut short by its time sets a lower target).
* **Keys never mix.** A batch only holds requests with the same ``key`` (the model version);
  requests with another key keep their place for a later batch.
* **Oversized requests** (more points than ``max_batch_size``) run alone in one call.
* **Short calls run inline.** ``runs_inline(key, n)`` (optional) marks batches whose model
  call is known to take microseconds (the service: LiteRT, measured at load, see
  ``LoadedModel.inline_max_points``). Those run on the event loop: handing them to the model
  thread (queue put, thread wake-up, GIL hand-offs, a call back into the loop) costs several
  times the call itself. Every other batch, and any model whose call can be slow or hang, runs
  in the model thread, so it never holds the event loop up.
* **An idle batcher answers a short call at once when queueing would merge nothing.** When
  nothing is queued or running, the request's call is short, and the recent queued batches
  merged fewer than :data:`ANSWER_AT_ONCE_BELOW` requests on average, ``submit`` runs the
  call right away as a batch of one, in the caller: no queue entry, no future, no turn of
  the collect loop (which cost the request more than its call). Only the first such request
  of an event-loop turn: the others of that turn queue and merge, so a burst of arrivals
  (HTTP requests read from many connections in one turn) still makes one batch, and keeps
  the average up while bursts keep coming. gRPC is the case this serves: grpc.aio hands
  the server one call per turn, so queueing its calls merged 1.08 requests per batch
  without a linger (with one, see above).
* **Errors stay local.** If ``predict`` raises, every request of that batch fails with
  :class:`~service.errors.ModelFailure`; the loop carries on with the next batch.
* **Clients that left are skipped.** A waiter that is cancelled (client disconnected, deadline
  passed) leaves the queue at once; if its batch is already running, its slice is dropped and
  the other waiters of that batch get theirs.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from service.deadlines import DeadlineSweeper
from service.errors import (
    DeadlineExceeded,
    InvalidInput,
    ModelFailure,
    Overloaded,
    PayloadTooLarge,
    ServiceError,
    Unavailable,
)

log = logging.getLogger(__name__)

PredictFn = Callable[[Hashable, NDArray[np.float32]], NDArray[Any]]

DEADLINE_TICK_S = 0.01
"""How often the waiting requests' deadlines are checked: a request fails at most this late."""

ANSWER_AT_ONCE_BELOW = 1.5
"""An idle batcher answers a short call at once while its queued batches have recently merged
fewer requests than this on average (queueing would merge nothing: it only costs)."""
MERGED_SMOOTHING = 0.1
"""Weight of the latest queued batch in that average."""
RECENT_BATCHES = 16
"""How many recent batches the early end of a linger looks back on."""
PROBE_EVERY = 256
"""One in this many requests that may linger, answered at once otherwise, is queued to see
whether others join it (concurrency that answering at once would hide)."""


class BatchStats(NamedTuple):
    """What one model call did; reported once per call through ``on_batch``."""

    key: Hashable
    """The model version the batch ran on."""
    requests: int
    """Requests merged into this call."""
    points: int
    """Points in this call."""
    queue_wait_seconds: tuple[float, ...]
    """Per request: from ``submit`` to the start of the model call."""
    model_seconds: float
    """Duration of the predict call, measured in the model thread."""
    failed: bool
    """True when the predict call raised or returned a wrong shape."""


class _Request:
    __slots__ = ("enqueued", "future", "key", "points", "probe", "queued", "size", "wait")

    def __init__(
        self,
        points: NDArray[np.float32],
        key: Hashable,
        future: asyncio.Future[NDArray[np.float32]],
        enqueued: float,
        wait: float,
        probe: bool,
    ) -> None:
        self.points = points
        self.key = key
        self.future = future
        self.enqueued = enqueued
        self.wait = wait
        """How long a batch this request heads may linger (seconds)."""
        self.probe = probe
        """Queued to see whether others join it: its batch lingers even after a lone one."""
        self.queued = True
        self.size = int(points.shape[0])


class Batcher:
    """Merge concurrent ``submit`` calls into batched ``predict`` calls run in one thread.

    Usage::

        batcher = Batcher(lambda version, pts: models[version].predict(pts), max_batch_size=1024)
        await batcher.start()
        probs = await batcher.submit(np.array([[0.5, -0.5]], np.float32), key=3,
                                     deadline=time.monotonic() + 5)
        await batcher.stop(timeout=20)     # refuses new work, finishes what is queued

    ``predict(key, points)`` gets a float32 ``(n, 2)`` array and must return ``n`` values; it
    runs in a dedicated thread, one call at a time, or on the event loop for the batches
    ``runs_inline(key, n)`` says are short calls. ``on_batch`` runs
    on the event loop after each call; its exceptions are logged and ignored so a metrics bug
    never fails a request.
    """

    def __init__(
        self,
        predict: PredictFn,
        *,
        max_batch_size: int = 1024,
        max_wait_s: float = 0.0,
        max_queue_points: int = 65536,
        retry_after_s: float = 1.0,
        on_batch: Callable[[BatchStats], None] | None = None,
        runs_inline: Callable[[Hashable, int], bool] | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if not max_wait_s >= 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s}")
        if max_queue_points < 1:
            raise ValueError(f"max_queue_points must be >= 1, got {max_queue_points}")
        if not retry_after_s >= 0:
            raise ValueError(f"retry_after_s must be >= 0, got {retry_after_s}")
        self._predict = predict
        self._max_batch_size = max_batch_size
        self._max_wait_s = max_wait_s
        self._max_queue_points = max_queue_points
        self._retry_after_s = retry_after_s
        self._on_batch = on_batch
        self._runs_inline = runs_inline

        self._queue: collections.deque[_Request] = collections.deque()
        self._queued_points = 0
        self._points_by_key: collections.Counter[Hashable] = collections.Counter()
        self._wakeup: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the one start() ran on
        self._task: asyncio.Task[None] | None = None
        self._model_thread: _ModelThread | None = None
        self._stopping = False
        self._stopped = False
        self._batch_running = False
        # While a batch lingers: (its key, whether it is a probe, the monotonic instant its
        # linger ends), so submit() wakes the loop only to fill it or for a request that may
        # not wait that long.
        self._lingering: tuple[Hashable, bool, float] | None = None
        # Lingering pays off only when requests arrive concurrently; the size of the previous
        # batch is the cheapest signal of that, and it starts low so a first request never waits.
        self._last_batch_requests = 1
        # Requests of the recent queued batches: a lingering batch runs as soon as it holds as
        # many as the largest of them (all the callers there are, as far as can be seen),
        # rather than waiting out its time for callers that may not exist.
        self._recent_batches: collections.deque[int] = collections.deque(maxlen=RECENT_BATCHES)
        self._fill_target = max_batch_size
        # Set by a call answered at once, until the event loop's next turn: the requests that
        # arrive in the same turn (a burst read from many connections at once) queue instead
        # and merge into one batch.
        self._ran_now_this_turn = False
        # Requests per queued batch, recently (an exponential average): near 1 when queueing
        # merges nothing, as when grpc.aio hands over one call per loop turn; higher when
        # requests arrive together, as HTTP requests read from many connections in one turn.
        self._merged = 1.0
        # Requests that could linger but were answered at once, counted for the probe.
        self._answered_alone = 0
        # Deadlines of the waiting requests: one timer for all of them, not one per request;
        # a request fails at most DEADLINE_TICK_S late (see _expire).
        self._deadlines: DeadlineSweeper[_Request] = DeadlineSweeper(DEADLINE_TICK_S, self._expire)

    @property
    def queued_requests(self) -> int:
        """Requests waiting for a batch (not counting the batch being run)."""
        return len(self._queue)

    @property
    def queued_points(self) -> int:
        """Points waiting for a batch; the queue bound ``max_queue_points`` applies to this."""
        return self._queued_points

    @property
    def idle(self) -> bool:
        """True when no request is queued and no batch is running."""
        return not self._queue and not self._batch_running

    @property
    def running(self) -> bool:
        """True between ``start()`` and ``stop()``, while the collect loop is alive."""
        return self._task is not None and not self._task.done() and not self._stopping

    async def start(self) -> None:
        """Start the collect loop and the model thread on the running event loop."""
        if self._stopped or self._stopping:
            raise RuntimeError("a stopped Batcher cannot be restarted; create a new one")
        if self._task is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        self._model_thread = _ModelThread(self._predict)
        self._task = asyncio.create_task(self._run(), name="xor-dnn-batcher")

    async def submit(
        self,
        points: NDArray[Any],
        *,
        key: Hashable = None,
        deadline: float | None = None,
        max_wait_s: float | None = None,
    ) -> NDArray[np.float32]:
        """Queue ``points`` (``(n, 2)``) for the model ``key``; return their ``n`` probabilities.

        ``deadline`` is a ``time.monotonic()`` instant: past it the request leaves the queue
        (or its running batch) and raises :class:`DeadlineExceeded`. ``max_wait_s``: how long
        a batch this request heads may linger for more (None: the batcher's ``max_wait_s``).
        Raises
        :class:`Overloaded` at once when the queue cannot take ``n`` more points,
        :class:`Unavailable` when the batcher is not running, :class:`ModelFailure` when the
        model call of this request's batch failed.
        """
        task = self._task
        if task is None or self._stopping or task.done():  # self.running, inlined
            if self._stopping or self._stopped:
                raise Unavailable("the service is shutting down and takes no new requests")
            raise Unavailable("the batcher is not running")
        arr = _as_points(points)
        n: int = arr.shape[0]
        if n == 0:
            return np.empty(0, dtype=np.float32)
        if self._queued_points + n > self._max_queue_points:
            if n > self._max_queue_points:
                raise PayloadTooLarge(
                    f"points: {n} points exceed the batch queue's capacity "
                    f"(max_queue_points={self._max_queue_points})",
                    field="points",
                )
            raise Overloaded(
                f"the batch queue is full ({self._queued_points} of "
                f"max_queue_points={self._max_queue_points} points queued); retry later",
                retry_after=self._retry_after_s,
            )
        now = time.monotonic()
        wait = self._max_wait_s if max_wait_s is None else max_wait_s
        if deadline is not None:
            if deadline <= now:
                raise DeadlineExceeded("the request deadline passed before it was queued")
            if wait > 0 and (deadline - now) / 2 < wait:
                wait = (deadline - now) / 2  # a linger never spends more than half of what is left
        probe = False
        queue = self._queue
        if (
            not queue
            and self._runs_inline is not None
            and not self._batch_running
            and not self._ran_now_this_turn
            and self._merged < ANSWER_AT_ONCE_BELOW
            and self._runs_inline(key, n)
        ):
            if wait <= 0:
                return self._run_now(key, arr)
            self._answered_alone += 1
            if self._answered_alone < PROBE_EVERY:
                return self._run_now(key, arr)
            self._answered_alone = 0
            probe = True

        assert self._loop is not None and self._wakeup is not None
        request = _Request(arr, key, self._loop.create_future(), now, wait, probe)
        queue.append(request)
        self._queued_points += n
        by_key = self._points_by_key
        by_key[key] = by_key.get(key, 0) + n
        lingering = self._lingering
        if lingering is None or (
            now + wait < lingering[2]  # this request may not wait that long
            or (
                lingering[0] == key
                and (
                    by_key[key] >= self._max_batch_size
                    or (not lingering[1] and len(queue) >= self._fill_target)
                )
            )
        ):
            self._wakeup.set()

        if deadline is not None:
            self._deadlines.watch(request, deadline, self._loop)
        try:
            return await request.future
        finally:
            if deadline is not None:
                self._deadlines.unwatch(request)
            # Cancelled (client gone) or timed out while still queued: free its place now,
            # so the queue bound and the queue-depth gauge only count live work.
            if request.queued:
                self._unqueue(request)
                queue.remove(request)
            if not request.future.done():
                request.future.cancel()

    def _expire(self, request: _Request) -> None:
        """Fail a request whose deadline passed with :class:`DeadlineExceeded`. A request
        still queued is then dropped from the queue by ``submit``; one in a running batch has
        its slice of the results dropped."""
        if not request.future.done():
            where = "queued" if request.queued else "in a running batch"
            waited = time.monotonic() - request.enqueued
            request.future.set_exception(
                DeadlineExceeded(f"the request deadline passed after {waited:.3f} s ({where})")
            )

    async def stop(self, timeout: float) -> None:
        """Refuse new submits, finish the queued work within ``timeout`` seconds, stop.

        Requests still queued or running when the timeout expires fail with
        :class:`Unavailable`. Safe to call twice, or before ``start()``.
        """
        if self._stopped:
            return
        self._stopping = True
        task = self._task
        if task is not None and not task.done():
            assert self._wakeup is not None
            self._wakeup.set()
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout=max(timeout, 0.0))
            except TimeoutError:
                log.warning(
                    "batcher: drain timed out after %.1f s with %d requests queued; failing them",
                    timeout,
                    len(self._queue),
                )
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._fail_queued(Unavailable("the service shut down before this request ran"))
        if self._model_thread is not None:
            # A predict call stuck in C code cannot be interrupted: do not wait for it (the
            # thread is a daemon, so it cannot hold the process up at exit either).
            self._model_thread.close()
        self._stopped = True

    # -- the collect loop ------------------------------------------------------------------

    async def _run(self) -> None:
        assert self._wakeup is not None
        while True:
            if not self._queue:
                if self._stopping:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            try:
                await self._linger()
                batch = self._take_batch()
                if batch:
                    self._batch_running = True
                    try:
                        await self._run_batch(batch)
                    finally:
                        self._batch_running = False
            except asyncio.CancelledError:
                raise
            except Exception:  # the loop must outlive any bug in one iteration
                log.exception("batcher: unexpected error in the collect loop; carrying on")

    async def _linger(self) -> None:
        """Wait for more same-key requests, up to the oldest request's ``wait`` after it arrived.

        One timer per batch: ``submit`` wakes the loop early only once the batch is full, or
        holds as many requests as the recent largest (``_fill_target``), or a request arrives
        that may not wait until the linger's end (a shorter wait of its own, or a deadline:
        a request waits at most half of the time its deadline leaves), not on every arrival,
        so lingering costs no extra work per request.
        """
        if self._stopping:
            return
        head = self._first_live()
        if (
            head is None
            or head.wait <= 0
            or (self._last_batch_requests <= 1 and not head.probe)
            or self._points_by_key[head.key] >= self._max_batch_size
            or (not head.probe and len(self._queue) >= self._fill_target)
        ):
            return
        remaining = head.enqueued + head.wait - time.monotonic()
        if remaining <= 0:
            return
        assert self._wakeup is not None
        self._wakeup.clear()
        self._lingering = (head.key, head.probe, head.enqueued + head.wait)
        try:
            async with asyncio.timeout(remaining):
                await self._wakeup.wait()
        except TimeoutError:
            pass
        finally:
            self._lingering = None

    def _first_live(self) -> _Request | None:
        while self._queue and self._queue[0].future.done():
            self._unqueue(self._queue.popleft())
        return self._queue[0] if self._queue else None

    def _take_batch(self) -> list[_Request]:
        """Pop the oldest live request and same-key requests behind it, up to the size cap."""
        head = self._first_live()
        if head is None:
            return []
        key = head.key
        queue = self._queue
        batch: list[_Request] = []
        skipped: list[_Request] = []
        points = 0
        limit = self._max_batch_size
        while queue and points < limit:
            request = queue[0]
            if request.future.done():
                self._unqueue(queue.popleft())
                continue
            if request.key != key:
                if points == self._points_by_key.get(key, 0):
                    break  # nothing of this key is left behind it: stop scanning
                skipped.append(queue.popleft())
                continue
            if batch and points + request.size > limit:
                break
            queue.popleft()
            request.queued = False
            batch.append(request)
            points += request.size
        # Off the queue's books in one step (what _unqueue does per request).
        self._queued_points -= points
        left = self._points_by_key[key] - points
        if left > 0:
            self._points_by_key[key] = left
        else:
            del self._points_by_key[key]
        # Requests of other keys go back in front, in their original order.
        queue.extendleft(reversed(skipped))
        return batch

    def _unqueue(self, request: _Request) -> None:
        request.queued = False
        self._queued_points -= request.size
        self._points_by_key[request.key] -= request.size
        if self._points_by_key[request.key] <= 0:
            del self._points_by_key[request.key]

    async def _run_batch(self, batch: list[_Request]) -> None:
        key = batch[0].key
        started = time.monotonic()
        waits = tuple([started - r.enqueued for r in batch])
        inputs = batch[0].points if len(batch) == 1 else np.concatenate([r.points for r in batch])
        total: int = inputs.shape[0]
        self._last_batch_requests = len(batch)
        self._recent_batches.append(len(batch))
        self._fill_target = max(2, max(self._recent_batches))
        self._merged += (len(batch) - self._merged) * MERGED_SMOOTHING
        loop = self._loop
        assert self._model_thread is not None and loop is not None
        failed = True
        model_seconds = 0.0
        try:
            if self._runs_inline is not None and self._runs_inline(key, total):
                outputs, model_seconds = self._call_inline(key, inputs)
            else:  # a call that may take long: off the event loop
                outputs, model_seconds = await self._model_thread.run(loop, key, inputs)
            values = _values(outputs, total)
        except asyncio.CancelledError:
            _fail(batch, Unavailable("the service shut down while this request's batch ran"))
            raise
        except Exception as exc:
            _fail(batch, _model_failure(key, [r.size for r in batch], exc))
        else:
            failed = False
            offset = 0
            for request in batch:
                end = offset + request.size
                if not request.future.done():  # the client may have left meanwhile
                    request.future.set_result(values[offset:end])
                offset = end
        finally:
            self._report(BatchStats(key, len(batch), total, waits, model_seconds, failed))

    def _run_now(self, key: Hashable, points: NDArray[np.float32]) -> NDArray[np.float32]:
        """One short call for one request, in the caller, when nothing is queued or running:
        a batch of one without the queue, the future and the collect loop's turn."""
        self._last_batch_requests = 1
        self._ran_now_this_turn = True
        assert self._loop is not None
        self._loop.call_soon(self._end_turn)
        n = int(points.shape[0])
        model_seconds = 0.0
        failed = True
        try:
            outputs, model_seconds = self._call_inline(key, points)
            values = _values(outputs, n)
            failed = False
            return values
        except Exception as exc:
            raise _model_failure(key, [n], exc) from None
        finally:
            self._report(BatchStats(key, 1, n, (0.0,), model_seconds, failed))

    def _call_inline(
        self, key: Hashable, points: NDArray[np.float32]
    ) -> tuple[NDArray[Any], float]:
        started = time.perf_counter()
        outputs = self._predict(key, points)
        return outputs, time.perf_counter() - started

    def _end_turn(self) -> None:
        self._ran_now_this_turn = False

    def _report(self, stats: BatchStats) -> None:
        if self._on_batch is None:
            return
        try:
            self._on_batch(stats)
        except Exception:
            log.exception("batcher: on_batch callback failed (ignored)")

    def _fail_queued(self, error: ServiceError) -> None:
        pending = list(self._queue)
        self._queue.clear()
        for request in pending:
            self._unqueue(request)
        _fail(pending, error)


_Job = tuple[
    asyncio.AbstractEventLoop,
    "asyncio.Future[tuple[NDArray[Any], float]]",
    Hashable,
    NDArray[np.float32],
]


class _ModelThread:
    """One daemon thread running ``predict`` calls one at a time.

    Leaner than ``run_in_executor`` (no concurrent.futures plumbing per batch), and a daemon:
    a predict call hung in native code never keeps the process from exiting after a drain
    timeout, which a ThreadPoolExecutor worker would (it is joined at interpreter exit).
    """

    def __init__(self, predict: PredictFn) -> None:
        self._predict = predict
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._main, name="xor-dnn-model", daemon=True)
        self._thread.start()

    def run(
        self, loop: asyncio.AbstractEventLoop, key: Hashable, inputs: NDArray[np.float32]
    ) -> asyncio.Future[tuple[NDArray[Any], float]]:
        """Queue one call; the future resolves on ``loop`` with (outputs, seconds)."""
        future: asyncio.Future[tuple[NDArray[Any], float]] = loop.create_future()
        self._jobs.put((loop, future, key, inputs))
        return future

    def close(self) -> None:
        self._jobs.put(None)

    def _main(self) -> None:
        while (job := self._jobs.get()) is not None:
            loop, future, key, inputs = job
            t0 = time.perf_counter()
            try:
                outputs = self._predict(key, inputs)
            except BaseException as exc:  # handed to the waiting batch, whatever it is
                _deliver(loop, _set_exception, future, exc)
            else:
                _deliver(loop, _set_result, future, (outputs, time.perf_counter() - t0))


def _deliver(loop: asyncio.AbstractEventLoop, setter: Callable[..., None], *args: Any) -> None:
    # RuntimeError: the loop is closed, so nobody is waiting any more.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(setter, *args)


def _set_result(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


def _values(outputs: NDArray[Any], n: int) -> NDArray[np.float32]:
    """A model call's outputs as ``n`` float32 values; ValueError if it returned another count."""
    values = np.asarray(outputs, dtype=np.float32).reshape(-1)
    if values.shape[0] != n:
        raise ValueError(f"predict returned {values.shape[0]} values for {n} points")
    return values


def _model_failure(key: Hashable, sizes: list[int], exc: Exception) -> ModelFailure:
    """Log a failed model call; the error each of its requests gets."""
    total = sum(sizes)
    log.error(
        "batcher: model call failed (key=%r, %d requests, %d points)",
        key,
        len(sizes),
        total,
        exc_info=exc,
    )
    return ModelFailure(
        f"the model (version {key}) failed on a batch of {total} points: {type(exc).__name__}"
    )


def _fail(batch: list[_Request], error: ServiceError) -> None:
    for request in batch:
        if not request.future.done():
            # One instance per waiter: a shared exception object would collect every
            # waiter's traceback as each of them re-raises it.
            request.future.set_exception(_clone(error))


def _clone(error: ServiceError) -> ServiceError:
    return type(error)(error.message, retry_after=error.retry_after, field=error.field)


def _as_points(points: NDArray[Any]) -> NDArray[np.float32]:
    try:
        arr = np.asarray(points, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"points: not a numeric array ({exc})", field="points") from None
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise InvalidInput(f"points: expected shape (n, 2), got {arr.shape}", field="points")
    return arr
