# syntax=docker/dockerfile:1
# One image for every job: `train`, `serve` and `score` are arguments of the `xor-dnn` entrypoint.
#   docker build -t xor-dnn:0.1.0 .
#   podman build --format docker -t xor-dnn:0.1.0 .      # docker format keeps the HEALTHCHECK
#   docker run --rm -p 8000:8000 -v xor-models:/models xor-dnn:0.1.0 serve --train-if-missing
# Models live under /models/<name>/<N>/ (XOR_DNN_MODEL_DIR=/models/xor); mount a volume there.
#
# Build arguments:
#   BASE_IMAGE  any Debian bookworm image with python3 (3.11) and its venv module; the default
#               comes from Docker Hub, .ci/containers builds one with mmdebstrap where no
#               registry is reachable (docs/deploy.md, "Without Docker").
# Where outgoing TLS is intercepted, hand the host's CA bundle to the build as a secret: it is
# mounted for the RUN steps that download and never stored in a layer.
#   docker build --secret id=ca,src=/etc/ssl/certs/ca-certificates.crt .
# checkov:skip=CKV_DOCKER_7: FROM names the build argument, whose default is a pinned tag
ARG BASE_IMAGE=python:3.11-slim-bookworm

# ---- build: a virtualenv with the locked runtime dependencies and the project wheel ----------
FROM ${BASE_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
# binutils for `strip` below (this stage only); python3, not python: a plain Debian base has no
# `python` command (the venv adds one).
RUN apt-get update \
    && apt-get install -y --no-install-recommends binutils=2.40-* \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first, in their own layer: it is rebuilt only when the lock or the dependency list
# changes, not on every source edit. Only the runtime dependencies are installed (no [dev] extra),
# each pinned by requirements.lock. tensorflow-serving-api (TF Serving's gRPC stubs) goes in
# without its dependencies: it requires `tensorflow`, but needs only the protos tensorflow-cpu ships.
COPY pyproject.toml requirements.lock ./
RUN --mount=type=secret,id=ca \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi \
    && python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > runtime-deps.txt \
    && pip install --constraint requirements.lock --requirement runtime-deps.txt \
    && pip install --no-deps --constraint requirements.lock tensorflow-serving-api
COPY README.md ./
COPY xor_dnn ./xor_dnn
COPY training ./training
COPY service ./service
COPY scoring ./scoring
# A regular (non-editable) install, so /src is not needed at run time. Its build backend
# (setuptools) is downloaded too: the CA secret again.
RUN --mount=type=secret,id=ca \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi \
    && pip install --no-deps .
# What no job reads at run time (docs/deploy.md has the sizes): the native libraries' symbol
# tables (`strip --strip-unneeded` keeps the dynamic symbols that loading needs; the vendored
# `*.libs` folders, patched by auditwheel, are left as shipped), TensorFlow's and
# pyarrow's C++ headers (for compiling extensions), libclang (TensorFlow's op code generator),
# the packages' own test suites, LiteRT's WebGPU accelerator (the service runs LiteRT on the CPU
# only), pip itself and bytecode caches (the root filesystem is read-only at run time anyway).
RUN site=$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') \
    && pip uninstall --yes libclang \
    && rm -rf "$site/tensorflow/include" "$site/pyarrow/include" "$site/pyarrow/src" \
       "$site/ai_edge_litert/libLiteRtWebGpuAccelerator.so" \
    && find "$site" -depth -type d \( -name tests -o -name __pycache__ \) -exec rm -rf {} + \
    && find "$site" -type f \( -name '*.so' -o -name '*.so.*' \) -not -path '*.libs/*' \
       -exec strip --strip-unneeded {} + \
    && pip uninstall --yes pip

# ---- runtime: the base, tini, the virtualenv, a non-root user; no compilers, no caches -------
# The same base as the build stage: the virtualenv's python symlinks point into it.
FROM ${BASE_IMAGE} AS runtime
ARG APP_UID=10001
# tini is PID 1: it forwards SIGTERM to xor-dnn (uvicorn then drains in-flight requests) and
# reaps zombies; a bare Python PID 1 would ignore SIGTERM in `train` and `score`.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini=0.19.* \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt /var/log/dpkg.log \
    && groupadd --system --gid "${APP_UID}" xor \
    && useradd --system --uid "${APP_UID}" --gid xor --home-dir /home/xor --create-home \
       --shell /usr/sbin/nologin xor \
    && mkdir -p /models \
    && chown xor:xor /models
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    KERAS_HOME=/tmp/keras \
    MPLCONFIGDIR=/tmp/matplotlib \
    XOR_DNN_MODEL_DIR=/models/xor \
    XOR_DNN_HOST=0.0.0.0 \
    XOR_DNN_PORT=8000
WORKDIR /home/xor
# Numeric UID so Kubernetes can verify runAsNonRoot without reading /etc/passwd.
USER 10001:10001
VOLUME ["/models"]
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('XOR_DNN_PORT', '8000'), timeout=2)"]
ENTRYPOINT ["/usr/bin/tini", "--", "xor-dnn"]
CMD ["serve"]
