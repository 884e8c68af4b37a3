"""Security headers on every answer of a real server: each route (HTML, JSON, metrics, static
files, Swagger UI's assets), the errors, the outer layer's own refusals and the raw HTTP errors
written before any request exists. A route added without a case here fails the first test."""

from __future__ import annotations

import asyncio
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.routing import iter_route_contexts
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bench._process import ServerProcess
from service.apidocs import ASSET_SEGMENT
from service.app import create_app
from service.config import Settings
from service.security import HSTS_MAX_AGE_S
from tests.hardening.conftest import HEADER_TIMEOUT_S, raw_request

V1 = b'{"instances": [[1, -1]]}'
V2 = b'{"inputs": [{"name": "points", "shape": [1, 2], "datatype": "FP32", "data": [1, -1]}]}'
PREDICT = b'{"points": [{"x": 1, "y": -1}]}'
ASSETS = f"/docs/{ASSET_SEGMENT}"

# Route template -> (method, a URL answering 200, body, what it is).
ROUTES: dict[str, tuple[str, str, bytes, str]] = {
    "/openapi.json": ("GET", "/openapi.json", b"", "json"),
    "/predict": ("POST", "/predict", PREDICT, "prediction"),
    "/v1/models/{model_name}:predict": ("POST", "/v1/models/xor:predict", V1, "prediction"),
    "/v1/models/{model_name}/versions/{version}:predict":
        ("POST", "/v1/models/xor/versions/1:predict", V1, "prediction"),
    "/v1/models/{model_name}": ("GET", "/v1/models/xor", b"", "json"),
    "/v1/models/{model_name}/versions/{version}": ("GET", "/v1/models/xor/versions/1", b"", "json"),
    "/v1/models/{model_name}/metadata": ("GET", "/v1/models/xor/metadata", b"", "json"),
    "/v1/models/{model_name}/versions/{version}/metadata":
        ("GET", "/v1/models/xor/versions/1/metadata", b"", "json"),
    "/v2/health/live": ("GET", "/v2/health/live", b"", "json"),
    "/v2/health/ready": ("GET", "/v2/health/ready", b"", "json"),
    "/v2": ("GET", "/v2", b"", "json"),
    "/v2/models/{model_name}": ("GET", "/v2/models/xor", b"", "json"),
    "/v2/models/{model_name}/versions/{version}": ("GET", "/v2/models/xor/versions/1", b"", "json"),
    "/v2/models/{model_name}/ready": ("GET", "/v2/models/xor/ready", b"", "json"),
    "/v2/models/{model_name}/versions/{version}/ready":
        ("GET", "/v2/models/xor/versions/1/ready", b"", "json"),
    "/v2/models/{model_name}/infer": ("POST", "/v2/models/xor/infer", V2, "prediction"),
    "/v2/models/{model_name}/versions/{version}/infer":
        ("POST", "/v2/models/xor/versions/1/infer", V2, "prediction"),
    "/healthz": ("GET", "/healthz", b"", "json"),
    "/readyz": ("GET", "/readyz", b"", "json"),
    "/models": ("GET", "/models", b"", "json"),
    "/models/{model_name}": ("GET", "/models/xor", b"", "json"),
    "/models/{model_name}/predict": ("POST", "/models/xor/predict", PREDICT, "prediction"),
    "/models/{model_name}/versions/{version}": ("GET", "/models/xor/versions/1", b"", "json"),
    "/models/{model_name}/history": ("GET", "/models/xor/history", b"", "history"),
    "/models/{model_name}/versions/{version}/history":
        ("GET", "/models/xor/versions/1/history", b"", "history"),
    "/": ("GET", "/", b"", "page"),
    "/playground": ("GET", "/playground", b"", "page"),
    "/metrics": ("GET", "/metrics", b"", "text"),
    "/docs": ("GET", "/docs", b"", "page"),
    ASSETS + "/{name}": ("GET", f"{ASSETS}/swagger-ui-bundle.js", b"", "versioned"),
    "/static": ("GET", "/static/app.js", b"", "static"),
}  # fmt: skip
JSON_TYPE = {"content-type": "application/json"}
HSTS = f"max-age={HSTS_MAX_AGE_S}"
API_POLICY = "default-src 'none'; frame-ancestors 'none'"


def _directives(policy: str) -> dict[str, str]:
    return {d.split(" ", 1)[0]: d.partition(" ")[2] for d in policy.split("; ")}


