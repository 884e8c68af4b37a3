"""Log setup: text or one-JSON-object-per-line records, each carrying the request id.

The request id lives in a context variable set by the HTTP middleware, so any log line
written while handling a request (ours, uvicorn's, a library's) carries it without plumbing.
"""

from __future__ import annotations

import contextvars
import json
import logging
import logging.config
import time
from typing import Any

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

# Attributes every LogRecord has; anything else was passed with extra={...} and is logged.
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "request_id", "color_message", "taskName"}
)


class RequestIdFilter(logging.Filter):
    """Stamps ``record.request_id`` from the current request's context."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, request_id, then any extras."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            payload["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


class TextFormatter(logging.Formatter):
    """``time level [request id] logger: message key=value ...``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s [%(request_id)s] %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extras = [
            f"{k}={v}"
            for k, v in vars(record).items()
            if k not in _STANDARD_ATTRS and not k.startswith("_")
        ]
        return f"{text} {' '.join(extras)}" if extras else text


def log_config(log_format: str = "text", log_level: str = "info") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` dict; uvicorn applies it in every worker process."""
    level = log_level.upper()
    formatter = "json" if log_format == "json" else "text"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}},
        "formatters": {
            "json": {"()": JsonFormatter},
            "text": {"()": TextFormatter},
        },
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": formatter,
                "filters": ["request_id"],
            }
        },
        "loggers": {
            "service": {"level": level},
            "uvicorn": {"level": level},
            "uvicorn.error": {"level": level},
            # Our middleware logs each request with its id and latency; uvicorn's would repeat it.
            "uvicorn.access": {"level": "WARNING"},
        },
        "root": {"handlers": ["default"], "level": level},
    }


def configure(log_format: str = "text", log_level: str = "info") -> None:
    logging.config.dictConfig(log_config(log_format, log_level))
