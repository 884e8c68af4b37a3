"""``xor-dnn serve``: settings from flags over ``XOR_DNN_*`` env vars, then uvicorn.

Flags override environment variables, which override the defaults in
:class:`service.config.Settings`. TensorFlow, FastAPI and prometheus-client are imported only
once the command runs, so ``xor-dnn --help`` stays instant, and so the Prometheus
multiprocess folder is in place before any worker creates a metric.

Exit codes: 0 after a clean shutdown (SIGTERM or Ctrl-C included), 2 for bad settings,
1 when training a missing model failed, 3 when the server could not start.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_SETTINGS = 2

log = logging.getLogger("service.cli")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # read by prometheus-client when it is imported


def flag_name(field: str) -> str:
    """A setting's flag: ``max_batch_size`` -> ``--max-batch-size``; on/off switches drop
    their ``enable_`` (``enable_docs`` -> ``--docs/--no-docs``)."""
    return "--" + field.removeprefix("enable_").replace("_", "-")


def register(subparsers: Any) -> None:
    """Add ``serve`` to the ``xor-dnn`` dispatcher, one flag per field of ``Settings``.

    The flags are generated from the model (name, type, choices, help from the field's
    docstring), so a setting is written once; importing pydantic here is cheap next to
    ``xor-dnn``'s other commands, unlike TensorFlow or FastAPI.
    """
    from service.config import Settings

    parser = subparsers.add_parser(
        "serve",
        help="serve the model over HTTP (POST /predict, TF Serving v1, Open Inference v2)",
        description=(
            "Serve the newest SavedModel version under --model-dir, hot-reloading new versions. "
            "Every flag also reads from an environment variable XOR_DNN_<NAME> "
            "(e.g. XOR_DNN_MAX_BATCH_SIZE); flags win. See docs/service.md."
        ),
    )
    for name, field in Settings.model_fields.items():
        text = _first_sentence(field.description or "")
        kind = field.annotation
        if kind is bool:
            parser.add_argument(
                flag_name(name),
                dest=name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=text,
            )
            continue
        if get_origin(kind) is Literal:  # not argparse choices: the model also takes "INFO"
            text += f" ({', '.join(get_args(kind))})"
        convert = kind if kind in (int, float, Path) else str
        parser.add_argument(flag_name(name), dest=name, type=convert, default=None, help=text)
    parser.set_defaults(func=serve)


def _first_sentence(text: str) -> str:
    first = " ".join(text.split()).split(". ")[0].rstrip(".")
    return first.replace("%", "%%")  # argparse formats help with %


def build_settings(args: argparse.Namespace) -> Any:
    """Settings from env vars, overridden by the flags actually given."""
    from service.config import Settings

    overrides = {
        n: getattr(args, n) for n in Settings.model_fields if getattr(args, n, None) is not None
    }
    return Settings(**overrides)


def serve(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from service.config import Settings

    try:
        settings = build_settings(args)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            name = ".".join(str(p) for p in err["loc"])
            if not name:  # a rule across settings (its message names them)
                message = err["msg"].removeprefix("Value error, ")
                print(f"xor-dnn serve: {message}", file=sys.stderr)
                continue
            field = Settings.model_fields.get(name)
            secret = field is not None and "SecretStr" in str(field.annotation)
            shown = "(hidden)" if secret else repr(err.get("input"))  # never echo a token
            print(
                f"xor-dnn serve: {flag_name(name)} (env XOR_DNN_{name.upper()}): "
                f"{err['msg']}, got {shown}",
                file=sys.stderr,
            )
        return EXIT_BAD_SETTINGS

    from service.logging import configure, log_config

    configure(settings.log_format, settings.log_level)
    if settings.train_if_missing:
        code = _train_if_missing(settings.model_dir)
        if code != EXIT_OK:
            return code
    _export_settings(settings)
    with _prometheus_dir(settings.workers), _exit_zero_on_sigterm():
        import uvicorn

        app: Any
        if settings.workers > 1:
            from service.config import SUPERVISOR_PID_ENV

            os.environ[SUPERVISOR_PID_ENV] = str(os.getpid())  # the workers watch this process
            app = "service.app:create_app_from_env"
        else:
            from service.app import create_app

            app = create_app(settings)
        log.info(
            "listening on %s://%s:%d%s (workers: %d)",
            "https" if settings.tls_cert_file else "http",
            settings.host,
            settings.port,
            settings.root_path,
            settings.workers,
        )
        try:
            uvicorn.run(
                app,
                factory=settings.workers > 1,
                host=settings.host,
                port=settings.port,
                workers=settings.workers,
                log_config=log_config(settings.log_format, settings.log_level),
                access_log=False,
                timeout_graceful_shutdown=int(max(1, round(settings.drain_timeout_s))),
                # uvicorn only uses it as a call_later delay, so a float is fine.
                timeout_keep_alive=settings.header_timeout_s,
                http=http_protocol(),
                ws="none",  # no WebSocket routes: an upgrade request is plain HTTP
                server_header=False,
                **tls_options(settings),
                # A per-request layer, so only when a trusted proxy is configured.
                proxy_headers=bool(settings.forwarded_allow_ips),
                forwarded_allow_ips=settings.forwarded_allow_ips or None,
            )
        except SystemExit as exc:  # uvicorn exits 3 when the lifespan startup failed
            return int(exc.code) if isinstance(exc.code, int) else EXIT_FAILED
    return EXIT_OK


def tls_options(settings: Any) -> dict[str, Any]:
    """uvicorn's TLS arguments: the same files as gRPC's; client certificates required when a
    client CA is given."""
    if settings.tls_cert_file is None:
        return {}
    import ssl

    options: dict[str, Any] = {
        "ssl_certfile": str(settings.tls_cert_file),
        "ssl_keyfile": str(settings.tls_key_file),
    }
    if settings.tls_client_ca_file is not None:
        options["ssl_ca_certs"] = str(settings.tls_client_ca_file)
        options["ssl_cert_reqs"] = ssl.CERT_REQUIRED
    return options


def http_protocol() -> str:
    """Our hardened httptools protocol (head timeout and size, JSON errors), else uvicorn's
    default when httptools is not installed."""
    try:
        import httptools  # noqa: F401
    except ImportError:
        return "auto"
    from service.server import PROTOCOL

    return PROTOCOL


def _train_if_missing(model_dir: str) -> int:
    from xor_dnn.modelstore import latest_version
    from xor_dnn.storage import StorageError

    try:
        if latest_version(model_dir) is not None:
            return EXIT_OK
    except StorageError as exc:  # one line naming the URI and the cause, no traceback
        log.error("cannot read the model repository: %s", exc)
        return EXIT_FAILED
    log.info("no model version in %s: training the default model first", model_dir)
    from training.cli import progress_default
    from training.train import train_and_publish

    try:
        published = train_and_publish(model_dir, progress=progress_default())
    except Exception as exc:  # the service cannot start without a model; say why and stop
        log.error("training the default model failed: %s", exc)
        return EXIT_FAILED
    log.info("published version %d at %s", published.version, published.path)
    return EXIT_OK


def _export_settings(settings: Any) -> None:
    """Workers (separate processes) rebuild Settings from the env: give them the final values."""
    from pydantic import SecretStr

    from service.config import ENV_PREFIX

    for name, value in settings.model_dump().items():
        if value is None:  # "unset": the worker resolves the same default
            os.environ.pop(f"{ENV_PREFIX}{name.upper()}", None)
            continue
        if isinstance(value, SecretStr):  # model_dump masks it; the workers need the value
            text = value.get_secret_value()
        elif isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, list):
            text = ",".join(value)
        else:
            text = str(value)
        os.environ[f"{ENV_PREFIX}{name.upper()}"] = text


@contextmanager
def _prometheus_dir(workers: int) -> Iterator[None]:
    """Multiprocess metrics for several workers: a clean folder, removed at exit.

    A folder named by the user in PROMETHEUS_MULTIPROC_DIR is emptied (stale files from an
    earlier run would add dead processes' counts) but kept; one we create is removed.
    """
    # Not imported from service.metrics: importing prometheus-client before the folder exists
    # would bind this process's metrics to a missing folder.
    given = os.environ.get(MULTIPROC_ENV)
    if workers <= 1 and not given:
        yield
        return
    if given:
        folder = Path(given)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.db"):
            stale.unlink(missing_ok=True)
        yield
        return
    folder = Path(tempfile.mkdtemp(prefix="xor-dnn-prometheus-"))
    os.environ[MULTIPROC_ENV] = str(folder)
    try:
        yield
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def _exit_zero_on_sigterm() -> Iterator[None]:
    # uvicorn re-raises the signal that stopped it once it has shut down gracefully; with the
    # default SIGTERM handler that kills the process (exit 143) after a clean drain. A no-op
    # handler makes a drained SIGTERM exit 0, as an orchestrator expects.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
