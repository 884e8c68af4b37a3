"""The score loop's two helper threads: one reads and decodes the next chunks, one encodes and
writes the finished ones, each at most ``QUEUE_DEPTH`` chunks apart from the model so memory
stays flat whatever the input size (Arrow releases the GIL while it works)."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator

import pyarrow as pa

from scoring.readers import Batch
from scoring.writers import Sink

QUEUE_DEPTH = 2


class _Stopped(Exception):
    """Tells the writer thread to drop what is queued: the job is failing."""


class Writer:
    """One background thread writing (sink, batch) pairs in order; errors surface on next use."""

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[Sink, pa.RecordBatch] | None] = queue.Queue(QUEUE_DEPTH)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="xor-dnn-score-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is None:
                try:
                    item[0].write(item[1])
                except BaseException as exc:  # handed to the main thread, which re-raises
                    self._error = exc

    def _check(self) -> None:
        if self._error is not None and not isinstance(self._error, _Stopped):
            raise self._error

    def put(self, sink: Sink, batch: pa.RecordBatch) -> None:
        self._check()
        self._queue.put((sink, batch))

    def finish(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self._check()

    def stop(self) -> None:
        if self._error is None:
            self._error = _Stopped()
        self._queue.put(None)
        self._thread.join()


class Reader:
    """Iterates the source's batches on a background thread, at most ``QUEUE_DEPTH`` ahead.

    Batches come out in order; an exception raised while reading (an ``InputError``) comes out
    in its place, with its traceback. ``stop()`` ends the thread early (a failing job) and must
    be called before the source is closed.
    """

    def __init__(self, batches: Iterator[Batch]) -> None:
        self._batches = batches
        self._queue: queue.Queue[Batch | BaseException | None] = queue.Queue(QUEUE_DEPTH)
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="xor-dnn-score-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        end: BaseException | None = None
        try:
            for batch in self._batches:
                self._queue.put(batch)
                if self._stopping:
                    return
        except BaseException as exc:  # handed to the main thread, which re-raises
            end = exc
        finally:
            close = getattr(self._batches, "close", None)
            # A generator stopped early runs its cleanup here, on its own thread; a failure
            # there must not keep the end marker below from reaching the main thread.
            if close is not None:
                with contextlib.suppress(Exception):
                    close()
        if not self._stopping:
            self._queue.put(end)

    def __iter__(self) -> Iterator[Batch]:
        while (item := self._queue.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item

    def stop(self) -> None:
        """End the thread (at once if it is done); call it before closing the source."""
        self._stopping = True
        while self._thread.is_alive():  # free the queue so a blocked put() returns
            with contextlib.suppress(queue.Empty):
                self._queue.get(timeout=0.05)
        self._thread.join()
