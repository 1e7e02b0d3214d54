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

# Main job end to end on the bundled SDNET2018 deck sample.
demo: install
	$(BIN)/edgecrack train --out runs/deck
	$(BIN)/edgecrack eval runs/deck edgecrack/data/sdnet2018-deck
	$(BIN)/edgecrack predict runs/deck edgecrack/data/sdnet2018-deck/CD/7001-115.jpg edgecrack/data/sdnet2018-deck/UD/7001-1.jpg

test: install triton-env
	$(BIN)/python -m pytest -q

# A real Triton server (CPU, python backend) for tests/test_triton.py, in its own environment.
triton-env:
	bash deploy/triton/make-server-env.sh .venv-triton $(PY)

bench: install
	$(BIN)/python benchmarks/bench_train.py

clean:
	rm -rf runs .pytest_cache
