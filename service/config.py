"""Service settings: pydantic-settings from ``XOR_DNN_*`` environment variables and CLI flags."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, FilePath, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "XOR_DNN_"
# An absolute URL path of plain characters, not ending in a slash.
_URL_PATH = r"^(/[A-Za-z0-9._~-]+)+$"
# CSP source expressions: 'none', or 'self' and scheme/host sources, space-separated (no ';'
# or ',' that would end the directive and smuggle in another).
_CSP_SOURCE = r"(?:'self'|[A-Za-z0-9*][A-Za-z0-9.:/*_%\[\]-]*)"
_CSP_SOURCES = rf"^(?:'none'|{_CSP_SOURCE}(?: {_CSP_SOURCE})*)$"


LOCAL_POLL_INTERVAL_S = 1.0
REMOTE_POLL_INTERVAL_S = 10.0
"""A 10 s poll costs about a dollar a month per 10 pods in conditional GETs (docs/storage.md)
and hot-loads a version within 10-20 s."""

SUPERVISOR_PID_ENV = "_XOR_DNN_SUPERVISOR_PID"
"""Set by ``xor-dnn serve --workers N`` for its workers: the supervisor's process id (not a
setting: the workers use it to notice a supervisor that died before they started)."""


class Settings(BaseSettings):
    """Every knob of ``xor-dnn serve``; an env var ``XOR_DNN_<FIELD>`` sets each one.

    >>> Settings(model_dir="models/xor", max_batch_size=256).port
    8000
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="ignore",
        validate_default=True,
        frozen=True,
        # Each field's docstring is its description: the serve flag's help (service.cli).
        use_attribute_docstrings=True,
    )

    model_dir: str = Field(default="models/xor", min_length=1)
    """Folder or object-store URI of numbered SavedModel versions (TensorFlow Serving layout:
    <model_dir>/<N>/): a path, file://..., s3://bucket/prefix (any S3 API; credentials and
    AWS_ENDPOINT_URL from the standard AWS chain) or gs://bucket/prefix (docs/storage.md)."""
    cache_dir: Path | None = None
    """Where versions from an object store are downloaded before loading (only the loaded
    versions are kept); default: a fresh temporary folder. An emptyDir in Kubernetes."""
    model_name: str = Field(default="xor", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    """Name the model is served under in every URL (/v1/models/<name>, /v2/models/<name>).
    With model_repository: the default model, answering POST /predict (when the repository
    has no model of that name, the first name in alphabetical order is the default)."""
    model_repository: str | None = Field(default=None, min_length=1)
    """Folder or object-store URI holding one folder per model, each with numbered versions
    (<repository>/<name>/<N>/, TensorFlow Serving's and Triton's layout): every model is
    served by its folder's name, with its own versions, batch queue and metrics. Replaces
    model_dir (give one of the two; docs/service.md, "Model repository")."""
    model_control: Literal["poll", "explicit"] = "poll"
    """How models come and go in a model_repository: ``poll`` (default) loads every model
    folder and picks up folders added or removed at each poll; ``explicit`` (Triton's term)
    loads only load_model at start and then what the repository API loads or unloads."""
    load_model: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """With model_control explicit: the models loaded at start, comma-separated (``*``: every
    model in the repository); default none (the repository API loads them)."""
    max_loaded_models: int = Field(default=0, ge=0, le=100_000)
    """Most models loaded at once in a model_repository; 0 (default): no limit. Explicit
    control unloads the least recently used idle model to load another; poll control leaves
    the models beyond the limit unloaded and says so in the log and the repository index.
    Size it from a model's memory (docs/service.md, "Sizing")."""
    admin_token: SecretStr | None = None
    """Bearer token of the repository API (POST /v2/repository/index, .../load, .../unload);
    unset (default): those routes do not exist. At least 16 characters; prefer
    admin_token_file, which keeps it out of the process environment (docs/hardening.md)."""
    admin_token_file: FilePath | None = None
    """A file holding the admin token, such as a mounted Kubernetes Secret (surrounding
    whitespace is ignored)."""
    admin_rate_limit: int = Field(default=30, ge=1, le=100_000)
    """Repository API requests accepted per minute from one client address (more get 429);
    failed authentication counts too, so a token cannot be guessed at line rate."""
    host: str = "127.0.0.1"
    """Interface to bind; 0.0.0.0 in a container."""
    port: int = Field(default=8000, ge=0, le=65535)
    """TCP port to bind (0 picks a free one)."""
    workers: int = Field(default=1, ge=1, le=64)
    """Server processes. Batching happens inside one process, so 1 batches best; >1 turns on
    Prometheus multiprocess mode so /metrics reports every worker."""
    max_batch_size: int = Field(default=1024, ge=1, le=65536)
    """Most points merged into one model call."""
    max_batch_wait_ms: float = Field(default=0.0, ge=0.0, le=1000.0)
    """Longest a batch waits for more requests (only under concurrency). 0: a batch takes what
    queued while the model was busy and runs at once, which measured best for this model on
    CPU (docs/batching.md); set 1-2 ms for a model whose call cost dominates (large, GPU)."""
    tf_threads: int = Field(default=1, ge=0, le=256)
    """TensorFlow's intra- and inter-op thread pools in each worker. 1 (default): a batch of
    this small model is a few microseconds of arithmetic, and more threads only add hand-offs
    and CPU that the HTTP side needs (docs/batching.md); 0: TensorFlow's default, one per core."""
    model_runtime: Literal["auto", "tensorflow"] = "auto"
    """How a batch runs. auto (default): batches of up to 256 points in LiteRT, the
    SavedModel's graph converted by TensorFlow's converter at load (0.2-0.4 s), used only
    when the graph has no assertion or numeric-check ops (the converter drops them) and it
    answers probe points like TensorFlow to float32 rounding; larger batches, and
    every batch if it does not, in TensorFlow. tensorflow: every batch in TensorFlow."""
    max_queue_points: int = Field(default=65536, ge=1)
    """Bound of the batch queue in points; beyond it requests are refused at once with 429."""
    fair_share_per_turn: int = Field(default=1, ge=0, le=1024)
    """While more than one model has requests, each model starts at most this many per turn
    of the event loop, so a flooded model cannot make another wait behind a turn full of its
    requests (docs/service.md, "Fair shares"); 0: off. A server of one model never waits."""
    max_inflight_requests: int = Field(default=-1, ge=-1, le=1_000_000)
    """Most POST requests inside the service at once; the next gets 503 with Retry-After before
    its body is read. -1 (default): max_queue_points / 8, at least 64 (8 points is a typical
    request; the cap then refuses a storm before its bodies fill the queue); 0: no cap."""
    request_timeout_s: float = Field(default=10.0, gt=0.0, le=3600.0)
    """Per-request deadline for queueing plus the model call; past it the answer is 504."""
    max_points_per_request: int = Field(default=1024, ge=1, le=1_000_000)
    """Most points one request may carry (any protocol)."""
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    """Largest request body accepted; larger bodies get 413 before they are read."""
    header_timeout_s: float = Field(default=5.0, gt=0.0, le=600.0)
    """A connection must send a complete request head within this many seconds of opening or
    of its previous response (else 408 and close); idle keep-alive connections close after it."""
    body_timeout_s: float = Field(default=10.0, gt=0.0, le=3600.0)
    """A request's whole body must arrive within this many seconds of its head (else 408 and
    close), so a slow or stalled upload cannot hold a connection forever."""
    poll_interval_s: float | None = Field(default=None, gt=0.0, le=3600.0)
    """How often the model dir is polled for new or removed versions. Default: 1 s for a
    local folder (a scan costs nothing); 10 s for an object store, where each poll is one
    billed conditional GET per pod (cost table in docs/storage.md). Jittered by +-20%."""
    keep_versions: int = Field(default=3, ge=1, le=100)
    """How many of the newest versions stay loaded, so requests can pin one."""
    drain_timeout_s: float = Field(default=20.0, ge=0.0, le=3600.0)
    """On SIGTERM, how long in-flight requests and queued batches get to finish."""
    log_format: Literal["text", "json"] = "text"
    """Log lines as human text or one JSON object per line."""
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    """Lowest level logged."""
    access_log: Literal["all", "errors", "off"] = "errors"
    """Which requests get an access-log line (method, path, status, latency, request id):
    ``errors`` (default) those answered 4xx/5xx, ``all`` every request, ``off`` none. Like
    TensorFlow Serving and Triton, successes are not logged one by one by default: a line per
    request costs a large share of /predict's throughput (measured in docs/service.md); the
    request metrics count every request either way."""
    root_path: str = Field(default="", pattern=r"^(/[^\s?#]*[^/\s?#])?$")
    """Path prefix a reverse proxy serves the app under (e.g. /xor), for docs and the page."""
    forwarded_allow_ips: str = ""
    """Proxies trusted to set X-Forwarded-For/-Proto, comma-separated IPs or networks ("*":
    any); empty (default): the headers are ignored and no proxy-headers layer runs."""
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Origins allowed to call the API from a browser, comma-separated; empty = no CORS."""
    frame_ancestors: str = Field(default="'none'", pattern=_CSP_SOURCES)
    """Who may embed the HTML pages (playground, docs) in a frame: the Content-Security-Policy
    ``frame-ancestors`` sources, space-separated, e.g. "'self' https://portal.example";
    default 'none' (no one)."""
    enable_docs: bool = True
    """Serve the OpenAPI docs at /docs and /openapi.json."""
    enable_metrics: bool = True
    """Serve Prometheus metrics at /metrics."""
    docs_path: str = Field(default="/docs", pattern=_URL_PATH)
    """Where the OpenAPI UI is served (when enable_docs), e.g. /_admin/docs."""
    openapi_path: str = Field(default="/openapi.json", pattern=_URL_PATH)
    """Where the OpenAPI schema is served (when enable_docs)."""
    metrics_path: str = Field(default="/metrics", pattern=_URL_PATH)
    """Where Prometheus metrics are served (when enable_metrics), e.g. /_admin/metrics."""
    train_if_missing: bool = False
    """If the model dir holds no version, train the default model on generated data first."""
    grpc_port: int = Field(default=0, ge=0, le=65535)
    """gRPC port (Open Inference Protocol V2, TensorFlow Serving's PredictionService, health,
    reflection) on ``host``, in the same process and event loop as HTTP; 0 (default): off. Off
    by default so a plain ``xor-dnn serve`` binds one port; Kubernetes and compose set 8001."""
    grpc_max_message_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, le=1024 * 1024 * 1024)
    """Largest gRPC message received or sent; a larger one gets RESOURCE_EXHAUSTED."""
    grpc_max_batch_wait_ms: float = Field(default=2.0, ge=0.0, le=1000.0)
    """Longest a batch headed by a gRPC call waits for more requests (only under
    concurrency, which is probed: docs/grpc.md). grpc.aio hands the server one call per loop
    turn, so without a wait concurrent calls never share a model call; 2 ms measured best
    at c = 32 (about 1.4x the calls/s of 0). 0: each call runs at once, as HTTP does."""
    tls_cert_file: FilePath | None = None
    """PEM certificate (chain) served on the HTTP and gRPC ports; with ``tls_key_file``, both
    ports speak TLS only."""
    tls_key_file: FilePath | None = None
    """PEM private key of ``tls_cert_file``."""
    tls_client_ca_file: FilePath | None = None
    """PEM CA bundle: when set, clients must present a certificate it signed (mutual TLS)."""

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        # A plain comma list reads better in an env var or a flag than a JSON array.
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("load_model", mode="before")
    @classmethod
    def _split_models(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("load_model")
    @classmethod
    def _model_names(cls, value: list[str]) -> list[str]:
        from xor_dnn.modelstore import MODEL_NAME

        for name in value:
            if name != "*" and not MODEL_NAME.match(name):
                raise ValueError(
                    f"'{name[:70]}' is not a model name (letters, digits, _ . -, at most 64, "
                    "not starting with . or -) nor *"
                )
        return value

    @field_validator("admin_token")
    @classmethod
    def _strong_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not 16 <= len(value.get_secret_value()) <= 4096:
            n = len(value.get_secret_value())
            raise ValueError(f"the token must be 16 to 4096 characters, got {n}")
        return value

    @field_validator("model_dir", "model_repository", mode="before")
    @classmethod
    def _path_to_text(cls, value: object) -> object:
        # A Path is a folder; a URI stays text (Path would fold "s3://" into "s3:/").
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @field_validator("log_level", "access_log", mode="before")
    @classmethod
    def _lower_level(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _repository(self) -> Settings:
        if self.model_repository is not None and "model_dir" in self.model_fields_set:
            raise ValueError("model_dir and model_repository: give one (a model or a repository)")
        if self.model_repository is None:
            given = {
                "model_control": self.model_control != "poll",
                "load_model": bool(self.load_model),
                "max_loaded_models": self.max_loaded_models != 0,
            }
            for name, set_here in given.items():
                if set_here:
                    raise ValueError(f"{name}: only with model_repository (not model_dir)")
        if (
            self.model_repository is not None
            and self.model_control == "explicit"
            and (self.workers > 1)
        ):
            raise ValueError(
                "model_control explicit: needs workers 1 (each worker is its own server, "
                "and a load or unload would reach only one of them); scale with replicas"
            )
        if self.load_model and self.model_control != "explicit":
            raise ValueError("load_model: only with model_control explicit (poll loads them all)")
        if self.admin_token is not None and self.admin_token_file is not None:
            raise ValueError("admin_token and admin_token_file: give one")
        if self.admin_token_file is not None:
            token = self.admin_token_file.read_text().strip()
            if not 16 <= len(token) <= 4096:
                raise ValueError(
                    f"admin_token_file: the token must be 16 to 4096 characters, got {len(token)}"
                )
        return self

    @model_validator(mode="after")
    def _ports_and_tls(self) -> Settings:
        if self.grpc_port and self.grpc_port == self.port:
            raise ValueError(f"grpc_port: {self.grpc_port} is the HTTP port too; pick another")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file: give both or neither")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_client_ca_file: needs tls_cert_file and tls_key_file")
        return self

    @property
    def admin_secret(self) -> bytes | None:
        """The repository API's token (from admin_token or admin_token_file), None when off."""
        if self.admin_token is not None:
            return self.admin_token.get_secret_value().encode()
        if self.admin_token_file is not None:
            return self.admin_token_file.read_text().strip().encode()
        return None

    @property
    def inflight_cap(self) -> int:
        """``max_inflight_requests`` resolved: the cap in requests, 0 for none."""
        if self.max_inflight_requests >= 0:
            return self.max_inflight_requests
        return max(64, self.max_queue_points // 8)

    @property
    def poll_interval(self) -> float:
        """``poll_interval_s`` resolved for this model dir (see the field)."""
        if self.poll_interval_s is not None:
            return self.poll_interval_s
        from xor_dnn.storage import is_remote

        source = self.model_repository or self.model_dir
        return REMOTE_POLL_INTERVAL_S if is_remote(source) else LOCAL_POLL_INTERVAL_S

    @property
    def max_batch_wait_s(self) -> float:
        return self.max_batch_wait_ms / 1000.0

    @property
    def grpc_max_batch_wait_s(self) -> float:
        return self.grpc_max_batch_wait_ms / 1000.0