def check_common(headers: httpx.Headers | dict[str, str], where: str) -> None:
    assert headers["x-content-type-options"] == "nosniff", where
    assert headers["referrer-policy"] == "no-referrer", where
    assert "strict-transport-security" not in headers, where  # no TLS here


def check_page(headers: httpx.Headers, where: str, frame_ancestors: str = "'none'") -> None:
    check_common(headers, where)
    policy = _directives(headers["content-security-policy"])
    assert policy["default-src"] == "'self'", where
    assert policy["script-src"] == "'self'" and policy["style-src"] == "'self'", where
    assert "unsafe" not in headers["content-security-policy"], where
    assert policy["frame-ancestors"] == frame_ancestors, where
    assert policy["base-uri"] == "'none'" and policy["form-action"] == "'self'", where


def check_api(headers: httpx.Headers | dict[str, str], where: str) -> None:
    check_common(headers, where)
    assert headers["content-security-policy"] == API_POLICY, where
    assert headers["cache-control"] == "no-store", where


@pytest.fixture(scope="module")
def http(hardened_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=hardened_server.url, timeout=30.0) as client:
        yield client


def test_every_route_has_a_case(model_dir: Path) -> None:
    app = create_app(Settings(model_dir=model_dir))
    assert {r.path for r in iter_route_contexts(list(app.routes))} == set(ROUTES)


@pytest.mark.parametrize("template", list(ROUTES))
def test_every_route_answers_with_the_security_headers(http: httpx.Client, template: str) -> None:
    method, url, body, kind = ROUTES[template]
    r = http.request(method, url, content=body, headers=JSON_TYPE if body else None)
    assert r.status_code == 200, (url, r.text[:200])
    if kind == "page":
        assert r.headers["content-type"].startswith("text/html")
        check_page(r.headers, url)
        assert r.headers["cache-control"] in ("no-cache", "no-store"), url
    elif kind == "static" or kind == "versioned":
        check_common(r.headers, url)
    elif kind == "history":  # cacheable API answers: their own Cache-Control and an ETag
        check_common(r.headers, url)
        assert r.headers["content-security-policy"] == API_POLICY, url
        assert r.headers["cache-control"] != "no-store" and r.headers["etag"], url
        revalidated = http.get(url, headers={"if-none-match": r.headers["etag"]})
        assert revalidated.status_code == 304
        check_common(revalidated.headers, url + " (304)")
        assert revalidated.headers["content-security-policy"] == API_POLICY, url
    else:
        check_api(r.headers, url)
    if kind == "static":  # revalidated: same name across releases
        assert r.headers["cache-control"] == "no-cache" and r.headers["etag"]
        revalidated = http.get(url, headers={"if-none-match": r.headers["etag"]})
        assert revalidated.status_code == 304
        check_common(revalidated.headers, url + " (304)")
    elif kind == "versioned":  # the bundle's version is in the URL: cached for good
        assert "immutable" in r.headers["cache-control"]


@pytest.mark.parametrize(
    ("method", "url", "body", "status"),
    [
        ("GET", "/no/such/route", b"", 404),
        ("GET", f"{ASSETS}/redoc.standalone.js", b"", 404),  # only what the page loads
        ("PUT", "/predict", b"", 405),
        ("POST", "/predict", b"[", 400),
        ("POST", "/predict", b'{"points": "x"}', 422),
        ("POST", "/v1/models/xor:predict", b"{}", 400),
        ("POST", "/v2/models/nope/infer", V2, 404),
        ("POST", "/predict", b"{" * 2_000_000, 413),  # the outer layer's own refusal
    ],
)
def test_errors_carry_the_headers(
    http: httpx.Client, method: str, url: str, body: bytes, status: int
) -> None:
    r = http.request(method, url, content=body, headers=JSON_TYPE)
    assert r.status_code == status, (url, r.text[:200])
    assert r.headers["content-type"] == "application/json"
    check_api(r.headers, f"{method} {url} -> {status}")


