"""Config mapping: edulm's ModelConfig <-> LlamaConfig, configs of transformers 4.x and 5.x, what edulm refuses."""

from __future__ import annotations

import json

import pytest
import torch
from hf_helpers import IDS, logits

from edulm.config import ModelConfig
from edulm.base.errors import UsageError
from edulm.hf import load_model, model_config_from_hf, to_hf_config


@pytest.mark.parametrize("tied", [True, False])
def test_config_round_trip(tiny_model_config, tied):
    cfg = ModelConfig(**{**tiny_model_config.__dict__, "tie_embeddings": tied, "rope_theta": 5e5, "norm_eps": 1e-6})
    hf = to_hf_config(cfg, bos_token_id=0, eos_token_id=0, dtype="bfloat16")
    assert hf.architectures == ["LlamaForCausalLM"] and hf.head_dim == 16 and hf.tie_word_embeddings == tied
    assert hf.bos_token_id == hf.eos_token_id == 0
    assert model_config_from_hf(hf.to_dict()) == cfg


def transformers_4x_config(cfg: ModelConfig) -> dict:
    """config.json as transformers 4.x writes it: top-level rope_theta, rope_scaling null, torch_dtype."""
    d = to_hf_config(cfg).to_dict()
    d.pop("rope_parameters")
    d.pop("dtype", None)
    d.update(rope_theta=cfg.rope_theta, rope_scaling=None, torch_dtype="float32", transformers_version="4.46.3")
    return d


def test_reads_transformers_4x_and_5x_configs(tiny_model_config):
    cfg = ModelConfig(**{**tiny_model_config.__dict__, "rope_theta": 123456.0})
    five = to_hf_config(cfg).to_dict()
    assert five["rope_parameters"]["rope_theta"] == 123456.0 and "rope_theta" not in five
    assert model_config_from_hf(five) == cfg
    assert model_config_from_hf(transformers_4x_config(cfg)) == cfg


def test_folder_with_a_4x_config_loads_in_edulm_and_transformers_alike(tiny_model_config, tmp_path):
    from transformers import LlamaForCausalLM

    cfg = ModelConfig(**{**tiny_model_config.__dict__, "rope_theta": 500.0})  # a theta that matters
    torch.manual_seed(0)
    LlamaForCausalLM(to_hf_config(cfg)).save_pretrained(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps(transformers_4x_config(cfg)))
    theirs = LlamaForCausalLM.from_pretrained(str(tmp_path), dtype=torch.float32).eval()
    ours, resolved = load_model(tmp_path)
    assert resolved.model_config.rope_theta == 500.0
    assert (logits(ours, IDS) - logits(theirs, IDS)).abs().max() < 1e-4


@pytest.mark.parametrize(
    "change, message",
    [
        ({"model_type": "mistral"}, "model_type"),
        ({"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, "RoPE scaling"),
        ({"rope_parameters": {"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0}}, "RoPE scaling"),
        ({"attention_bias": True}, "attention_bias"),
        ({"mlp_bias": True}, "mlp_bias"),
        ({"head_dim": 32}, "head_dim"),
        ({"hidden_act": "gelu"}, "hidden_act"),
        ({"num_key_value_heads": 3}, "n_kv_heads"),
        ({"quantization_config": {"quant_method": "bitsandbytes"}}, "quantized"),
    ],
)
def test_refuses_what_edulm_cannot_represent(tiny_model_config, change, message):
    d = {**to_hf_config(tiny_model_config).to_dict(), **change}
    with pytest.raises(UsageError, match=message):
        model_config_from_hf(d)


def test_exported_config_names_rope_theta_and_dtype_the_4x_way_too(tiny_model_config, tmp_path):
    from transformers import LlamaConfig

    from edulm.hf.mapping import save_hf_config

    cfg = ModelConfig(**{**tiny_model_config.__dict__, "rope_theta": 100_000.0})
    save_hf_config(to_hf_config(cfg, dtype="bfloat16", bos_token_id=0, eos_token_id=0), tmp_path)
    written = json.loads((tmp_path / "config.json").read_text())
    # transformers 4.x reads the top-level names, 5.x the nested / new ones: both say the same.
    assert written["rope_theta"] == written["rope_parameters"]["rope_theta"] == 100_000.0
    assert written["torch_dtype"] == written["dtype"] == "bfloat16"
    assert written["tie_word_embeddings"] is True and written["rms_norm_eps"] == cfg.norm_eps  # stated, not defaulted
    assert model_config_from_hf(written) == cfg
    assert LlamaConfig.from_pretrained(str(tmp_path)).rope_parameters["rope_theta"] == 100_000.0
