# edgecrack: the two commands a fresh machine needs are `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch/torchvision pinned to the releases this project is tested with (they install from
# the local wheel cache on the project's build machines; elsewhere pip downloads them).
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
# pip -q still prints one line per package for index locations a machine's pip.conf names but
# does not have; those lines say nothing about this project, so they are dropped (pip's own
# exit status still decides: pipefail).
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -ec
QUIET_PIP := 2>&1 | { grep -v -e 'is ignored: it is neither a file nor a directory' || true; }

.PHONY: install demo test test-fast test-notorch bench clean triton-env

$(BIN)/edgecrack: pyproject.toml
	$(PY) -m venv $(VENV)
	@echo "$(BIN)/pip install -q --upgrade pip"; $(BIN)/pip install -q --upgrade pip $(QUIET_PIP)
	@echo "$(BIN)/pip install -q $(TORCH_PINS)"; $(BIN)/pip install -q $(TORCH_PINS) $(QUIET_PIP)
	@echo "$(BIN)/pip install -q -e '.[train,dev]'"; $(BIN)/pip install -q -e '.[train,dev]' $(QUIET_PIP)
	touch $@

install: $(BIN)/edgecrack

DECK := edgecrack/data/sdnet2018-deck

# Main job end to end on the bundled SDNET2018 deck sample: train (+ ONNX export), predict,
# onnxruntime INT8 with its accuracy check, every artifact evaluated, the inspection loop on a
# folder, a short benchmark, and what this machine can run.
demo: install
	$(BIN)/edgecrack train --out runs/deck
	$(BIN)/edgecrack predict runs/deck $(DECK)/CD/7001-115.jpg $(DECK)/UD/7001-1.jpg
	@# Explicit-precision ONNX for TensorRT, made and checked on this CPU against FP32 on the run's
	@# held-out split: FP16 (budget 0.5 pt) and symmetric Q/DQ INT8 (budget 1 pt).
	$(BIN)/edgecrack export runs/deck --precision fp16
	@# INT8 keeps the first backbone units (or the most sensitive ones) float until it agrees with FP32
	@# (>= 99 %, within 1 pt); otherwise nothing is written, the numbers are printed and the demo goes on.
	-$(BIN)/edgecrack export runs/deck --precision int8
	@# onnxruntime CPU INT8: written only if within 1 pt, >= 99 % agreement and >= 1.2x faster here.
	-$(BIN)/edgecrack build-engine runs/deck --precision int8 --target cpu
	$(BIN)/edgecrack doctor --model runs/deck
	$(BIN)/edgecrack eval runs/deck $(DECK) --all
	$(BIN)/edgecrack run --model runs/deck --source $(DECK)/CD --max-frames 8 --log runs/deck/run.jsonl
	$(BIN)/edgecrack report runs/deck/run.jsonl --out runs/deck/report
	$(BIN)/edgecrack bench runs/deck --batch 1,8 --duration 1 --e2e-images 16 --no-accuracy --report runs/deck/bench
	$(BIN)/edgecrack doctor

test: install triton-env
	$(BIN)/python -m pytest -q

# The quick loop while developing: everything but the tests marked slow.
test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

# The deploy side as a Jetson has it: no torch (core extra + pytest only). The runtime, the run
# loop, its sinks and `edgecrack run` are tested on the committed tiny ONNX model
# (tests/assets/tiny) and must pass here, not skip. Not part of `make test`.
NOTORCH_VENV ?= .venv-notorch
NOTORCH_TESTS := tests/test_runtime.py tests/test_loop_runner.py tests/test_loop_sinks.py tests/test_loop_sources.py \
	tests/test_loop_tiling.py tests/test_loop_postprocess.py tests/test_cli_run.py tests/test_geo.py \
	tests/test_robustness.py tests/test_import_isolation.py tests/test_cli_common.py
test-notorch:
	$(PY) -m venv $(NOTORCH_VENV)
	@echo "$(NOTORCH_VENV)/bin/pip install -q -e . pytest"; $(NOTORCH_VENV)/bin/pip install -q -e . pytest $(QUIET_PIP)
	@! $(NOTORCH_VENV)/bin/python -c "import torch" 2>/dev/null || { echo "$(NOTORCH_VENV) has torch"; exit 1; }
	$(NOTORCH_VENV)/bin/python -m pytest -q -rs $(NOTORCH_TESTS)

# A real Triton server (CPU, python backend) for tests/test_triton.py, in its own environment.
triton-env:
	bash deploy/triton/make-server-env.sh .venv-triton $(PY)

bench: install
	$(BIN)/python benchmarks/bench_train.py

clean:
	rm -rf runs .pytest_cache $(NOTORCH_VENV)
