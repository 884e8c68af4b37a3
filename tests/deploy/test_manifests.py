"""Static bindings between the manifests, the image and the code (fast: no TensorFlow).

Every object is read from what ``kubectl kustomize`` renders, so the checks see what a cluster
would get. Settings keys are checked against :class:`service.config.Settings` because
pydantic-settings silently ignores unknown ``XOR_DNN_*`` variables: a typo'd key in a
ConfigMap would otherwise ship the default without a word.
"""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from service.config import ENV_PREFIX, Settings
from tests.deploy.manifests import (
    JOBS,
    K8S,
    OVERLAYS,
    ROOT,
    config_maps,
    find,
    interpolate,
    kubectl,
    pod_spec,
    read_compose,
    read_dockerfile,
    render,
)
from xor_dnn.cli import build_parser
from xor_dnn.storage import is_remote

pytestmark = pytest.mark.skipif(kubectl() is None, reason="kubectl not installed")

SETTINGS_ENV = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}
# Variables read outside Settings: the scorer's shard count and model dir (scoring/cli.py),
# the object-store credentials folder (xor_dnn/storage.py).
OTHER_ENV = {"XOR_DNN_NUM_SHARDS", "XOR_DNN_MODEL_DIR", "XOR_DNN_STORE_CREDENTIALS_DIR"}
WORKLOADS = ("Deployment", "Job", "CronJob")


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    out = {f"overlays/{o}": render(K8S / "overlays" / o) for o in OVERLAYS}
    out.update({f"jobs/{j}": render(K8S / "jobs" / j) for j in JOBS})
    out["base"] = render(K8S / "base")
    return out


def workloads(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] in WORKLOADS]


def parse_cli(args: list[str]) -> argparse.Namespace:
    """Parse with the real ``xor-dnn`` parser: an unknown flag or subcommand fails here."""
    try:
        return build_parser().parse_args(args)
    except SystemExit as exc:  # argparse exits on errors; make that a test failure
        raise AssertionError(f"xor-dnn rejects {args}") from exc


