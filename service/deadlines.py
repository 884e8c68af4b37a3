"""The service's one deadline mechanism: many deadlines, one timer.

A timer per waiter (``asyncio.timeout``, ``loop.call_later``) costs a heap push and a cancel
per request, on every request, although almost none of them expire. A
:class:`DeadlineSweeper` keeps the deadlines in a dict (an insert and a pop per waiter) and
runs one timer, armed only while something is watched, that wakes every ``tick`` seconds and
hands the expired keys to ``on_expired``: a waiter fails at most ``tick`` late. Used for
request bodies (``service.middleware``), queued requests (``service.batcher``) and request
heads (``service.server``).

    sweeper = DeadlineSweeper(0.01, on_expired=lambda request: request.fail())
    sweeper.watch(request, time.monotonic() + 5.0)
    ...
    sweeper.unwatch(request)          # done in time: forgotten, nothing fires
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class DeadlineSweeper(Generic[K]):
    """Calls ``on_expired(key)`` once for each watched key whose ``time.monotonic()``
    deadline passed, at most ``tick`` seconds late, on the event loop that watched it."""

    def __init__(self, tick: float, on_expired: Callable[[K], None]) -> None:
        if not tick > 0:
            raise ValueError(f"tick must be > 0, got {tick}")
        self.tick = tick
        self._on_expired = on_expired
        self._deadlines: dict[K, float] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __len__(self) -> int:
        return len(self._deadlines)

    def watch(self, key: K, deadline: float, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Watch ``key`` (replacing its earlier deadline); call on the event loop, which the
        caller may pass if it has it at hand (asking for the running loop is a system call
        on Python 3.11)."""
        self._deadlines[key] = deadline
        if loop is None:
            loop = asyncio.get_running_loop()
        if self._timer is None:
            self._arm(loop)
        elif self._loop is not loop:
            # A timer of another (closed) loop never fires: tests run one app on several loops.
            self._timer.cancel()
            self._arm(loop)

    def unwatch(self, key: K) -> None:
        self._deadlines.pop(key, None)

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._timer = loop.call_later(self.tick, self._sweep)

    def _sweep(self) -> None:
        self._timer = None
        now = time.monotonic()
        expired = [key for key, deadline in self._deadlines.items() if deadline <= now]
        for key in expired:
            del self._deadlines[key]
        for key in expired:
            self._on_expired(key)
        if self._deadlines and self._loop is not None and not self._loop.is_closed():
            self._arm(self._loop)
