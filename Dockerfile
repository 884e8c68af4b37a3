# syntax=docker/dockerfile:1
# One image for every job: `train`, `serve` and `score` are arguments of the `xor-dnn` entrypoint.
#   docker build -t xor-dnn:0.1.0 .
#   docker run --rm -p 8000:8000 -v xor-models:/models xor-dnn:0.1.0 serve --train-if-missing
# Models live under /models/<name>/<N>/ (XOR_DNN_MODEL_DIR=/models/xor); mount a volume there.

# ---- build: a virtualenv with the locked runtime dependencies and the project wheel ----------
FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first, in their own layer: it is rebuilt only when the lock or the dependency list
# changes, not on every source edit. Only the runtime dependencies are installed (no [dev] extra),
# each pinned by requirements.lock. tensorflow-serving-api (TF Serving's gRPC stubs) goes in
# without its dependencies: it requires `tensorflow`, but needs only the protos tensorflow-cpu ships.
COPY pyproject.toml requirements.lock ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > runtime-deps.txt \
    && pip install --constraint requirements.lock --requirement runtime-deps.txt \
    && pip install --no-deps --constraint requirements.lock tensorflow-serving-api
COPY README.md ./
COPY xor_dnn ./xor_dnn
COPY training ./training
COPY service ./service
COPY scoring ./scoring
# A regular (non-editable) install, so /src is not needed at run time.
RUN pip install --no-deps . \
    && find /opt/venv -name '__pycache__' -type d -prune -exec rm -rf {} +

# ---- runtime: slim base, tini, the virtualenv, a non-root user; no compilers, no caches ------
# The same base as the build stage: the virtualenv's python symlinks point into it.
FROM python:3.11-slim-bookworm AS runtime
ARG APP_UID=10001
# tini is PID 1: it forwards SIGTERM to xor-dnn (uvicorn then drains in-flight requests) and
# reaps zombies; a bare Python PID 1 would ignore SIGTERM in `train` and `score`.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini=0.19.* \
    && rm -rf /var/lib/apt/lists/* \
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
