"""Parameter groups: decay on linear weight matrices only."""

import dataclasses

import torch

from edulm.config import TrainConfig
from edulm.model.llama import LlamaLM
from edulm.train.optim import build_optimizer, describe_groups, param_groups, set_lr


def test_tied_model_decays_only_linear_matrices(tiny_model_config):
    model = LlamaLM(tiny_model_config)
    decay, no_decay = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert "model.embed_tokens.weight" in no_decay["names"]
    assert not any(n.startswith("lm_head") for n in decay["names"] + no_decay["names"])  # tied: listed once
    assert all(n.endswith("norm.weight") or n == "model.embed_tokens.weight" for n in no_decay["names"])
    assert all(n.endswith("_proj.weight") for n in decay["names"])
    assert len(decay["names"]) == tiny_model_config.n_layers * 7
    every = sum(p.numel() for g in (decay, no_decay) for p in g["params"])
    assert every == sum(p.numel() for p in model.parameters())
    assert "tied with lm_head" in describe_groups([decay, no_decay], tied=True)


def test_untied_head_is_decayed(tiny_model_config):
    model = LlamaLM(dataclasses.replace(tiny_model_config, tie_embeddings=False))
    decay, no_decay = param_groups(model, 0.1)
    assert "lm_head.weight" in decay["names"]
    assert "model.embed_tokens.weight" in no_decay["names"]


def test_optimizer_groups_and_lr(tiny_model_config):
    model = LlamaLM(tiny_model_config)
    opt, groups = build_optimizer(model, TrainConfig(lr=1e-3, weight_decay=0.1, beta1=0.8, beta2=0.9))
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    assert opt.param_groups[0]["betas"] == (0.8, 0.9)
    assert opt.param_groups[0]["foreach"] is True  # CPU: the foreach kernels
    set_lr(opt, 5e-4)
    assert all(g["lr"] == 5e-4 for g in opt.param_groups)
    # Norms and embeddings really are left alone by decay: with zero gradients only decay moves weights.
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved == set(groups[0]["names"])
