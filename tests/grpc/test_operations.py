"""Operations over gRPC: health (Check and Watch, following readiness and the drain),
reflection, per-method metrics, request ids in the access log, SIGTERM, TLS."""

from __future__ import annotations

import re
import shutil
import signal
import ssl
import time
from concurrent.futures import Future
from pathlib import Path

import grpc
import httpx
import pytest
from google.protobuf import descriptor_pool, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from bench._process import ServerProcess
from tests.grpc.conftest import QUADRANTS, Certificates, GrpcProcess, start_grpc_server

pytestmark = pytest.mark.slow

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
V2 = "inference.GRPCInferenceService"


def _infer_request(n: int = 1) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="xor")
    request.inputs.add(name="points", datatype="FP32", shape=[n, 2])
    request.raw_input_contents.append(QUADRANTS[:n].tobytes())
    return request


def _grpc_count(server: ServerProcess, method: str, code: str) -> float:
    text = httpx.get(f"{server.url}/metrics").text
    pattern = (
        rf'^xor_dnn_grpc_requests_total\{{code="{code}",method="{re.escape(method)}"\}} (\S+)$'
    )
    match = re.search(pattern, text, re.M)
    return float(match.group(1)) if match else 0.0


def test_health_reflection_metrics_and_request_ids(
    served: GrpcProcess, channel: grpc.Channel
) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", V2, "tensorflow.serving.PredictionService"):
        answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=30)
        assert answer.status == SERVING, service
    with pytest.raises(grpc.RpcError) as err:
        health.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=30)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND

    # Reflection, as grpcurl uses it: list the services, then call one from its descriptor alone.
    database = ProtoReflectionDescriptorDatabase(channel)
    services = set(database.get_services())
    assert {V2, "tensorflow.serving.PredictionService", "tensorflow.serving.ModelService",
            "grpc.health.v1.Health"} <= services  # fmt: skip
    pool = descriptor_pool.DescriptorPool(database)
    method = pool.FindServiceByName(V2).FindMethodByName("ServerMetadata")
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    call = channel.unary_unary(
        f"/{V2}/ServerMetadata",
        request_serializer=request_class.SerializeToString,
        response_deserializer=response_class.FromString,
    )
    assert call(request_class(), timeout=30).name == "xor-dnn"

    # Per-method metrics next to the HTTP ones.
    infer = f"/{V2}/ModelInfer"
    before_ok = _grpc_count(served.process, infer, "OK")
    before_bad = _grpc_count(served.process, infer, "INVALID_ARGUMENT")
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    _, call_state = stub.ModelInfer.with_call(
        _infer_request(), metadata=(("x-request-id", "grpc-good-1"),), timeout=30
    )
    assert ("x-request-id", "grpc-good-1") in call_state.trailing_metadata()
    bad = _infer_request()
    bad.inputs[0].name = "x"
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(bad, metadata=(("x-request-id", "grpc-bad-1"),), timeout=30)
    assert ("x-request-id", "grpc-bad-1") in err.value.trailing_metadata()
    with pytest.raises(grpc.RpcError) as err:  # no id given: one is made up and sent back
        stub.ModelInfer(bad, timeout=30)
    made_up = dict(err.value.trailing_metadata())["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", made_up)
    assert _grpc_count(served.process, infer, "OK") == before_ok + 1
    assert _grpc_count(served.process, infer, "INVALID_ARGUMENT") == before_bad + 2
    text = httpx.get(f"{served.process.url}/metrics").text
    assert f'xor_dnn_grpc_request_duration_seconds_count{{method="{infer}"}}' in text

    # The access log (errors by default) names the failed call by its request id.
    log = served.process.log()
    assert re.search(
        rf"\[grpc-bad-1\] service.access: gRPC {infer} -> INVALID_ARGUMENT in [\d.]+ ms: "
        r"inputs\[0\].name",
        log,
    ), log[-3000:]
    assert f"[{made_up}] service.access" in log
    assert "grpc-good-1" not in log


