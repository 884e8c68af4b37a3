"""Security headers: what every answer carries, set in one place (a ``response_headers`` hook
of the front door, so JSON, HTML, the lean data routes and the outer layer's own refusals all
get them).

* every answer: ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer``, and
  ``Cache-Control: no-store`` unless the route chose its own (the page and its assets are
  revalidated with an ETag, Swagger UI's versioned assets are cached for good);
* HTML pages (the playground, /docs): a Content-Security-Policy allowing only the service's
  own origin, no inline script or style, ``base-uri 'none'``, ``form-action 'self'`` and
  ``frame-ancestors`` from ``Settings.frame_ancestors``;
* anything else: ``default-src 'none'; frame-ancestors 'none'``, so a JSON body opened as a
  document can run and embed nothing;
* ``Strict-Transport-Security`` only when the service itself speaks TLS.
"""

from __future__ import annotations

from starlette.types import Scope

Headers = list[tuple[bytes, bytes]]

NO_STORE = (b"cache-control", b"no-store")
API_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
)
"""What a non-HTML answer carries; also sent by ``service.server`` on the errors it writes
before any request exists (malformed HTTP, head timeout)."""

HSTS_MAX_AGE_S = 31_536_000  # one year, the common preload minimum


def page_policy(frame_ancestors: str) -> str:
    """The Content-Security-Policy of the HTML pages."""
    return "; ".join(
        (
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            # Swagger UI's stylesheet draws its icons as data: SVGs.
            "img-src 'self' data:",
            "connect-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            f"frame-ancestors {frame_ancestors}",
        )
    )


class SecurityHeaders:
    """The ``response_headers`` hook adding the headers above to one answer.

    >>> hook = SecurityHeaders(frame_ancestors="'none'", tls=False)
    >>> headers = [(b"content-type", b"application/json")]
    >>> hook({}, headers)
    >>> dict(headers)[b"cache-control"]
    b'no-store'
    """

    def __init__(self, *, frame_ancestors: str, tls: bool) -> None:
        common = [
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
        ]
        if tls:
            common.append((b"strict-transport-security", b"max-age=%d" % HSTS_MAX_AGE_S))
        policy = page_policy(frame_ancestors).encode("ascii")
        self._page = (*common, (b"content-security-policy", policy))
        self._other = (*common, API_HEADERS[2])

    def __call__(self, scope: Scope, headers: Headers) -> None:
        html = cache_set = False
        for name, value in headers:
            if name == b"content-type":
                html = value.startswith(b"text/html")
            elif name == b"cache-control":
                cache_set = True
        headers.extend(self._page if html else self._other)
        if not cache_set:
            headers.append(NO_STORE)
