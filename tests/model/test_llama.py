"""The Llama model itself: sizes, FLOPs, initialisation, KV cache, gradient checkpointing."""

from __future__ import annotations

import math

import pytest
import torch

from edulm.config import ModelConfig
from edulm.model import LlamaLM, count_parameters, flops_per_token

SMOLLM2_135M = ModelConfig()  # the defaults are the 135M deep-and-thin shape


def distinct_parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # parameters() yields a tied tensor once


def test_135m_config_has_exactly_134_515_008_parameters_on_paper_and_in_tensors():
    assert count_parameters(SMOLLM2_135M) == 134_515_008
    with torch.device("meta"):  # real shapes, no memory
        model = LlamaLM(SMOLLM2_135M)
    assert distinct_parameter_count(model) == 134_515_008
    assert model.lm_head.weight is model.model.embed_tokens.weight


def test_135m_training_flops_per_token_at_2048():
    # 6N + 12 * layers * d_model * seq_len = 807,090,048 + 424,673,280
    assert flops_per_token(SMOLLM2_135M, 2048) == 1_231_763_328


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("n_kv_heads", [1, 2, 4])
def test_count_parameters_matches_the_built_model(tiny_model_config, tied, n_kv_heads):
    cfg = ModelConfig(**{**tiny_model_config.__dict__, "tie_embeddings": tied, "n_kv_heads": n_kv_heads})
    with torch.device("meta"):
        model = LlamaLM(cfg)
    assert count_parameters(cfg) == distinct_parameter_count(model)
    assert (model.lm_head.weight is model.model.embed_tokens.weight) == tied


def test_parameter_names_are_the_transformers_llama_names(tiny_model_config):
    from transformers import LlamaForCausalLM

    from edulm.hf import to_hf_config

    cfg = ModelConfig(**{**tiny_model_config.__dict__, "tie_embeddings": False})
    with torch.device("meta"):
        ours = LlamaLM(cfg)
        theirs = LlamaForCausalLM(to_hf_config(cfg))
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}


def test_initialisation_statistics():
    cfg = ModelConfig(vocab_size=2048, n_layers=4, d_model=256, d_ff=704, n_heads=4, n_kv_heads=2, max_seq_len=64)
    torch.manual_seed(0)
    model = LlamaLM(cfg)
    residual_std = cfg.init_std / math.sqrt(2 * cfg.n_layers)
    for name, p in model.named_parameters():
        if name.endswith("norm.weight"):
            assert torch.equal(p, torch.ones_like(p)), name
            continue
        want = residual_std if name.endswith(("o_proj.weight", "down_proj.weight")) else cfg.init_std
        assert abs(p.mean().item()) < 0.1 * want, name
        assert p.std().item() == pytest.approx(want, rel=0.05), name


def test_forward_rejects_sequences_longer_than_the_context(tiny_model_config):
    model = LlamaLM(tiny_model_config)
    ids = torch.zeros(1, tiny_model_config.max_seq_len + 1, dtype=torch.long)
    with pytest.raises(ValueError, match="max_seq_len"):
        model(ids)


def test_kv_cache_logits_equal_full_forward_logits(tiny_model_config):
    torch.manual_seed(0)
    model = LlamaLM(tiny_model_config).eval()
    ids = torch.randint(0, tiny_model_config.vocab_size, (2, 20))
    with torch.no_grad():
        full = model(ids)  # (2, 20, V)
        # Prefill 7 tokens, a chunk of 5 after them (masked path), then one token at a time.
        caches = model.new_caches(2, 20)
        pieces = [model(ids[:, :7], caches=caches, start=0), model(ids[:, 7:12], caches=caches, start=7)]
        pieces += [model(ids[:, t : t + 1], caches=caches, start=t) for t in range(12, 20)]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-5, atol=1e-5)


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(tiny_model_config):
    torch.manual_seed(0)
    model = LlamaLM(tiny_model_config).train()
    ids = torch.randint(0, tiny_model_config.vocab_size, (2, 16))
    targets = torch.roll(ids, -1, dims=1)

    def loss_and_grads(checkpointing: bool):
        model.zero_grad(set_to_none=True)
        model.grad_checkpointing = checkpointing
        loss = model(ids, targets)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    plain_loss, plain_grads = loss_and_grads(False)
    ckpt_loss, ckpt_grads = loss_and_grads(True)
    torch.testing.assert_close(ckpt_loss, plain_loss, rtol=0, atol=0)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(ckpt_grads[name], grad, rtol=1e-6, atol=1e-7, msg=name)
