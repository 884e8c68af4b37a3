"""docker-compose's ``s3`` profile: how it is wired, and its xor-dnn services run on an S3 API.

No container registry is reachable here, so the MinIO and mc images cannot be pulled and the
stack cannot be started as a whole. What can be tested is: the file's wiring (below), and
``trainer-s3`` and ``api-s3`` run as local processes with exactly their declared command and
environment (tests/deploy/manifests.py), against moto in MinIO's place. The only values
swapped are the compose network's: MinIO's endpoint for moto's, the api's address and ports for
127.0.0.1 and free ones, ``/tmp`` for a folder. ``.ci/validate-deploy`` renders every profile
with podman-compose.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from bench._process import free_port, start_process
from bench._s3server import S3, S3_ENV
from service.config import ENV_PREFIX, Settings
from tests.deploy.manifests import (
    base_env,
    compose_mounts,
    compose_process,
    interpolate,
    read_compose,
    read_dockerfile,
)
from tests.storage.test_serving_remote import copy_of
from xor_dnn.modelstore import ModelRepository, publish_version

S3_SERVICES = {"minio", "buckets", "trainer-s3", "api-s3"}
SETTINGS_ENV = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}


def services() -> dict[str, Any]:
    found: dict[str, Any] = read_compose()["services"]
    return found


def env_of(service: dict[str, Any]) -> dict[str, str]:
    return {k: interpolate(str(v)) for k, v in service.get("environment", {}).items()}


def test_the_s3_profile_is_opt_in_and_starts_in_order() -> None:
    found = services()
    in_profile = {name for name, svc in found.items() if "s3" in svc.get("profiles", [])}
    assert in_profile == S3_SERVICES
    # `docker compose up` without the profile starts none of them, and nothing else needs them
    for name, svc in found.items():
        if name not in S3_SERVICES:
            assert not set(svc.get("depends_on", {})) & S3_SERVICES, name
    # `docker compose --profile s3 up api-s3` pulls in the rest, in this order
    assert found["api-s3"]["depends_on"] == {
        "trainer-s3": {"condition": "service_completed_successfully"}
    }
    assert found["trainer-s3"]["depends_on"] == {
        "buckets": {"condition": "service_completed_successfully"}
    }
    assert found["buckets"]["depends_on"] == {"minio": {"condition": "service_healthy"}}


def test_the_s3_services_agree_on_bucket_endpoint_and_keys() -> None:
    found = services()
    api, trainer, minio = env_of(found["api-s3"]), env_of(found["trainer-s3"]), found["minio"]
    bucket = urlsplit(api["XOR_DNN_MODEL_DIR"]).netloc
    assert api["XOR_DNN_MODEL_DIR"].startswith("s3://")
    assert found["buckets"]["command"] == ["mb", "--ignore-existing", f"minio/{bucket}"]
    for key in ("XOR_DNN_MODEL_DIR", *S3_ENV):
        assert api.get(key) == trainer.get(key), key
    root = env_of(minio)
    assert (api["AWS_ACCESS_KEY_ID"], api["AWS_SECRET_ACCESS_KEY"]) == (
        root["MINIO_ROOT_USER"],
        root["MINIO_ROOT_PASSWORD"],
    )
    assert len(root["MINIO_ROOT_PASSWORD"]) >= 8  # MinIO refuses to start with less
    port = minio["command"][minio["command"].index("--address") + 1].lstrip(":")
    assert api["AWS_ENDPOINT_URL"] == f"http://minio:{port}"
    mc_host = env_of(found["buckets"])["MC_HOST_minio"]
    assert mc_host == (
        f"http://{root['MINIO_ROOT_USER']}:{root['MINIO_ROOT_PASSWORD']}@minio:{port}"
    )


def test_api_s3_mounts_nothing_and_its_settings_are_valid() -> None:
    api = services()["api-s3"]
    assert "volumes" not in api  # no shared folder: versions come from the bucket
    env = env_of(api)
    unknown = set(env) - SETTINGS_ENV - set(S3_ENV)
    assert not unknown, f"api-s3 environment keys nothing reads: {sorted(unknown)}"
    settings = Settings.model_validate(
        {k[len(ENV_PREFIX) :].lower(): v for k, v in env.items() if k.startswith(ENV_PREFIX)}
    )
    # the cache is on the container's only writable path, its /tmp tmpfs
    assert str(settings.cache_dir).startswith("/tmp/")
    assert any(t.split(":")[0] == "/tmp" for t in api["tmpfs"])
    assert all(p.startswith("127.0.0.1:") for p in api["ports"])


def _compose_env(proc_env: dict[str, str], s3: S3) -> dict[str, str]:
    """The process environment with MinIO's endpoint replaced by the test server's."""
    assert proc_env["AWS_ENDPOINT_URL"] == "http://minio:9000"
    return {**base_env(), **proc_env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{s3.moto_port}"}


@pytest.mark.slow
def test_trainer_s3_and_api_s3_run_against_an_s3_api(
    s3: S3, model_dir: Path, tmp_path: Path
) -> None:
    found, image = services(), read_dockerfile()
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    api_service, trainer_service = found["api-s3"], found["trainer-s3"]
    uri = env_of(api_service)["XOR_DNN_MODEL_DIR"]
    s3.make_bucket(urlsplit(uri).netloc)  # what `buckets` (mc mb) does
    publish_version(uri, copy_of(model_dir / "1"))

    # With a version in the bucket the one-off trainer exits 0 at once, training nothing.
    mounts = {"tmpfs": scratch}
    trainer = compose_process(trainer_service, image, compose_mounts(trainer_service, mounts))
    done = subprocess.run(
        trainer.argv, env=_compose_env(trainer.env, s3), capture_output=True, timeout=120
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    assert b"nothing to do" in done.stdout
    assert ModelRepository(uri).list_versions() == [1]

    api = compose_process(api_service, image, compose_mounts(api_service, mounts))
    port = free_port()
    env = {
        **_compose_env(api.env, s3),
        f"{ENV_PREFIX}HOST": "127.0.0.1",
        f"{ENV_PREFIX}PORT": str(port),
        f"{ENV_PREFIX}GRPC_PORT": str(free_port()),
    }
    server = start_process(api.argv, tmp_path / "api-s3.log", port, env=env, timeout=180)
    try:
        with urllib.request.urlopen(f"{server.url}/readyz", timeout=10) as response:
            ready = json.load(response)
        assert (ready["source"], ready["store"], ready["default_version"]) == (uri, "ok", 1)
        request = urllib.request.Request(
            f"{server.url}/predict",
            data=json.dumps({"points": [{"x": 1, "y": -1}]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.load(response)["model_version"] == 1
        # the version was downloaded into the declared cache, on the /tmp stand-in
        assert (scratch / "model-cache" / "1" / "manifest.json").is_file()
    finally:
        assert server.stop() == 0, server.log()[-3000:]
