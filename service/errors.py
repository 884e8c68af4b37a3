"""Every error the service raises, each carrying its HTTP status; no FastAPI in here.

The tree (one handler in the API layer turns any of these into the protocol's JSON shape)::

    ServiceError                500
    ├── BadRequest              400  the body is not parseable JSON (or too deeply nested)
    ├── InvalidInput            422  a field is wrong; the message names field and limit
    ├── PayloadTooLarge         413  body or point count over a configured limit
    ├── Unauthorized            401  an admin route without a Bearer token (or a malformed one)
    ├── Forbidden               403  an admin route with the wrong token
    ├── RequestTimeout          408  the body did not arrive within body_timeout_s
    ├── UnsupportedMediaType    415  a Content-Type or Content-Encoding the route cannot read
    ├── NotFound                404  unknown model or version
    ├── Overloaded              429  the batch queue is full; carries retry_after seconds
    ├── Unavailable             503  not ready (no model loaded yet) or shutting down
    ├── DeadlineExceeded        504  the request's deadline passed before its batch ran
    └── ModelFailure            500  the model call failed; only that batch's requests fail
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base class: ``status_code`` and a message safe to show a client (no paths, no traces).

    ``field`` names the offending input when there is one (``points[3].x``), so clients can
    point at it without parsing the message.
    """

    status_code = 500
    code = "internal_error"

    def __init__(
        self, message: str, *, retry_after: float | None = None, field: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.field = field


class BadRequest(ServiceError):
    status_code = 400
    code = "bad_request"


class InvalidInput(ServiceError):
    status_code = 422
    code = "invalid_input"


class PayloadTooLarge(ServiceError):
    status_code = 413
    code = "payload_too_large"


class Unauthorized(ServiceError):
    """No credentials, or not ``Authorization: Bearer <token>``; sent with WWW-Authenticate."""

    status_code = 401
    code = "unauthorized"


class Forbidden(ServiceError):
    status_code = 403
    code = "forbidden"


class RequestTimeout(ServiceError):
    """The client sent its body too slowly; the connection is closed after the answer."""

    status_code = 408
    code = "request_timeout"


class UnsupportedMediaType(ServiceError):
    status_code = 415
    code = "unsupported_media_type"


class NotFound(ServiceError):
    status_code = 404
    code = "not_found"


class Overloaded(ServiceError):
    """The queue is full: refused at once, never left to time out. Sent with Retry-After."""

    status_code = 429
    code = "overloaded"


class Unavailable(ServiceError):
    status_code = 503
    code = "unavailable"


class DeadlineExceeded(ServiceError):
    status_code = 504
    code = "deadline_exceeded"


class ModelFailure(ServiceError):
    status_code = 500
    code = "model_failure"
