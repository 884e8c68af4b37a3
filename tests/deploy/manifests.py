"""Read the deployment files the way a cluster or Docker would, and run what they declare.

Kubernetes objects come from ``kubectl kustomize`` (the real renderer), the image's
entrypoint and environment from the Dockerfile, services from docker-compose.yml. A container
is turned into a local process: the image ``ENTRYPOINT`` plus the manifest's ``args`` (or its
``command``), the image ``ENV`` overlaid with ConfigMap ``envFrom`` and ``env``, and every path
under a volume's mount point rewritten to a local folder standing in for that volume. Nothing
else is changed, so a manifest that drifts from the code fails here.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
OVERLAYS = ("dev", "prod", "monitoring", "minio")
JOBS = ("train", "train-bucket", "score", "score-bucket")
TINI = "/usr/bin/tini"


def kubectl() -> str | None:
    """The machine's kubectl (1.32 ships with the image), else the one .ci/validate-deploy
    installs from PyPI."""
    found = shutil.which("kubectl")
    if found:
        return found
    local = ROOT / ".venv-tools" / "bin" / "kubectl"
    return str(local) if local.exists() else None


def render(directory: Path) -> list[dict[str, Any]]:
    """The objects ``kubectl kustomize DIR`` renders."""
    exe = kubectl()
    if exe is None:
        raise RuntimeError("kubectl not found: .ci/validate-deploy installs one")
    out = subprocess.run(
        [exe, "kustomize", str(directory)], check=True, capture_output=True, text=True
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def find(objects: Sequence[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    hits = [
        o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]
    if len(hits) != 1:
        raise LookupError(f"expected one {kind} {name or ''}, found {len(hits)}")
    return hits[0]


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    """The pod template's spec of a Deployment, Job or CronJob."""
    if obj["kind"] == "CronJob":
        spec: dict[str, Any] = obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        return spec
    spec = obj["spec"]["template"]["spec"]
    return spec


@dataclass(frozen=True)
class Image:
    """What the Dockerfile's final stage declares."""

    entrypoint: list[str]
    cmd: list[str]
    env: dict[str, str]
    user: str
    expose: list[int]
    healthcheck: list[str]


def _instructions(text: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def read_dockerfile(path: Path = ROOT / "Dockerfile") -> Image:
    final: list[tuple[str, str]] = []
    for word, rest in _instructions(path.read_text()):
        if word == "FROM":
            final = []  # only the last stage ends up in the image
        final.append((word, rest))
    entrypoint: list[str] = []
    cmd: list[str] = []
    env: dict[str, str] = {}
    user, expose, health = "", [], []
    for word, rest in final:
        if word == "ENTRYPOINT":
            entrypoint = json.loads(rest)
        elif word == "CMD":
            cmd = json.loads(rest)
        elif word == "ENV":
            for token in shlex.split(rest):
                key, _, value = token.partition("=")
                env[key] = value
        elif word == "USER":
            user = rest
        elif word == "EXPOSE":
            expose = [int(p.split("/")[0]) for p in rest.split()]
        elif word == "HEALTHCHECK":
            health = json.loads(rest[rest.index("CMD") + 3 :].strip())
    return Image(entrypoint, cmd, env, user, expose, health)


def read_compose(path: Path = ROOT / "docker-compose.yml") -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


def interpolate(value: str, env: Mapping[str, str] | None = None) -> str:
    """Compose's ``${VAR:-default}`` substitution (the forms the compose file uses)."""
    env = env or {}

    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(3) or ""
        return env.get(name) or default

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}", sub, value)


@dataclass
class Process:
    """A container turned into a local command line."""

    argv: list[str]
    env: dict[str, str]
    mounts: dict[str, Path] = field(default_factory=dict)

    def local(self, container_path: str) -> Path:
        """The local folder standing in for ``container_path``."""
        mapped = remap(container_path, self.mounts)
        if mapped == container_path:
            raise ValueError(f"{container_path} is on no declared volume")
        return Path(mapped)


