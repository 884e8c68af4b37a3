"""Many models in one server: one registry, batch queue and poller per model; load, unload and
the bound on how many are loaded. Imports neither FastAPI nor gRPC.

A :class:`Repository` serves either the one model of ``model_dir`` (named ``model_name``) or
every model folder of ``model_repository`` (``<repository>/<name>/<N>/``). Each model is a
:class:`ServedModel`: its own :class:`~service.registry.ModelRegistry` (versions, warm-up, hot
reload), its own :class:`~service.batcher.Batcher` (queue, bound and model thread) and its own
poller, so one model's overload, slow model call or failing load never holds up another's
requests: they share the event loop and the CPU, not a queue or a thread.

The request path resolves a name with one dict lookup (:meth:`Repository.get`); the default
model (``POST /predict``) is an attribute. Changes (:meth:`Repository.load`,
:meth:`Repository.unload`, the poll of the repository's folders) run one at a time under a
lock, and publish a new dict rather than mutate the one readers hold.

Model control, as Triton names it: ``poll`` follows the repository's folders (a folder copied
in is loaded at the next poll, a folder removed is unloaded); ``explicit`` loads the models
named at start (``load_model``) and then only what the repository API asks for.
``max_loaded_models`` bounds memory: explicit control unloads the least recently used idle
model to make room, poll control leaves the models beyond the bound unloaded and says why.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service import metrics
from service.batcher import Batcher, BatchStats
from service.config import Settings
from service.errors import BadRequest, InvalidInput, NotFound, Unavailable
from service.middleware import RETRY_AFTER_S
from service.registry import ModelRegistry, RefreshResult
from xor_dnn.modelstore import LITE_MAX_POINTS, list_models
from xor_dnn.storage import StorageError

log = logging.getLogger(__name__)


def refresh_registry(registry: ModelRegistry) -> RefreshResult:
    """One folder scan (in a thread); when models came or went, re-hide the heap from the GC.

    With TensorFlow and a model loaded the heap holds hundreds of thousands of long-lived
    objects and a full cyclic collection walks them all, a pause that lands on random requests
    (it dominated the benchmark's p99; figures in docs/batching.md). ``gc.freeze()`` moves
    everything alive into a generation the collector never scans, so after a load only the new
    objects are collected once, then frozen. A version dropped for good was frozen too: its
    cycles are reclaimed by unfreezing first, one full pause when an unloaded version's grace
    period ends instead of one every few thousand requests, and no model is leaked.
    """
    result = registry.refresh()
    if result.dropped:
        gc.unfreeze()
    if result.loaded or result.dropped:
        gc.collect()
        gc.freeze()
    return result


def _reclaim() -> None:
    # An unloaded model's objects were frozen with the rest of the heap (refresh_registry).
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class ServedModel:
    """One model as the request path sees it: versions, batch queue, metrics.

    ``last_used`` (``time.monotonic()`` of its last request) picks the model that explicit
    control unloads first when ``max_loaded_models`` is reached.
    """

    def __init__(self, name: str, registry: ModelRegistry, settings: Settings) -> None:
        self.name = name
        self.registry = registry
        self.batcher = Batcher(
            registry.predict,
            max_batch_size=settings.max_batch_size,
            max_wait_s=settings.max_batch_wait_s,
            max_queue_points=settings.max_queue_points,
            retry_after_s=RETRY_AFTER_S,
            on_batch=self._record_batch,
            runs_inline=registry.runs_inline,
        )
        self.last_used = time.monotonic()
        # Labelled children looked up once: labels() takes a lock and builds a key per call.
        self.overload_refusals = metrics.OVERLOAD_REFUSALS.labels(model=name)
        self.deadline_misses = metrics.DEADLINE_EXCEEDED.labels(model=name)
        self._batch_points = metrics.deferred_histogram(metrics.BATCH_POINTS.labels(model=name))
        self._batch_requests = metrics.deferred_histogram(metrics.BATCH_REQUESTS.labels(model=name))
        self._queue_wait = metrics.deferred_histogram(metrics.QUEUE_WAIT.labels(model=name))
        self._model_call = metrics.deferred_histogram(metrics.MODEL_CALL.labels(model=name))
        self._poller: asyncio.Task[None] | None = None

    @property
    def ready(self) -> bool:
        return self.registry.ready and self.batcher.running

    def _record_batch(self, stats: BatchStats) -> None:
        """The batcher's ``on_batch``: one model call's figures into Prometheus."""
        self._batch_points.observe(stats.points)
        self._batch_requests.observe(stats.requests)
        for wait in stats.queue_wait_seconds:
            self._queue_wait.observe(wait)
        self._model_call.observe(stats.model_seconds)
        if stats.failed:
            metrics.BATCH_FAILURES.labels(model=self.name, version=str(stats.key)).inc()

    def sample_queue(self) -> None:
        """Queue depth into its gauges (at scrape time: exact, and free on the request path)."""
        metrics.QUEUE_POINTS.labels(model=self.name).set(self.batcher.queued_points)
        metrics.QUEUE_REQUESTS.labels(model=self.name).set(self.batcher.queued_requests)

    async def start(self, poll_interval: float) -> None:
        await self.batcher.start()
        self._poller = asyncio.create_task(
            _poll(self.registry, poll_interval), name=f"model-poller-{self.name}"
        )

    async def stop(self, drain_timeout_s: float) -> None:
        """Stop polling, finish the queued requests within the timeout, drop every version."""
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        await self.batcher.stop(drain_timeout_s)
        # close() waits for a refresh running in a thread (its lock), so not on the loop.
        await asyncio.to_thread(self.registry.close)
        for gauge in (metrics.QUEUE_POINTS, metrics.QUEUE_REQUESTS):
            with contextlib.suppress(KeyError):
                gauge.remove(self.name)


async def _poll(registry: ModelRegistry, interval: float) -> None:
    while True:
        await asyncio.sleep(registry.next_poll_delay(interval))
        try:
            await asyncio.to_thread(refresh_registry, registry)
        except Exception:  # a bad scan must not end polling; the next one may succeed
            log.exception(
                "model '%s': folder scan failed; retrying in about %.1f s",
                registry.model_name,
                interval,
            )


@dataclass(frozen=True)
class IndexEntry:
    """One model of the repository index (Triton's ``/v2/repository/index`` entry)."""

    name: str
    state: str
    """READY, UNAVAILABLE (not loaded, or loaded without a servable version)."""
    version: int | None = None
    reason: str = ""

    def as_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"name": self.name, "state": self.state, "reason": self.reason}
        if self.version is not None:
            entry["version"] = str(self.version)
        return entry


FAIR_SHARE_WINDOW_S = 0.1
"""Models with a request in the last this many seconds count as having requests."""


class FairShare:
    """Fair shares of the one event loop between models.

    Every request of every model is parsed, validated and answered on one event loop, which
    runs, each turn, every task that became ready. A flooded model (many connections sending
    as fast as they are answered) fills every turn with its requests, and another model's
    request waits behind all of them: per-model batch queues cannot help, that work happens
    before the queue. So a data-plane request first asks :meth:`admit`: while more than one
    model has had requests in the last :data:`FAIR_SHARE_WINDOW_S`, a model starts at most
    ``per_turn`` requests per turn (``Settings.fair_share_per_turn``), and the rest wait, in
    arrival order, to be released ``per_turn`` per turn. A quiet model's request then waits
    for a few requests of each busy model, not for a whole turn of them. Waiting costs
    nothing per turn (a future released by the turn's first callback, not a poll), and a
    model alone is never held.
    """

    def __init__(self, per_turn: int, window_s: float = FAIR_SHARE_WINDOW_S) -> None:
        if per_turn < 1:
            raise ValueError(f"per_turn must be >= 1, got {per_turn}")
        self.per_turn = per_turn
        self.window_s = window_s
        self._started: dict[str, int] = {}
        self._waiting: dict[str, collections.deque[asyncio.Future[None]]] = {}
        self._last_seen: dict[str, float] = {}
        self._turn_scheduled = False

    async def admit(self, name: str) -> None:
        """Return when the request for model ``name`` may start (at once, nearly always)."""
        now = time.monotonic()
        self._last_seen[name] = now
        if not self._turn_scheduled:
            asyncio.get_running_loop().call_soon(self._new_turn)
            self._turn_scheduled = True
        started = self._started.get(name, 0)
        if not self._waiting.get(name) and (started < self.per_turn or not self._shared(name, now)):
            self._started[name] = started + 1
            return
        ticket: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(name, collections.deque()).append(ticket)
        try:
            await ticket
        except asyncio.CancelledError:  # client gone while waiting: leave the line at once
            with contextlib.suppress(ValueError):
                self._waiting[name].remove(ticket)
            raise

    @property
    def waiting(self) -> int:
        """Requests waiting for a turn, over every model."""
        return sum(len(line) for line in self._waiting.values())

    def _shared(self, name: str, now: float) -> bool:
        since = now - self.window_s
        return any(t > since for other, t in self._last_seen.items() if other != name)

    def _new_turn(self) -> None:
        self._started.clear()
        self._turn_scheduled = False
        now = time.monotonic()
        for name, line in self._waiting.items():
            limit = self.per_turn if self._shared(name, now) else len(line)
            released = 0
            while line and released < limit:
                ticket = line.popleft()
                if not ticket.done():
                    ticket.set_result(None)
                    released += 1
            if released:
                self._started[name] = released
        if any(self._waiting.values()):
            asyncio.get_running_loop().call_soon(self._new_turn)
            self._turn_scheduled = True


class Repository:
    """The models this server serves, by name.

    Usage::

        models = Repository(settings)         # model_dir, or model_repository
        await models.start()                  # loads what the model control says
        served = models.get("xor")            # NotFound for an unknown name
        await models.load("lesson")           # explicit control; InvalidInput if it fails
        await models.stop()
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.source = settings.model_repository
        """The repository's path or URI; None when serving the one model of model_dir."""
        self._models: dict[str, ServedModel] = {}
        self.default: ServedModel | None = None
        """The model ``POST /predict`` answers with: ``model_name`` when loaded, else the
        first loaded name in alphabetical order."""
        self._not_loaded: dict[str, str] = {}
        """Model folders seen but not loaded, with the reason (for the index and the log)."""
        self._lock = asyncio.Lock()
        self.share = (
            FairShare(settings.fair_share_per_turn) if settings.fair_share_per_turn else None
        )
        """The event loop's fair shares between models (None: off)."""
        self._scanner: asyncio.Task[None] | None = None
        self.store_error: str | None = None

    # -- reads (request path) ----------------------------------------------------------------

    async def admit(self, name: str | None) -> None:
        """Wait for model ``name``'s fair share of this event-loop turn (:class:`FairShare`;
        None: the default model); at once when fair shares are off or one model is loaded."""
        waiting = self.admission(name)
        if waiting is not None:
            await waiting

    def admission(self, name: str | None) -> Awaitable[None] | None:
        """What :meth:`admit` awaits, or None when there is nothing to wait for (one model
        loaded, or fair shares off): the request path then makes no coroutine for it."""
        if self.share is None or len(self._models) < 2:
            return None  # checked first: the usual case, asked on every request
        if name is None:
            default = self.default
            if default is None:
                return None
            name = default.name
        # An unknown name waits for nothing (its handler answers 404) and is never recorded:
        # a client inventing names cannot grow the share's tables.
        if name in self._models:
            return self.share.admit(name)
        return None

    def get(self, name: str) -> ServedModel:
        """The loaded model called ``name``; :class:`NotFound` naming the ones served."""
        found = self._models.get(name)
        if found is None:
            raise NotFound(
                f"model '{name[:80]}' is not served here (served: {self._served_names()})",
                field="model_name",
            )
        return found

    def _served_names(self) -> str:
        names = sorted(self._models)
        shown = ", ".join(f"'{n}'" for n in names[:20])
        return (shown + (f" and {len(names) - 20} more" if len(names) > 20 else "")) or "none"

    @property
    def models(self) -> list[ServedModel]:
        """The loaded models, by name."""
        return [self._models[name] for name in sorted(self._models)]

    @property
    def ready(self) -> bool:
        """Some model can answer (one model's broken folder must not take the others out of
        a load balancer); with ``model_dir``, that one model can."""
        return any(m.ready for m in self._models.values())

    @property
    def explicit(self) -> bool:
        return self.source is not None and self.settings.model_control == "explicit"

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Load what the settings name; start the repository poll (``poll`` control)."""
        settings = self.settings
        if self.source is None:
            async with self._lock:
                await self._add(settings.model_name, settings.model_dir)
            return
        if self.explicit:
            wanted = settings.load_model
            if "*" in wanted:
                wanted = sorted(await self._folders())
            for name in wanted:
                try:
                    await self.load(name)
                except (NotFound, InvalidInput, Unavailable) as exc:
                    log.error("model '%s' not loaded at start: %s", name, exc.message)
            return
        await self.scan()
        self._scanner = asyncio.create_task(self._scan_loop(), name="repository-poller")

    async def stop(self) -> None:
        if self._scanner is not None:
            self._scanner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scanner
        async with self._lock:
            models, self._models = list(self._models.values()), {}
            self._update_default()
            # Every model drains at once: the drain timeout is the server's, not each model's.
            await asyncio.gather(*(m.stop(self.settings.drain_timeout_s) for m in models))

    # -- changes -----------------------------------------------------------------------------

    async def scan(self) -> None:
        """``poll`` control: load the model folders that appeared, unload those removed."""
        try:
            folders = await self._folders()
        except StorageError as exc:
            if self.store_error is None:
                log.error("model repository unreachable, still serving what is loaded: %s", exc)
            self.store_error = str(exc)
            return
        if self.store_error is not None:
            log.info("model repository reachable again (%s)", self.source)
        self.store_error = None
        async with self._lock:
            for name in [n for n in self._models if n not in folders]:
                log.info("model '%s': folder removed from the repository; unloading", name)
                await self._remove(name)
            for name in [n for n in self._not_loaded if n not in folders]:
                del self._not_loaded[name]
            limit = self.settings.max_loaded_models
            for name, uri in sorted(folders.items()):
                if name in self._models:
                    continue
                if limit and len(self._models) >= limit:
                    reason = (
                        f"not loaded: max_loaded_models ({limit}) reached; raise it or remove "
                        "model folders"
                    )
                    if self._not_loaded.get(name) != reason:
                        log.error("model '%s' %s", name, reason)
                    self._not_loaded[name] = reason
                    continue
                self._not_loaded.pop(name, None)
                await self._add(name, uri)

    async def load(self, name: str) -> ServedModel:
        """Load ``name`` from the repository, or re-scan its versions when it is loaded.

        :class:`NotFound` when the repository has no such folder, :class:`InvalidInput` when
        no version of it loads, :class:`Unavailable` when ``max_loaded_models`` is reached
        and every loaded model is busy (requests queued or in a running batch);
        :class:`BadRequest` unless control is explicit.
        """
        self._require_explicit("load")
        async with self._lock:
            served = self._models.get(name)
            if served is not None:
                await asyncio.to_thread(refresh_registry, served.registry)
                return served
            folders = await self._folders()
            uri = folders.get(name)
            if uri is None:
                raise NotFound(
                    f"model '{name[:80]}': no such folder in the model repository "
                    f"({len(folders)} model folders)",
                    field="model_name",
                )
            limit = self.settings.max_loaded_models
            if limit and len(self._models) >= limit:
                await self._evict_one(limit)
            served = await self._add(name, uri)
            if not served.registry.ready:
                failed = served.registry.failed_versions
                await self._remove(name)
                detail = (
                    f"version(s) {', '.join(map(str, failed))} failed to load (see the server log)"
                    if failed
                    else "it has no complete version folder"
                )
                self._not_loaded[name] = f"load failed: {detail}"
                raise InvalidInput(f"model '{name}': load failed: {detail}", field="model_name")
            return served

    async def unload(self, name: str) -> None:
        """Unload ``name``: new requests get 404 at once, queued ones are finished first."""
        self._require_explicit("unload")
        async with self._lock:
            if name not in self._models:
                raise NotFound(
                    f"model '{name[:80]}' is not loaded (loaded: {self._served_names()})",
                    field="model_name",
                )
            await self._remove(name)
            self._not_loaded[name] = "unloaded"

    async def index(self) -> list[IndexEntry]:
        """Every model the repository holds or this server serves, with its state."""
        try:
            names = set(await self._folders()) if self.source is not None else set()
        except StorageError as exc:
            raise Unavailable(f"the model repository cannot be read: {exc}") from None
        entries = []
        for name in sorted(names | set(self._models)):
            served = self._models.get(name)
            if served is None:
                reason = self._not_loaded.get(name, "not loaded")
                entries.append(IndexEntry(name, "UNAVAILABLE", reason=reason))
            elif served.ready:
                version = served.registry.default_version
                entries.append(IndexEntry(name, "READY", version=version))
            else:
                why = served.registry.store_error or "no version loaded yet"
                entries.append(IndexEntry(name, "UNAVAILABLE", reason=why))
        return entries

    def _require_explicit(self, what: str) -> None:
        if self.source is None:
            raise BadRequest(
                f"{what}: this server serves the one model of model_dir; the repository API "
                "loads and unloads models of a model_repository with model_control explicit"
            )
        if not self.explicit:
            raise BadRequest(
                f"{what}: model_control is poll, so models follow the repository's folders; "
                "start the server with model_control explicit to load and unload by API"
            )

    async def _evict_one(self, limit: int) -> None:
        idle = [m for m in self._models.values() if m.batcher.idle]
        if not idle:
            raise Unavailable(
                f"max_loaded_models ({limit}) reached and every loaded model is busy "
                "(requests queued or running); retry later or unload one",
                retry_after=RETRY_AFTER_S,
            )
        victim = min(idle, key=lambda m: m.last_used)
        log.info(
            "model '%s' unloaded to make room (max_loaded_models %d; least recently used)",
            victim.name,
            limit,
        )
        await self._remove(victim.name)
        self._not_loaded[victim.name] = "unloaded: least recently used at max_loaded_models"

    async def _add(self, name: str, uri: str) -> ServedModel:
        settings = self.settings
        registry = ModelRegistry(
            uri,
            model_name=name,
            keep_versions=settings.keep_versions,
            retire_grace_s=settings.request_timeout_s + settings.drain_timeout_s,
            cache_dir=self._cache_dir(name),
            lite_max_points=LITE_MAX_POINTS if settings.model_runtime == "auto" else 0,
        )
        result = await asyncio.to_thread(refresh_registry, registry)
        served = ServedModel(name, registry, settings)
        await served.start(settings.poll_interval)
        self._models = {**self._models, name: served}
        self._update_default()
        if registry.ready:
            log.info(
                "serving model '%s' version %s (loaded: %s) from %s",
                name,
                registry.default_version,
                registry.versions,
                registry.source,
            )
        else:
            log.warning(
                "model '%s': no loadable version in %s (failed: %s); polling every %.1f s",
                name,
                registry.source,
                result.store_error or result.failed or "none",
                settings.poll_interval,
            )
        return served

    def _cache_dir(self, name: str) -> Path | None:
        cache = self.settings.cache_dir
        if cache is None or self.source is None:
            return cache
        return cache / name  # one subfolder per model: their version numbers overlap

    async def _remove(self, name: str) -> None:
        served = self._models[name]
        self._models = {n: m for n, m in self._models.items() if n != name}
        self._update_default()
        await served.stop(self.settings.drain_timeout_s)
        await asyncio.to_thread(_reclaim)
        log.info("model '%s' unloaded", name)

    def _update_default(self) -> None:
        models = self._models
        preferred = models.get(self.settings.model_name)
        self.default = preferred or (models[min(models)] if models else None)
        metrics.MODELS_LOADED.set(len(models))

    async def _folders(self) -> dict[str, str]:
        assert self.source is not None
        return await asyncio.to_thread(list_models, self.source, _count_listing)

    async def _scan_loop(self) -> None:
        interval = self.settings.poll_interval
        while True:
            await asyncio.sleep(interval)
            try:
                await self.scan()
            except Exception:  # a bad scan must not end polling; the next one may succeed
                log.exception("model repository scan failed; retrying in %.1f s", interval)


def _count_listing(kind: str, outcome: str, size: int) -> None:
    # The repository's own listings belong to no one model.
    metrics.STORE_REQUESTS.labels(model="", kind=kind, outcome=outcome).inc()
