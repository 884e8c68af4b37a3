# Every target sets up what it needs: `make run` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Installed without their dependencies: tensorflow-serving-api requires `tensorflow` (a second,
# 1.9 GB TF next to tensorflow-cpu) but its gRPC stubs need only the protos tensorflow-cpu ships.
NO_DEPS := tensorflow-serving-api
# The S3 API server tests/storage starts on 127.0.0.1 (moto), in a venv of its own: moto needs
# botocore, whose python-dateutil cap conflicts with this project's lock.
S3_VENV  := .venv-s3
S3_STAMP := $(S3_VENV)/.installed

.PHONY: setup run train serve test test-fast lint bench lock clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c requirements.lock -e '.[dev]'
	$(BIN)/pip install --quiet --no-deps -c requirements.lock $(NO_DEPS)
	touch $(STAMP)

$(S3_STAMP): tests/storage/s3-server.txt
	$(PYTHON) -m venv $(S3_VENV)
	$(S3_VENV)/bin/pip install --quiet -r tests/storage/s3-server.txt
	touch $(S3_STAMP)

## The quick start's main job: train the default model on generated data if none exists, then serve it.
run: setup
	$(BIN)/xor-dnn serve --train-if-missing

train: setup
	$(BIN)/xor-dnn train

serve: setup
	$(BIN)/xor-dnn serve

## The test suite (what CI runs).
test: setup $(S3_STAMP)
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: setup
	$(BIN)/python -m bench

## Re-pin every dependency from a fresh resolve of pyproject.toml.
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install --quiet --upgrade pip
	.venv-lock/bin/pip install --quiet '.[dev]'
	.venv-lock/bin/pip install --quiet --no-deps $(NO_DEPS)
	(echo '# Pinned versions of every dependency (make lock regenerates it); installs use it as constraints.'; \
	 .venv-lock/bin/pip freeze --exclude xor-dnn | sort) > requirements.lock
	rm -rf .venv-lock

clean:
	rm -rf $(VENV) $(S3_VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