def remap(value: str, mounts: Mapping[str, Path]) -> str:
    """Rewrite container paths on a volume to their local stand-ins: the whole value, a
    ``--flag=/path``, or each path inside a shell script (longest mount point first)."""
    if any(ch.isspace() for ch in value):
        roots = {m.rstrip("/"): str(local) for m, local in mounts.items()}
        either = "|".join(re.escape(r) for r in sorted(roots, key=len, reverse=True))
        # One pass, so a replaced path is never rewritten again by a shorter mount point.
        return re.sub(rf"(?<![\w/.-])({either})(?=/|\b)", lambda m: roots[m.group(1)], value)
    head, sep, path = value.rpartition("=") if value.startswith("--") else ("", "", value)
    for mount in sorted(mounts, key=len, reverse=True):
        root = mount.rstrip("/")
        if path == root or path.startswith(root + "/"):
            return head + sep + str(mounts[mount]) + path[len(root) :]
    return value


def local_argv(argv: Sequence[str]) -> list[str]:
    """Resolve the image's executables on this machine: ``xor-dnn`` and ``python`` from this
    virtualenv (the image's /opt/venv), tini only when it is installed here."""
    out = list(argv)
    if out and out[0] == TINI and not Path(TINI).exists():
        assert out[1] == "--", f"tini entrypoint must forward with '--': {argv}"
        out = out[2:]
    bindir = Path(sys.executable).parent
    if out and out[0] in ("xor-dnn", "python"):
        out[0] = str(bindir / out[0])
    return out