def test_every_overlay_and_job_renders(rendered: dict[str, list[dict[str, Any]]]) -> None:
    kinds = {o["kind"] for o in rendered["overlays/prod"]}
    assert {
        "Namespace", "ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler",
        "PodDisruptionBudget", "NetworkPolicy", "CronJob",
    } <= kinds  # fmt: skip
    # Models and batch files both live in buckets in prod: no volume claim at all.
    assert "PersistentVolumeClaim" not in kinds
    assert "PersistentVolumeClaim" in {o["kind"] for o in rendered["overlays/dev"]}
    assert find(rendered["overlays/monitoring"], "ServiceMonitor")
    assert find(rendered["jobs/train"], "Job")["metadata"]["namespace"] == "xor-dnn"
    assert find(rendered["jobs/score"], "Job")["metadata"]["namespace"] == "xor-dnn"
    assert find(rendered["jobs/score-bucket"], "Job")["metadata"]["namespace"] == "xor-dnn"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_configmap_keys_are_real_settings(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    data = find(rendered[f"overlays/{overlay}"], "ConfigMap")["data"]
    unknown = set(data) - SETTINGS_ENV
    assert not unknown, f"ConfigMap keys no Settings field reads: {sorted(unknown)}"
    Settings.model_validate({k[len(ENV_PREFIX) :].lower(): v for k, v in data.items()})


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_api_port_probes_and_service_agree(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    objs = rendered[f"overlays/{overlay}"]
    settings = config_maps(objs)
    deploy = find(objs, "Deployment", "xor-dnn-api")
    spec = pod_spec(deploy)
    (api,) = spec["containers"]
    ports = {p["name"]: p["containerPort"] for p in api["ports"]}
    env = dict(read_dockerfile().env)
    for src in api["envFrom"]:
        if "configMapRef" in src:  # the object-store Secret is the user's
            env.update(settings[src["configMapRef"]["name"]])
    assert int(env["XOR_DNN_PORT"]) == ports["http"], "the app must listen on the declared port"
    assert env["XOR_DNN_HOST"] == "0.0.0.0", "a pod must listen beyond its loopback"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert api[probe]["httpGet"]["port"] in ports, f"{probe} names an undeclared port"
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    svc = find(objs, "Service", "xor-dnn-api")
    labels = deploy["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    assert {p["targetPort"] for p in svc["spec"]["ports"]} <= set(ports)
    pdb = find(objs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = find(objs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deploy["metadata"]["name"]
    assert "replicas" not in deploy["spec"], "the HPA owns the replica count"
    ingress = find(objs, "NetworkPolicy", "xor-dnn-api-ingress")
    assert ingress["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    allowed = [p["port"] for r in ingress["spec"]["ingress"] for p in r["ports"]]
    assert allowed == [ports["http"], ports["grpc"]]
    assert int(env["XOR_DNN_GRPC_PORT"]) == ports["grpc"], "gRPC must listen on its declared port"
    grpc_port = next(p for p in svc["spec"]["ports"] if p["name"] == "grpc")
    assert (grpc_port["targetPort"], grpc_port["appProtocol"]) == ("grpc", "grpc")
    ann = deploy["spec"]["template"]["metadata"]["annotations"]
    assert int(ann["prometheus.io/port"]) == ports["http"]
    # The drain must finish inside the grace period, after the preStop delay.
    pre_stop = api["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    drain = float(env["XOR_DNN_DRAIN_TIMEOUT_S"])
    assert spec["terminationGracePeriodSeconds"] > drain + float(pre_stop[1])
    args = parse_cli(api["args"])
    assert args.command == "serve"


def test_prod_scales_and_spreads(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objs = rendered["overlays/prod"]
    hpa = find(objs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["minReplicas"] >= 2
    assert hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    assert pod_spec(find(objs, "Deployment"))["topologySpreadConstraints"]


@pytest.mark.parametrize("overlay", ["prod", "minio"])
def test_prod_needs_no_read_write_many_claim(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    """Most clusters have no RWX storage class: models come from a bucket (issue #13)."""
    objs = rendered[f"overlays/{overlay}"]
    modes = {
        o["metadata"]["name"]: o["spec"]["accessModes"]
        for o in objs
        if o["kind"] == "PersistentVolumeClaim"
    }
    assert all("ReadWriteMany" not in m for m in modes.values()), modes
    settings = config_maps(objs)[find(objs, "ConfigMap")["metadata"]["name"]]
    assert is_remote(settings["XOR_DNN_MODEL_DIR"])
    (api,) = pod_spec(find(objs, "Deployment", "xor-dnn-api"))["containers"]
    cache = next(m for m in api["volumeMounts"] if m["mountPath"] == settings["XOR_DNN_CACHE_DIR"])
    volume = next(v for v in pod_spec(find(objs, "Deployment", "xor-dnn-api"))["volumes"]
                  if v["name"] == cache["name"])  # fmt: skip
    assert "emptyDir" in volume
    egress = find(objs, "NetworkPolicy", "xor-dnn-object-store-egress")
    ports = {(p["protocol"], p["port"]) for r in egress["spec"]["egress"] for p in r["ports"]}
    store_port = 9000 if overlay == "minio" else 443  # in-cluster MinIO, or the cloud's HTTPS
    assert ports == {("UDP", 53), ("TCP", 53), ("TCP", store_port)}
    selected = set(egress["spec"]["podSelector"]["matchExpressions"][0]["values"])
    assert {"xor-dnn-api", "xor-dnn-score", "xor-dnn-train"} <= selected


def test_servicemonitor_scrapes_the_service_port(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    objs = rendered["overlays/monitoring"]
    svc = find(objs, "Service", "xor-dnn-api")
    monitor = find(objs, "ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    names = {p["name"] for p in svc["spec"]["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= names
    assert {e["path"] for e in monitor["spec"]["endpoints"]} == {"/metrics"}


@pytest.mark.parametrize(
    "where", [*(f"overlays/{o}" for o in OVERLAYS), "jobs/train", "jobs/score"]
)
def test_every_pod_is_hardened(rendered: dict[str, list[dict[str, Any]]], where: str) -> None:
    image = read_dockerfile()
    uid = int(image.user.split(":")[0])
    for obj in workloads(rendered[where]):
        spec = pod_spec(obj)
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        pod_sc = spec["securityContext"]
        assert pod_sc["runAsNonRoot"] is True and pod_sc["runAsUser"] == uid, name
        assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec["automountServiceAccountToken"] is False, name
        declared = {v["name"] for v in spec["volumes"]}
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert {"cpu", "memory"} <= set(c["resources"]["limits"]), name
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]), name
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            assert set(mounts.values()) <= declared, name
            # A read-only root needs a writable /tmp (tempfile, Keras, Prometheus multiproc).
            tmp = next(v for v in spec["volumes"] if v["name"] == mounts["/tmp"])
            assert "emptyDir" in tmp, name
            if not c["image"].startswith("xor-dnn"):
                continue  # MinIO (overlay minio): not this image
            # A local model dir must sit on a mounted volume (an object store needs none).
            model_dir = _effective_env(c, rendered[where], image.env)["XOR_DNN_MODEL_DIR"]
            if not is_remote(model_dir):
                assert any(model_dir.startswith(m + "/") for m in mounts), name


def _effective_env(
    container: dict[str, Any], objs: list[dict[str, Any]], image_env: dict[str, str]
) -> dict[str, str]:
    env = dict(image_env)
    maps = config_maps(objs)
    for src in container.get("envFrom", []):
        if "configMapRef" in src:
            env.update(maps[src["configMapRef"]["name"]])
    env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
    return env


def test_indexed_job_and_cronjob_shard_the_same_way(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    job = find(rendered["jobs/score"], "Job")
    bucket_job = find(rendered["jobs/score-bucket"], "Job")
    cron = find(rendered["overlays/dev"], "CronJob")
    prod_cron = find(rendered["overlays/prod"], "CronJob")
    prod_spec = prod_cron["spec"]["jobTemplate"]["spec"]
    (prod_c,) = prod_spec["template"]["spec"]["containers"]
    (bucket_c,) = bucket_job["spec"]["template"]["spec"]["containers"]
    assert prod_c == bucket_c, "prod scores like the one-off bucket Job"
    # In prod, files, results and the model are in buckets: no batch or model volume.
    for spec in (prod_spec, bucket_job["spec"]):
        volumes = spec["template"]["spec"]["volumes"]
        assert not [v for v in volumes if "persistentVolumeClaim" in v]
        args = parse_cli(spec["template"]["spec"]["containers"][0]["args"])
        assert is_remote(args.input) and is_remote(args.output) and args.resume
    assert "xor-dnn-batch" not in {
        o["metadata"]["name"]
        for o in rendered["overlays/prod"]
        if o["kind"] == "PersistentVolumeClaim"
    }
    for spec in (job["spec"], bucket_job["spec"], cron["spec"]["jobTemplate"]["spec"], prod_spec):
        assert spec["completionMode"] == "Indexed"
        (c,) = spec["template"]["spec"]["containers"]
        env = {e["name"]: e["value"] for e in c.get("env", [])}
        assert int(env["XOR_DNN_NUM_SHARDS"]) == spec["completions"] == spec["parallelism"]
        assert "command" not in c, "the image entrypoint runs `xor-dnn`: no wrapper script"
        args = parse_cli(c["args"])
        assert args.command == "score" and args.shard_index is None and args.num_shards is None
    # The scheduled run is the one-off run on a timer: same container.
    assert (
        job["spec"]["template"]["spec"]["containers"]
        == (cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"])
    )


@pytest.mark.parametrize(
    ("train", "overlay", "claims"),
    [
        ("jobs/train", "overlays/dev", {"xor-dnn-models"}),
        ("jobs/train-bucket", "overlays/prod", set()),
    ],
)
def test_training_job_publishes_where_the_api_reads(
    rendered: dict[str, list[dict[str, Any]]], train: str, overlay: str, claims: set[str]
) -> None:
    job = find(rendered[train], "Job")
    (c,) = pod_spec(job)["containers"]
    args = parse_cli(c["args"])
    assert args.command == "train"
    objs = rendered[overlay]
    api_env = config_maps(objs)[find(objs, "ConfigMap")["metadata"]["name"]]
    assert str(args.model_dir) == api_env["XOR_DNN_MODEL_DIR"]
    train_claims = {v["persistentVolumeClaim"]["claimName"] for v in pod_spec(job)["volumes"]
                    if "persistentVolumeClaim" in v}  # fmt: skip
    api_claims = {v["persistentVolumeClaim"]["claimName"]
                  for v in pod_spec(find(objs, "Deployment"))["volumes"]
                  if "persistentVolumeClaim" in v}  # fmt: skip
    assert train_claims == api_claims == claims
    if claims:
        models_mount = next(m for m in c["volumeMounts"] if m["mountPath"] == "/models")
        assert not models_mount.get("readOnly"), "the training Job writes versions"


def test_image_matches_manifests() -> None:
    image = read_dockerfile()
    assert image.entrypoint[-1] == "xor-dnn"
    assert image.expose == [int(image.env["XOR_DNN_PORT"])]
    assert image.user.split(":")[0].isdigit(), "numeric USER, so runAsNonRoot can verify it"
    assert parse_cli(image.cmd).command == "serve"
    assert "/healthz" in " ".join(image.healthcheck)
    text = (ROOT / ".dockerignore").read_text()
    for needed in ("pyproject.toml", "requirements.lock", "xor_dnn/", "service/", "scoring/"):
        assert f"!{needed}" in text


def test_compose_binds_to_the_image_and_settings() -> None:
    compose = read_compose()
    services = compose["services"]
    assert set(services) >= {"trainer", "api", "prometheus", "grafana", "scorer"}
    api = services["api"]
    unknown = set(api["environment"]) - SETTINGS_ENV
    assert not unknown, f"api environment keys no Settings field reads: {sorted(unknown)}"
    env = {k: interpolate(str(v)) for k, v in api["environment"].items()}
    Settings.model_validate({k[len(ENV_PREFIX) :].lower(): v for k, v in env.items()})
    published = [interpolate(p) for p in api["ports"]]
    assert published == [
        f"127.0.0.1:8000:{env['XOR_DNN_PORT']}",
        f"127.0.0.1:8001:{env['XOR_DNN_GRPC_PORT']}",
    ]
    assert api["depends_on"]["trainer"]["condition"] == "service_completed_successfully"
    assert parse_cli(api["command"]).command == "serve"
    assert services["scorer"]["profiles"] == ["batch"]
    assert parse_cli(services["scorer"]["command"]).command == "score"
    prom = (ROOT / "deploy" / "prometheus.yml").read_text()
    assert f"api:{env['XOR_DNN_PORT']}" in prom
