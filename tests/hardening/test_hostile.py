"""Hostile input against a real server: every body, header and pacing below gets a 4xx JSON
error quickly (no 5xx, no hang, no stack trace or file path), and the server stays healthy."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from bench._process import ServerProcess
from tests.hardening.conftest import BODY_TIMEOUT_S, HEADER_TIMEOUT_S, RawResponse, raw_request

PREDICT, V1, V2 = "/predict", "/v1/models/xor:predict", "/v2/models/xor/infer"
JSON_TYPE = "application/json"
V2_HEADER = "Inference-Header-Content-Length"
# Declares 8 bytes of binary FP32 data (one point) but sends 2.
V2_BINARY_HEAD = (
    b'{"inputs": [{"name": "points", "shape": [1, 2], "datatype": "FP32", '
    b'"parameters": {"binary_data_size": 8}}]}'
)
# An answer to a hostile request that is not about slowness: quick, with room for a busy machine
# (what it rules out is waiting for a timeout or a hang).
QUICK_S = 5.0
TEN_MB = 10 * 1024 * 1024
LEAKS = ("Traceback", 'File "', "/work/", "/tmp/", "site-packages", ".py")


def http(
    path: str,
    body: bytes = b"",
    *,
    method: str = "POST",
    content_type: str | None = JSON_TYPE,
    extra: str = "",
) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    if content_type is not None:
        head += f"Content-Type: {content_type}\r\n"
    head += f"Content-Length: {len(body)}\r\n{extra}\r\n"
    return head.encode("latin-1") + body


def point_body(x: bytes, y: bytes = b"1") -> bytes:
    return b'{"points": [{"x": ' + x + b', "y": ' + y + b"}]}"


DEEP = 100_000
BODIES: dict[str, tuple[str, bytes]] = {
    # invalid UTF-8 in a number, a key, a string value
    "utf8-in-number": (PREDICT, b'{"points": [{"x": 1\xff, "y": 1}]}'),
    "utf8-in-key": (PREDICT, b'{"points": [{"x\xc3\x28": 1, "y": 1}]}'),
    "utf8-in-string": (V2, b'{"id": "\xed\xa0\x80", "inputs": []}'),
    "lone-surrogate-escape": (V2, b'{"id": "\\ud800", "inputs": []}'),
    "utf16": (PREDICT, json.dumps({"points": [{"x": 1, "y": 1}]}).encode("utf-16")),
    "bom": (PREDICT, b"\xef\xbb\xbf" + point_body(b"1")),
    # nesting
    "deep-arrays": (PREDICT, b"[" * DEEP + b"]" * DEEP),
    "deep-objects": (PREDICT, b'{"a":' * DEEP + b"1" + b"}" * DEEP),
    "deep-in-points": (PREDICT, b'{"points": ' + b"[" * DEEP + b"]" * DEEP + b"}"),
    "deep-v1": (V1, b'{"instances": ' + b"[" * DEEP + b"]" * DEEP + b"}"),
    "deep-v2-parameters": (V2, b'{"parameters": ' + b'{"a":' * DEEP + b"1" + b"}" * DEEP + b"}"),
    # numbers
    "nan": (PREDICT, point_body(b"NaN")),
    "infinity": (PREDICT, point_body(b"Infinity")),
    "minus-infinity": (PREDICT, point_body(b"-Infinity")),
    "nan-v1": (V1, b'{"instances": [[NaN, 1]]}'),
    "nan-v2": (
        V2,
        b'{"inputs": [{"name": "points", "shape": [1, 2], "datatype": "FP32", "data": [NaN, 1]}]}',
    ),
    "1e400": (PREDICT, point_body(b"1e400")),
    "beyond-float32": (PREDICT, point_body(b"1e39")),
    "beyond-float32-v1": (V1, b'{"instances": [[3.5e38, 1]]}'),
    # finite in float32, but the network's arithmetic overflows to NaN: never a 200 with null
    "overflowing-model": (PREDICT, point_body(b"1.8221820e38", b"-6.8788875e6")),
    "overflowing-model-v1": (V1, b'{"instances": [[1.8221820e38, -6.8788875e6]]}'),
    "5000-digit-int": (PREDICT, point_body(b"9" * 5000)),
    "5000-digit-exponent": (PREDICT, point_body(b"1e" + b"9" * 5000)),
    "huge-shape-v2": (
        V2,
        b'{"inputs": [{"name": "points", "shape": [99999999999999999999, 2], '
        b'"datatype": "FP32", "data": [1, 2]}]}',
    ),
    "negative-shape-v2": (
        V2,
        b'{"inputs": [{"name": "points", "shape": [-1, 2], "datatype": "FP32", "data": [1, 2]}]}',
    ),
    # duplicate keys
    "duplicate-x": (PREDICT, b'{"points": [{"x": 1, "x": 2, "y": 1}]}'),
    "duplicate-points": (PREDICT, b'{"points": [{"x": 1, "y": 1}], "points": [{"x": 2, "y": 2}]}'),
    "duplicate-v1": (V1, b'{"instances": [[1, 1]], "instances": [[2, 2]]}'),
    "duplicate-v2": (
        V2,
        b'{"inputs": [{"name": "points", "name": "points", "shape": [1, 2], '
        b'"datatype": "FP32", "data": [1, 2]}]}',
    ),
    # shapes and types
    "empty": (PREDICT, b""),
    "null": (PREDICT, b"null"),
    "array": (PREDICT, b"[]"),
    "string": (PREDICT, b'"points"'),
    "trailing-garbage": (PREDICT, point_body(b"1") + b" {}"),
    "truncated": (PREDICT, point_body(b"1")[:-3]),
    "string-number": (PREDICT, point_body(b'"1"')),
    "bool-number": (PREDICT, point_body(b"true")),
    "extra-field": (PREDICT, b'{"points": [{"x": 1, "y": 1, "z": 1}]}'),
    "no-points": (PREDICT, b'{"points": []}'),
    "too-many-points": (PREDICT, json.dumps({"points": [{"x": 1, "y": 1}] * 1025}).encode()),
    "too-many-v1": (V1, json.dumps({"instances": [[1, 1]] * 1025}).encode()),
    "too-many-v2": (
        V2,
        json.dumps(
            {
                "inputs": [
                    {"name": "points", "shape": [1025, 2], "datatype": "FP32", "data": [1.0] * 2050}
                ]
            }
        ).encode(),
    ),
    "control-chars": (PREDICT, b'{"points": [{"x": 1, "y": 1}], "\x00\x01": 1}'),
}


@pytest.mark.parametrize("name", sorted(BODIES))
def test_hostile_body_gets_quick_json_4xx(hardened_server: ServerProcess, name: str) -> None:
    path, body = BODIES[name]
    response = raw_request(hardened_server.url, http(path, body))
    assert_json_4xx(response, QUICK_S)


@pytest.mark.parametrize(
    ("name", "payload", "status"),
    [
        ("text-plain", http(PREDICT, point_body(b"1"), content_type="text/plain"), 415),
        ("no-content-type", http(PREDICT, point_body(b"1"), content_type=None), 415),
        ("xml", http(V1, b"<a/>", content_type="application/xml"), 415),
        ("multipart", http(PREDICT, b"--a--", content_type="multipart/form-data; boundary=a"), 415),
        ("gzip", http(PREDICT, b"\x1f\x8b\x08\x00", extra="Content-Encoding: gzip\r\n"), 415),
        ("wrong-method", http(PREDICT, method="PUT"), 405),
        (
            "cors-preflight-closed",
            http(
                PREDICT,
                method="OPTIONS",
                extra="Origin: https://evil.example\r\nAccess-Control-Request-Method: POST\r\n",
            ),
            405,
        ),
        ("version-not-int", http(PREDICT + "?version=abc", point_body(b"1")), 422),
        ("version-huge", http(PREDICT + "?version=" + "9" * 400, point_body(b"1")), 404),
        (
            "version-path-huge",
            http("/v1/models/xor/versions/" + "9" * 400 + ":predict", b'{"instances": [[1, 1]]}'),
            404,
        ),
        ("model-traversal", http("/v2/models/..%2F..%2Fetc%2Fpasswd/infer", b"{}"), 404),
        (
            "v2-header-length-too-big",
            http(V2, b"{}", extra=f"{V2_HEADER}: 99\r\n"),
            400,
        ),
        (
            "v2-header-length-negative",
            http(V2, b"{}", extra=f"{V2_HEADER}: -1\r\n"),
            400,
        ),
        (
            "v2-binary-size-lies",
            http(
                V2,
                V2_BINARY_HEAD + b"\x00\x00",
                extra=f"{V2_HEADER}: {len(V2_BINARY_HEAD)}\r\n",
            ),
            400,
        ),
        ("declared-10mb", http(PREDICT, b"x" * TEN_MB), 413),
        # Malformed HTTP: answered by the connection protocol itself, still as JSON.
        ("garbage-request-line", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),
        ("bad-header-bytes", http(PREDICT, point_body(b"1"), extra="X-A: \x01\x02\r\n"), 400),
        ("unknown-method", http(PREDICT, point_body(b"1"), method="BREW"), 400),
        (
            "negative-length",
            b"POST /predict HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
            400,
        ),
        (
            "length-and-chunked",
            b"POST /predict HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        (
            "two-lengths",
            b"POST /predict HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n"
            b"Content-Length: 2\r\n\r\n{}",
            400,
        ),
        (
            "huge-length",
            b"POST /predict HTTP/1.1\r\nHost: a\r\nContent-Length: " + b"9" * 30 + b"\r\n\r\n{}",
            400,
        ),
        ("non-ascii-path", b"GET /pr\xc3\xa9dict HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (
            "100kb-header",
            http("/healthz", method="GET", extra="X-A: " + "a" * 100_000 + "\r\n"),
            431,
        ),
        ("20k-headers", http("/healthz", method="GET", extra="X-A: a\r\n" * 20_000), 431),
    ],
)
def test_hostile_request_gets_expected_status(
    hardened_server: ServerProcess, name: str, payload: bytes, status: int
) -> None:
    response = assert_json_4xx(raw_request(hardened_server.url, payload), QUICK_S)
    assert response.status == status, response


def test_chunked_10mb_body_is_cut_off(hardened_server: ServerProcess) -> None:
    body = b'{"points": [' + b'{"x": 1, "y": 1}, ' * 600_000 + b'{"x": 1, "y": 1}]}'
    chunks = [b"POST /predict HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
              b"Transfer-Encoding: chunked\r\n\r\n"]  # fmt: skip
    for i in range(0, len(body), 65536):
        piece = body[i : i + 65536]
        chunks.append(b"%x\r\n%s\r\n" % (len(piece), piece))
    response = raw_request(hardened_server.url, b"".join([*chunks, b"0\r\n\r\n"]))
    assert assert_json_4xx(response, QUICK_S).status == 413


def test_10mb_body_from_httpx_reads_413_and_connection_is_reusable(
    hardened_server: ServerProcess,
) -> None:
    # A client that sends its whole body before reading (httpx, requests, curl) must see the
    # 413, not a connection reset, and may send its next request on the same connection.
    with httpx.Client(base_url=hardened_server.url, timeout=20) as client:
        started = time.perf_counter()
        r = client.post(PREDICT, content=b"0" * TEN_MB, headers={"content-type": JSON_TYPE})
        assert r.status_code == 413 and r.json()["error"]["field"] == "body"
        assert time.perf_counter() - started < QUICK_S
        r = client.post(PREDICT, json={"points": [{"x": 1, "y": -1}]})
        assert r.status_code == 200


def test_slow_head_gets_408_and_idle_connection_is_closed(hardened_server: ServerProcess) -> None:
    head = http(PREDICT, point_body(b"1"))
    # One byte of head every 0.3 s: never idle, yet the head must be complete in time.
    response = raw_request(
        hardened_server.url, b"", chunks=[head[i : i + 1] for i in range(40)], pause_s=0.3
    )
    response = assert_json_4xx(response, HEADER_TIMEOUT_S + QUICK_S + 12)
    assert response.status == 408

    host, port = hardened_server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        started = time.perf_counter()
        assert sock.recv(100) == b""  # closed by the server, silently: nothing was asked
        assert time.perf_counter() - started < HEADER_TIMEOUT_S + QUICK_S


@pytest.mark.parametrize("pace", ["stalled", "trickle"])
def test_slow_body_gets_408(hardened_server: ServerProcess, pace: str) -> None:
    body = point_body(b"1")
    head = http(PREDICT, body)[: -len(body)]
    if pace == "stalled":  # the body stops half way and the client waits
        chunks, pause = [head + body[:10]], 0.0
    else:  # a byte every 0.2 s: each read is quick, the whole is too slow
        chunks, pause = [head] + [body[i : i + 1] for i in range(len(body))], 0.2
    response = raw_request(hardened_server.url, b"", chunks=chunks, pause_s=pause, timeout=30)
    response = assert_json_4xx(response, BODY_TIMEOUT_S + QUICK_S + len(chunks) * pause)
    assert response.status == 408
    assert response.headers.get("connection") == "close"
    assert "body_timeout_s" in json.loads(response.body)["error"]["message"]


def test_server_is_healthy_after_the_corpus(hardened_server: ServerProcess) -> None:
    r = httpx.post(f"{hardened_server.url}{PREDICT}", json={"points": [{"x": 1, "y": -1}]})
    assert r.status_code == 200 and r.json()["predictions"][0]["class_id"] == 1
    assert httpx.get(f"{hardened_server.url}/readyz").status_code == 200
    assert "Traceback" not in hardened_server.log()


def assert_json_4xx(response: RawResponse | None, within_s: float) -> RawResponse:
    assert response is not None, "the server closed the connection without an answer"
    assert 400 <= response.status < 500, response
    assert response.headers.get("content-type", "").startswith(JSON_TYPE), response
    error = json.loads(response.body)["error"]
    message = error if isinstance(error, str) else error["message"]
    assert message and not any(leak in message for leak in LEAKS), message
    assert response.seconds < within_s, f"answered in {response.seconds:.2f} s"
    return response