def test_not_ready_then_serving_then_draining(model_dir: Path, tmp_path: Path) -> None:
    """Health follows the model folder and the drain; inference is UNAVAILABLE until ready."""
    models = tmp_path / "models"
    models.mkdir()
    server = start_grpc_server(models, tmp_path / "server.log", wait=False)
    try:
        with server.channel() as channel:
            grpc.channel_ready_future(channel).result(timeout=120)
            health = health_pb2_grpc.HealthStub(channel)
            answer = health.Check(health_pb2.HealthCheckRequest(), timeout=30)
            assert answer.status == NOT_SERVING
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            assert not stub.ServerReady(pb.ServerReadyRequest(), timeout=30).ready
            with pytest.raises(grpc.RpcError) as err:
                stub.ModelInfer(_infer_request(), timeout=30)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value.details()

            watch = health.Watch(health_pb2.HealthCheckRequest(service=V2), timeout=120)
            assert next(watch).status == NOT_SERVING
            shutil.copytree(model_dir / "1", models / "1")  # the poller loads it
            assert next(watch).status == SERVING
            assert stub.ModelInfer(_infer_request(4), timeout=30).model_version == "1"

            # SIGTERM with calls in flight: each one is answered (none cut off), the Watch
            # stream says NOT_SERVING and ends, the process exits 0.
            calls: list[Future[pb.ModelInferResponse]] = [
                stub.ModelInfer.future(_infer_request(4), timeout=60) for _ in range(50)
            ]
            server.process.proc.send_signal(signal.SIGTERM)
            assert [answer.status for answer in watch] == [NOT_SERVING]
            codes = set()
            for call in calls:
                try:
                    call.result()
                    codes.add(grpc.StatusCode.OK)
                except grpc.RpcError as exc:
                    codes.add(exc.code())
            assert codes <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, codes
        assert server.process.proc.wait(timeout=60) == 0, server.process.log()[-3000:]
    finally:
        server.process.kill()


@pytest.mark.parametrize("mutual", [False, True], ids=["tls", "mutual-tls"])
def test_tls_on_both_ports(
    model_dir: Path, tmp_path: Path, certificates: Certificates, mutual: bool
) -> None:
    args = ["--tls-cert-file", str(certificates.server_cert),
            "--tls-key-file", str(certificates.server_key)]  # fmt: skip
    if mutual:
        args += ["--tls-client-ca-file", str(certificates.ca)]
    server = start_grpc_server(model_dir, tmp_path / "server.log", *args, wait=False)
    ca = certificates.ca.read_bytes()
    client_key = certificates.client_key.read_bytes()
    client_cert = certificates.client_cert.read_bytes()
    https = ssl.create_default_context(cafile=certificates.ca)
    if mutual:
        https.load_cert_chain(certificates.client_cert, certificates.client_key)
    credentials = (
        grpc.ssl_channel_credentials(ca, client_key, client_cert)
        if mutual
        else grpc.ssl_channel_credentials(ca)
    )
    url = f"https://127.0.0.1:{server.process.port}/readyz"
    try:
        # Ready over HTTPS first: a gRPC channel that meets a port not yet open backs off
        # exponentially (1 s, 1.6 s, ... up to 120 s), so on a busy machine its next attempt
        # could come after the test's deadline although the server is long up.
        deadline = time.monotonic() + 120
        while True:
            assert server.process.proc.poll() is None, server.process.log()[-3000:]
            try:
                if httpx.get(url, verify=https, timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "not ready over HTTPS after 120 s"
            time.sleep(0.2)
        with grpc.secure_channel(server.target, credentials) as channel:
            grpc.channel_ready_future(channel).result(timeout=60)
            health = health_pb2_grpc.HealthStub(channel)
            watch = health.Watch(health_pb2.HealthCheckRequest(), timeout=120)
            assert SERVING in (answer.status for answer in watch)  # blocks until ready
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            assert len(stub.ModelInfer(_infer_request(4), timeout=30).raw_output_contents) == 2

        assert httpx.get(url, verify=https).status_code == 200
        # Plaintext is refused on both ports; so is a client without a certificate, under mTLS.
        with pytest.raises(httpx.HTTPError):
            httpx.get(url.replace("https", "http"))
        check = health_pb2.HealthCheckRequest()
        with grpc.insecure_channel(server.target) as plain:
            with pytest.raises(grpc.RpcError) as err:
                health_pb2_grpc.HealthStub(plain).Check(check, timeout=30)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        if mutual:
            with pytest.raises(httpx.HTTPError):
                httpx.get(url, verify=ssl.create_default_context(cafile=certificates.ca))
            anonymous = grpc.ssl_channel_credentials(ca)
            with grpc.secure_channel(server.target, anonymous) as channel:
                with pytest.raises(grpc.RpcError) as err:
                    health_pb2_grpc.HealthStub(channel).Check(check, timeout=30)
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert server.process.terminate() == 0
    finally:
        server.process.kill()


def test_workers_share_the_grpc_port(model_dir: Path, tmp_path: Path) -> None:
    """``--workers 2``: every worker serves the gRPC port (SO_REUSEPORT); /metrics adds up."""
    server = start_grpc_server(model_dir, tmp_path / "server.log", "--workers", "2")
    try:
        for _ in range(6):  # a new connection each time: the kernel spreads them
            with server.channel() as channel:
                stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
                assert stub.ModelInfer(_infer_request(4), timeout=60).model_version == "2"
        assert _grpc_count(server.process, f"/{V2}/ModelInfer", "OK") == 6
        assert server.process.terminate() == 0
    finally:
        server.process.kill()
