# edgecrack: the two commands a fresh machine needs are `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch/torchvision pinned to the releases this project is tested with (they install from
# the local wheel cache on the project's build machines; elsewhere pip downloads them).
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1

.PHONY: install demo test bench clean triton-env

$(BIN)/edgecrack: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_PINS)
	$(BIN)/pip install -q -e '.[train,dev]'
	touch $@

install: $(BIN)/edgecrack

DECK := edgecrack/data/sdnet2018-deck

# Main job end to end on the bundled SDNET2018 deck sample: train (+ ONNX export), predict,
# onnxruntime INT8 with its accuracy check, every artifact evaluated, the inspection loop on a
# folder, a short benchmark, and what this machine can run.
demo: install
	$(BIN)/edgecrack train --out runs/deck
	$(BIN)/edgecrack predict runs/deck $(DECK)/CD/7001-115.jpg $(DECK)/UD/7001-1.jpg
	@# INT8 is written only within its accuracy budget; for the default 256 px model onnxruntime
	@# INT8 loses ~3-6 points and is refused (exit 1): the demo reports that and goes on with FP32.
	-$(BIN)/edgecrack build-engine runs/deck --precision int8 --target cpu
	$(BIN)/edgecrack eval runs/deck $(DECK) --all
	$(BIN)/edgecrack run --model runs/deck --source $(DECK)/CD --max-frames 8 --log runs/deck/run.jsonl
	$(BIN)/edgecrack bench runs/deck --batch 1,8 --duration 1 --e2e-images 16 --no-accuracy --report runs/deck/bench
	$(BIN)/edgecrack doctor

test: install triton-env
	$(BIN)/python -m pytest -q

# A real Triton server (CPU, python backend) for tests/test_triton.py, in its own environment.
triton-env:
	bash deploy/triton/make-server-env.sh .venv-triton $(PY)

bench: install
	$(BIN)/python benchmarks/bench_train.py

clean:
	rm -rf runs .pytest_cache