def container_process(
    container: dict[str, Any],
    image: Image,
    mounts: Mapping[str, Path],
    *,
    config_maps: Mapping[str, Mapping[str, str]] | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> Process:
    """A Kubernetes container spec as a local process (see the module docstring)."""
    command = container.get("command") or image.entrypoint
    args = (
        container.get("args")
        if "args" in container
        else ([] if "command" in container else image.cmd)
    )
    env = {k: v for k, v in image.env.items() if k != "PATH"}
    for source in container.get("envFrom", []):
        name = source["configMapRef"]["name"]
        env.update((config_maps or {})[name])
    for item in container.get("env", []):
        env[item["name"]] = str(item["value"])
    env.update(extra_env or {})
    env = {k: remap(v, mounts) for k, v in env.items()}
    argv = [remap(a, mounts) for a in [*command, *args]]
    return Process(local_argv(argv), env, dict(mounts))


def config_maps(objects: Sequence[dict[str, Any]]) -> dict[str, dict[str, str]]:
    return {o["metadata"]["name"]: o.get("data", {}) for o in objects if o["kind"] == "ConfigMap"}


def base_env() -> dict[str, str]:
    """What a container starts with besides its declared env: PATH to the venv, and HOME."""
    keep = {
        k: v
        for k, v in os.environ.items()
        if k in ("HOME", "LANG", "LC_ALL", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
    }
    # The image's PATH starts with its virtualenv (/opt/venv/bin); this one stands in for it.
    keep["PATH"] = f"{Path(sys.executable).parent}:/usr/sbin:/usr/bin:/sbin:/bin"
    keep["PYTHONPATH"] = str(ROOT)
    keep.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return keep


def netns_available() -> bool:
    """Whether this user may create a network namespace (a pod's own localhost)."""
    if not (shutil.which("unshare") and shutil.which("nsenter") and shutil.which("ip")):
        return False
    probe = subprocess.run(
        ["unshare", "--net", "--", "ip", "link", "set", "lo", "up"], capture_output=True
    )
    return probe.returncode == 0


@contextmanager
def run_in_pod(proc: Process, *, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``proc`` in its own network namespace, as a pod has: the declared port is free
    whatever else runs on this machine. Stopped with SIGTERM (then SIGKILL) on exit."""
    env = {**base_env(), **proc.env}
    argv = [
        "unshare",
        "--net",
        "--",
        "sh",
        "-c",
        'ip link set lo up && exec "$@"',
        "pod",
        *proc.argv,
    ]
    with log.open("wb") as out:
        p = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield p
        finally:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


def in_pod(
    pid: int, argv: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """Run a command inside the network namespace of process ``pid`` (like ``kubectl exec``
    or the kubelet's probes)."""
    return subprocess.run(
        ["nsenter", f"--net=/proc/{pid}/ns/net", "--", *local_argv(argv)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**base_env(), **(env or {})},
    )


_HTTP_GET = (
    "import json, sys, urllib.request, urllib.error\n"
    "try:\n"
    "    r = urllib.request.urlopen(sys.argv[1], timeout=5)\n"
    "    print(json.dumps([r.status, r.read().decode()]))\n"
    "except urllib.error.HTTPError as e:\n"
    "    print(json.dumps([e.code, e.read().decode()]))\n"
    "except OSError as e:\n"
    "    print(json.dumps([0, str(e)]))\n"
)


def http_get(pid: int, port: int, path: str) -> tuple[int, str]:
    """GET http://127.0.0.1:PORT/PATH from inside the pod's network namespace."""
    done = in_pod(pid, ["python", "-c", _HTTP_GET, f"http://127.0.0.1:{port}{path}"])
    status, body = json.loads(done.stdout)
    return int(status), str(body)


def wait_for(
    pid_proc: subprocess.Popen[bytes], port: int, path: str, *, timeout: float, log: Path
) -> tuple[int, str]:
    """Poll like a startup probe until ``path`` answers 200; fail with the pod's log."""
    deadline = time.monotonic() + timeout
    status, body = 0, ""
    while time.monotonic() < deadline:
        if pid_proc.poll() is not None:
            raise AssertionError(
                f"process exited {pid_proc.returncode} before {path} answered:\n{log.read_text()}"
            )
        status, body = http_get(pid_proc.pid, port, path)
        if status == 200:
            return status, body
        time.sleep(0.5)
    raise AssertionError(f"{path} never answered 200 (last {status} {body}):\n{log.read_text()}")


_HTTP_POST = (
    "import json, sys, urllib.request, urllib.error\n"
    "req = urllib.request.Request(sys.argv[1], data=sys.argv[2].encode(),\n"
    "                             headers={'Content-Type': 'application/json'})\n"
    "try:\n"
    "    r = urllib.request.urlopen(req, timeout=10)\n"
    "    print(json.dumps([r.status, r.read().decode()]))\n"
    "except urllib.error.HTTPError as e:\n"
    "    print(json.dumps([e.code, e.read().decode()]))\n"
)


def http_post(pid: int, port: int, path: str, payload: Any) -> tuple[int, Any]:
    """POST JSON from inside the pod's network namespace; the decoded JSON answer."""
    body = json.dumps(payload)
    done = in_pod(pid, ["python", "-c", _HTTP_POST, f"http://127.0.0.1:{port}{path}", body])
    status, text = json.loads(done.stdout)
    return int(status), json.loads(text)


def compose_process(service: dict[str, Any], image: Image, mounts: Mapping[str, Path]) -> Process:
    """A docker-compose service as a local process: its entrypoint (else the image's) plus its
    command (else the image's CMD), the image ENV overlaid with the service's environment."""
    entrypoint = service.get("entrypoint", image.entrypoint)
    command = service.get("command", image.cmd if "entrypoint" not in service else [])
    env = {k: v for k, v in image.env.items() if k != "PATH"}
    env.update({k: interpolate(str(v)) for k, v in service.get("environment", {}).items()})
    env = {k: remap(v, mounts) for k, v in env.items()}
    argv = [remap(a, mounts) for a in [*entrypoint, *command]]
    return Process(local_argv(argv), env, dict(mounts))


def compose_mounts(service: dict[str, Any], volumes: Mapping[str, Path]) -> dict[str, Path]:
    """Container path -> local folder for a service's ``volumes`` (named or ``./bind``) and
    ``tmpfs``; ``volumes`` maps each named volume or bind source to its local stand-in."""
    out: dict[str, Path] = {}
    for spec in service.get("volumes", []):
        source, target = spec.split(":")[:2]
        out[target] = volumes[source]
    for spec in service.get("tmpfs", []):
        out[spec.split(":")[0]] = volumes["tmpfs"]
    return out