def test_raw_http_errors_and_timeouts_carry_the_headers(hardened_server: ServerProcess) -> None:
    url = hardened_server.url
    bad = raw_request(url, b"GET / HTTP/1.1\r\nHost: x\r\nBad\x01Header: 1\r\n\r\n")
    assert bad is not None and bad.status == 400
    check_api(bad.headers, "malformed HTTP")
    big = raw_request(url, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n")
    assert big is not None and big.status == 431
    check_api(big.headers, "431")
    # A partial head: the server's head timer answers 408 (the read waits for it).
    slow = raw_request(url, b"GET / HTTP/1.1\r\nHost: x\r\n", timeout=HEADER_TIMEOUT_S + 20)
    assert slow is not None and slow.status == 408
    check_api(slow.headers, "head 408")
    # The outer layer's body deadline.
    stalled = raw_request(
        url,
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n{",
        timeout=30,
    )
    assert stalled is not None and stalled.status == 408
    check_api(stalled.headers, "body 408")


def test_frame_ancestors_setting_and_validation(model_dir: Path) -> None:
    from fastapi.testclient import TestClient

    allowed = "'self' https://portal.example"
    with TestClient(create_app(Settings(model_dir=model_dir, frame_ancestors=allowed))) as c:
        for url in ("/", "/docs"):
            check_page(c.get(url).headers, url, frame_ancestors=allowed)
        check_api(c.get("/healthz").headers, "/healthz")
    for bad in ("'none'; script-src *", "https://a.example, https://b", "", "x\r\ny"):
        with pytest.raises(ValueError, match="frame_ancestors"):
            Settings(model_dir=model_dir, frame_ancestors=bad)


def test_docs_page_references_only_the_service(model_dir: Path) -> None:
    from fastapi.testclient import TestClient

    settings = Settings(model_dir=model_dir, root_path="/xor")
    with TestClient(create_app(settings)) as c:
        page = c.get("/docs").text
        urls = re.findall(r'(?:src|href|data-openapi-url)="([^"]+)"', page)
        assert urls and all(u.startswith("/xor/") for u in urls), urls
        assert "//" not in "".join(urls) and "<script>" not in page
        for u in urls:  # each served, with or without the prefix stripped by the ingress
            assert c.get(u).status_code == 200, u
            assert c.get(u.removeprefix("/xor")).status_code == 200, u
    with TestClient(create_app(Settings(model_dir=model_dir, enable_docs=False))) as c:
        for url in ("/docs", f"{ASSETS}/swagger-ui-bundle.js"):
            assert c.get(url).status_code == 404, url


def test_hsts_only_with_tls(model_dir: Path, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    # B603/B607: a fixed openssl command line writing into this test's folder.
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", "key.pem", "-out", "cert.pem", "-days", "1", "-subj", "/CN=t"],
        cwd=tmp_path, check=True, capture_output=True,
    )  # fmt: skip  # nosec
    tls = Settings(
        model_dir=model_dir, tls_cert_file=tmp_path / "cert.pem", tls_key_file=tmp_path / "key.pem"
    )
    for settings, expected in ((Settings(model_dir=model_dir), None), (tls, HSTS)):
        with TestClient(create_app(settings)) as c:
            for url in ("/", "/healthz"):
                assert c.get(url).headers.get("strict-transport-security") == expected, url
            r = c.post("/predict", content=PREDICT, headers=JSON_TYPE)
            assert r.headers.get("strict-transport-security") == expected


async def test_the_inflight_refusal_carries_the_headers(model_dir: Path) -> None:
    """The front door's pre-built 503 goes out through the same hooks as any answer."""
    entered, release = asyncio.Event(), asyncio.Event()

    class Hold:
        def __init__(self, app: ASGIApp) -> None:
            self.app = app

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            entered.set()
            await release.wait()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"{}"})

    app = create_app(Settings(model_dir=model_dir, max_inflight_requests=1))
    app.add_middleware(Hold)
    scope: Scope = {
        "type": "http", "method": "POST", "path": "/predict", "raw_path": b"/predict",
        "query_string": b"", "headers": [(b"content-type", b"application/json")],
        "root_path": "", "scheme": "http", "server": ("127.0.0.1", 80), "http_version": "1.1",
    }  # fmt: skip

    async def receive() -> Message:
        return {"type": "http.request", "body": PREDICT, "more_body": False}

    sent: list[Message] = []

    async def record(message: Message) -> None:
        sent.append(message)

    async def ignore(message: Message) -> None:
        pass

    held = asyncio.create_task(app(dict(scope), receive, ignore))
    await entered.wait()
    await app(dict(scope), receive, record)
    release.set()
    await held
    assert sent[0]["status"] == 503
    headers = {k.decode(): v.decode() for k, v in sent[0]["headers"]}
    check_api(headers, "in-flight 503")
