"""Run what the manifests declare, as a cluster (or docker compose) would, and check it works.

Each container becomes a local process (tests/deploy/manifests.py): the image's entrypoint
plus the manifest's args, its env, volumes as local folders. Pods run in their own network
namespace, so the declared port is used as is and no network beyond the pod is reachable
(as the NetworkPolicy enforces); probes and health checks are run inside that namespace.
"""

from __future__ import annotations

import itertools
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from tests.deploy.manifests import (
    K8S,
    Process,
    base_env,
    compose_mounts,
    compose_process,
    config_maps,
    container_process,
    find,
    http_get,
    http_post,
    in_pod,
    kubectl,
    netns_available,
    pod_spec,
    read_compose,
    read_dockerfile,
    render,
    run_in_pod,
    wait_for,
)
from xor_dnn.modelstore import latest_version, list_versions, load_version

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(kubectl() is None, reason="kubectl not installed"),
    pytest.mark.skipif(
        not netns_available(), reason="needs unshare/nsenter (root) for per-pod networks"
    ),
]


def probe_budget(probe: dict[str, Any]) -> float:
    """How long the kubelet would wait before giving up on a probe."""
    return float(probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3))


@pytest.fixture(scope="module")
def prod() -> list[dict[str, Any]]:
    # The dev overlay: the same API container reading a mounted folder (prod reads a bucket,
    # which tests/storage exercises against a real S3 API).
    return render(K8S / "overlays" / "dev")


@pytest.fixture(scope="module")
def api_pod(
    prod: list[dict[str, Any]], model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[subprocess.Popen[bytes], dict[str, Any], Process, Path]]:
    """The prod Deployment's API container, running on a copy of the two fixture versions."""
    root = tmp_path_factory.mktemp("api-pod")
    shutil.copytree(model_dir, root / "models" / "xor")
    (root / "tmp").mkdir()
    deploy = find(prod, "Deployment", "xor-dnn-api")
    (container,) = pod_spec(deploy)["containers"]
    proc = container_process(
        container,
        read_dockerfile(),
        {"/models": root / "models", "/tmp": root / "tmp"},
        config_maps=config_maps(prod),
    )
    log = root / "api.log"
    with run_in_pod(proc, log=log) as popen:
        port = container["ports"][0]["containerPort"]
        startup = container["startupProbe"]
        wait_for(popen, port, startup["httpGet"]["path"], timeout=probe_budget(startup), log=log)
        yield popen, container, proc, log


def test_api_serves_on_declared_port_and_probes_answer(
    api_pod: tuple[subprocess.Popen[bytes], dict[str, Any], Process, Path],
) -> None:
    popen, container, _, log = api_pod
    port = container["ports"][0]["containerPort"]
    ready = container["readinessProbe"]
    wait_for(popen, port, ready["httpGet"]["path"], timeout=probe_budget(ready) + 30, log=log)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        status, _ = http_get(popen.pid, port, container[probe]["httpGet"]["path"])
        assert status == 200, probe
    status, body = http_get(popen.pid, port, "/metrics")
    assert status == 200 and "xor_dnn_http_requests_total" in body
    status, answer = http_post(
        popen.pid, port, "/predict", {"points": [{"x": 2.0, "y": -3.0}, {"x": 2.0, "y": 3.0}]}
    )
    assert status == 200, answer
    assert answer["model_version"] == 2
    assert [p["class_id"] for p in answer["predictions"]] == [1, 0]


def test_compose_and_image_healthchecks_pass_against_the_pod(
    api_pod: tuple[subprocess.Popen[bytes], dict[str, Any], Process, Path],
) -> None:
    popen, container, proc, log = api_pod
    port = container["ports"][0]["containerPort"]
    wait_for(popen, port, "/readyz", timeout=60, log=log)
    compose_check = read_compose()["services"]["api"]["healthcheck"]["test"]
    assert compose_check[0] == "CMD"
    done = in_pod(popen.pid, compose_check[1:])
    assert done.returncode == 0, done.stderr
    # The image's HEALTHCHECK, with the image's env (it reads XOR_DNN_PORT).
    done = in_pod(popen.pid, read_dockerfile().healthcheck, env=proc.env)
    assert done.returncode == 0, done.stderr


# The Job trains 5 runs of the lesson's network: about a minute of CPU, several on a busy box.
@pytest.mark.timeout(1200)
def test_training_job_publishes_a_version_the_api_hot_loads(
    api_pod: tuple[subprocess.Popen[bytes], dict[str, Any], Process, Path],
) -> None:
    popen, container, api_proc, log = api_pod
    port = container["ports"][0]["containerPort"]
    models = api_proc.local("/models")
    before = list_versions(models / "xor")
    job = find(render(K8S / "jobs" / "train"), "Job")
    (train,) = pod_spec(job)["containers"]
    scratch = models.parent / "train-tmp"
    scratch.mkdir()
    proc = container_process(train, read_dockerfile(), {"/models": models, "/tmp": scratch})
    train_log = models.parent / "train.log"
    with run_in_pod(proc, log=train_log) as trainer:
        code = trainer.wait(timeout=job["spec"]["activeDeadlineSeconds"])
    assert code == 0, train_log.read_text()
    after = list_versions(models / "xor")
    assert after == [*before, before[-1] + 1]
    new = after[-1]
    deadline = time.monotonic() + 60
    served = None
    while time.monotonic() < deadline:
        status, body = http_get(popen.pid, port, "/models/xor")
        served = body
        if status == 200 and f'"default_version":{new}' in body.replace(" ", ""):
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"API never switched to v{new}: {served}\n{log.read_text()[-3000:]}")
    status, answer = http_post(popen.pid, port, "/predict", {"points": [{"x": 1, "y": 1}]})
    assert status == 200 and answer["model_version"] == new


