"""`edulm info` on configs and on saved models."""

from __future__ import annotations

import pytest
import torch

from edulm.config import ModelConfig
from edulm.base.errors import UsageError
from edulm.train.info import describe
from edulm.model import LlamaLM, count_parameters


def test_config_with_overrides_and_explain():
    text = describe("configs/smoke.yaml", ["model.n_layers=2"], explain=True)
    assert "2 layers" in text
    assert "resolved config:" in text and "n_layers: 2" in text
    assert "grad_accum_steps (int, default 43)" in text


def test_explain_alone_and_nothing():
    assert "seq_len" in describe(None, [], explain=True)
    with pytest.raises(UsageError):
        describe(None, [])


@pytest.mark.parametrize("tied", [True, False])
def test_count_matches_real_tensors(tied):
    cfg = ModelConfig(vocab_size=300, n_layers=3, d_model=48, d_ff=96, n_heads=6, n_kv_heads=2, max_seq_len=32,
                      tie_embeddings=tied)
    with torch.device("meta"):
        model = LlamaLM(cfg)
    assert count_parameters(cfg) == sum(p.numel() for p in model.parameters())


def test_model_folder(tmp_path, tiny_model_config):
    from edulm.config import Config, TrainConfig, save_config
    from edulm.checkpoint.weights import save_weights

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    cfg = Config(model=tiny_model_config, train=TrainConfig(seq_len=32))
    save_config(cfg, ckpt / "config.yaml")
    save_weights(LlamaLM(tiny_model_config), ckpt / "model.safetensors")
    text = describe(str(ckpt), [])
    assert "(checkpoint)" in text and f"parameters: {count_parameters(tiny_model_config):,}" in text
    with pytest.raises(UsageError):
        describe(str(ckpt), ["train.lr=1"])


def test_hf_folder_count_equals_its_tensors(tmp_path, tiny_model_config):
    from safetensors import safe_open

    from edulm.hf import to_hf_config
    from edulm.checkpoint.weights import save_weights

    folder = tmp_path / "hf"
    folder.mkdir()
    to_hf_config(tiny_model_config).to_json_file(str(folder / "config.json"))
    save_weights(LlamaLM(tiny_model_config), folder / "model.safetensors")
    text = describe(str(folder), [])
    assert "(hf)" in text and "tokenizer: none recorded" in text
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        stored = sum(f.get_tensor(name).numel() for name in f.keys())  # the tied head is stored once
    assert f"parameters: {stored:,}" in text.splitlines()


def test_tokens_per_step_and_steps():
    lines = describe("configs/l20_135m_deepthin.yaml", []).splitlines()
    assert "tokens per step: 528,384 (6 x 43 sequences x 2,048 tokens, one process)" in lines
    assert any(line.startswith("steps: 18,928 ") for line in lines)
    text = describe("configs/smoke.yaml", ["train.global_batch_size=24", "train.max_steps=0", "train.token_budget=4096"])
    assert "tokens per step: 3,072 (24 sequences (train.global_batch_size, all processes) x 128 tokens)" in text
    assert "steps: 2 " in text
    assert "set at start" in describe("configs/smoke.yaml", ["train.micro_batch_size=auto"])


def test_a_config_that_continues_a_model_shows_the_model_shape(tmp_path, tiny_model_config):
    from edulm.hf import to_hf_config
    from edulm.checkpoint.weights import save_weights

    folder = tmp_path / "hf"
    folder.mkdir()
    to_hf_config(tiny_model_config).to_json_file(str(folder / "config.json"))
    save_weights(LlamaLM(tiny_model_config), folder / "model.safetensors")
    config = tmp_path / "continue.yaml"
    config.write_text(f"model:\n  init_from: {folder}\ntrain:\n  seq_len: 32\n  max_steps: 10\n")
    text = describe(str(config), [])
    assert f"continues: {folder} (hf:" in text
    assert f"parameters: {count_parameters(tiny_model_config):,}" in text and "2 layers" in text
    assert "d_model: 64" in text  # the resolved config holds the model's shape
    with pytest.raises(UsageError, match="the config sets model n_layers 5"):
        describe(str(config), ["model.n_layers=5"])
    text = describe(str(config), ["model.init_from=some-owner/some-model"])
    assert "its shape is read when training starts" in text and "parameters:" not in text


def test_the_80gb_preset_is_the_reference_recipe_without_checkpointing():
    """configs/l20_135m_80gb.yaml changes how a step is computed, never what is trained on or how."""
    import dataclasses

    from edulm.config import load_config

    reference, big = load_config("configs/l20_135m_deepthin.yaml"), load_config("configs/l20_135m_80gb.yaml")
    assert (big.model, big.tokenizer, big.data) == (reference.model, reference.tokenizer, reference.data)
    batch = ("micro_batch_size", "grad_accum_steps", "global_batch_size", "grad_checkpointing")
    assert dataclasses.replace(big.train, **{k: getattr(reference.train, k) for k in batch}) == reference.train
    assert (big.train.micro_batch_size, big.train.global_batch_size, big.train.grad_checkpointing) == ("auto", 258, False)
    assert reference.train.micro_batch_size * reference.train.grad_accum_steps == 258 and reference.train.grad_checkpointing
    lines = describe("configs/l20_135m_80gb.yaml", []).splitlines()
    assert "parameters: 134,515,008" in lines
    assert "tokens per step: about 528,384 (258 sequences (train.global_batch_size, all processes) x 2,048 tokens)" in lines


def test_fast_config_info_shows_the_reference_model_and_its_budget():
    lines = describe("configs/edu_135m_fast.yaml", []).splitlines()
    assert "parameters: 134,515,008" in lines
    assert "tokens per step: about 528,384 (258 sequences (train.global_batch_size, all processes) x 2,048 tokens)" in lines
    assert any(line.startswith("steps: 13,248 ") for line in lines)