def test_api_drains_and_exits_zero_within_the_grace_period(
    prod: list[dict[str, Any]],
    api_pod: tuple[subprocess.Popen[bytes], dict[str, Any], Process, Path],
) -> None:
    # Runs last in this module (pytest keeps file order): it stops the shared pod.
    popen, container, _, log = api_pod
    grace = pod_spec(find(prod, "Deployment"))["terminationGracePeriodSeconds"]
    pre_stop = float(container["lifecycle"]["preStop"]["exec"]["command"][1])
    started = time.monotonic()
    popen.send_signal(signal.SIGTERM)
    code = popen.wait(timeout=grace)
    assert code == 0, log.read_text()[-3000:]
    assert time.monotonic() - started + pre_stop < grace


def _points(n: int, seed: int = 7) -> pa.Table:
    rng = np.random.default_rng(seed)
    xy = rng.uniform(-5, 5, size=(n, 2))
    return pa.table({"id": np.arange(n), "x": xy[:, 0], "y": xy[:, 1]})


def test_indexed_job_shards_score_every_row_exactly_once(model_dir: Path, tmp_path: Path) -> None:
    job = find(render(K8S / "jobs" / "score"), "Job")
    spec = job["spec"]
    (container,) = spec["template"]["spec"]["containers"]
    shards = spec["completions"]
    mounts = {"/models": model_dir.parent, "/data": tmp_path / "data", "/tmp": tmp_path / "tmp"}
    for folder in (mounts["/data"], mounts["/tmp"]):
        folder.mkdir()
    probe = container_process(container, read_dockerfile(), mounts)
    source = _points(25_013)
    args = container["args"]
    # The Job scores a folder of files; five of uneven sizes, one in row groups.
    in_dir = probe.local(args[args.index("--input") + 1])
    in_dir.mkdir(parents=True)
    cuts = [0, 1000, 3000, 7000, 12_000, source.num_rows]
    for i, (lo, hi) in enumerate(itertools.pairwise(cuts)):
        pq.write_table(source.slice(lo, hi - lo), in_dir / f"p{i}.parquet", row_group_size=1000)
    out_dir = probe.local(args[args.index("--output") + 1])

    pods = []
    for index in range(shards):
        # Kubernetes sets JOB_COMPLETION_INDEX in every pod of an Indexed Job.
        proc = container_process(
            container, read_dockerfile(), mounts, extra_env={"JOB_COMPLETION_INDEX": str(index)}
        )
        env = {**base_env(), **proc.env}
        argv = ["unshare", "--net", "--", *proc.argv]  # no network, as the NetworkPolicy says
        pods.append(subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    for index, p in enumerate(pods):
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, f"shard {index}: {err.decode()[-3000:]}"

    parts = sorted(
        p for p in out_dir.rglob("*.parquet") if ".rejects" not in p.name and p.name[0] not in "._"
    )
    manifests = sorted(p.name for p in out_dir.glob("_xor_dnn_manifest-part-*.json"))
    assert len(manifests) == shards  # every pod finished its share
    scored = pa.concat_tables([pq.read_table(p) for p in parts])
    ids = np.sort(scored["id"].to_numpy())
    np.testing.assert_array_equal(ids, np.arange(source.num_rows))  # each row exactly once
    order = np.argsort(scored["id"].to_numpy())
    model = load_version(model_dir, latest_version(model_dir) or 0)
    expected = model.predict(np.column_stack([source["x"].to_numpy(), source["y"].to_numpy()]))
    got = scored["probability"].to_numpy()[order]
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_compose_scorer_and_trainer_commands_run(model_dir: Path, tmp_path: Path) -> None:
    compose = read_compose()
    image = read_dockerfile()
    models = tmp_path / "models"
    shutil.copytree(model_dir, models / "xor")
    data, scratch = tmp_path / "data", tmp_path / "tmp"
    (data / "output").mkdir(parents=True)
    scratch.mkdir()
    volumes = {"models": models, "./data": data, "tmpfs": scratch}

    scorer = compose["services"]["scorer"]
    proc = compose_process(scorer, image, compose_mounts(scorer, volumes))
    args = scorer["command"]
    source = _points(3001, seed=3)
    pacsv.write_csv(source, proc.local(args[args.index("--input") + 1]))
    done = subprocess.run(
        ["unshare", "--net", "--", *proc.argv],
        env={**base_env(), **proc.env},
        capture_output=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    scored = pacsv.read_csv(proc.local(args[args.index("--output") + 1]))
    assert sorted(scored["id"].to_pylist()) == list(range(source.num_rows))

    # With a version present the one-off trainer must exit 0 at once, training nothing.
    trainer = compose["services"]["trainer"]
    proc = compose_process(trainer, image, compose_mounts(trainer, volumes))
    before = list_versions(models / "xor")
    done = subprocess.run(
        ["unshare", "--net", "--", *proc.argv],
        env={**base_env(), **proc.env},
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert list_versions(models / "xor") == before
