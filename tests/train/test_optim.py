"""Optimizers: AdamW's parameter groups (decay on linear matrices only), the registry, and the
one object that holds several torch optimizers with per-group learning-rate multipliers."""

import copy
import dataclasses

import torch

from edulm.config import TrainConfig
from edulm.model.llama import LlamaLM
from edulm.train.optim import OPTIMIZERS, Optimizers, build_optimizer, describe_groups, param_groups


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


def test_every_module_of_the_folder_that_defines_an_optimizer_is_a_value_of_train_optimizer():
    import pkgutil

    import edulm.train.optim as optim

    defined = {m.name for m in pkgutil.iter_modules(optim.__path__)
               if hasattr(__import__(f"edulm.train.optim.{m.name}", fromlist=["x"]), "OPTIMIZER")}
    assert defined == {"adamw", "muon"} and set(OPTIMIZERS) == {"adamw", "muon"}
    assert all(optim.optimizer_kind(name) is kind and kind.name == name for name, kind in OPTIMIZERS.items())


def test_adamw_groups_lr_and_decay(tiny_model_config):
    model = LlamaLM(tiny_model_config)
    opt = build_optimizer(model, TrainConfig(lr=1e-3, weight_decay=0.1, beta1=0.8, beta2=0.9))
    assert isinstance(opt, Optimizers) and opt.description.startswith("AdamW")
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    assert [g["lr_scale"] for g in opt.param_groups] == [1.0, 1.0]
    assert opt.param_groups[0]["betas"] == (0.8, 0.9)
    assert opt.param_groups[0]["foreach"] is True  # CPU: the foreach kernels
    opt.set_lr(5e-4)
    assert all(g["lr"] == 5e-4 for g in opt.param_groups)
    # Norms and embeddings really are left alone by decay: with zero gradients only decay moves weights.
    decayed = set(param_groups(model, 0.1)[0]["names"])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved == decayed


def _two_optimizers(model, matrix_scale=10.0):
    """Matrices and the rest in two torch optimizers, as an optimizer of two kinds builds them."""
    decay, rest = param_groups(model, 0.1)
    matrices = torch.optim.SGD([{"params": decay["params"], "lr_scale": matrix_scale}], lr=1.0, momentum=0.9)
    others = torch.optim.AdamW([{"params": rest["params"], "lr_scale": 1.0}], lr=1.0)
    return Optimizers(model, [matrices, others], "test")


def test_several_optimizers_act_as_one_with_scaled_groups(tiny_model_config):
    model = LlamaLM(tiny_model_config)
    opt = _two_optimizers(model)
    assert len(opt.param_groups) == 2 and len(opt.params) == len(list(model.parameters()))
    opt.set_lr(0.01)
    assert [g["lr"] for g in opt.param_groups] == [0.01 * 10.0, 0.01]
    ids = torch.randint(0, tiny_model_config.vocab_size, (2, 9))
    model(ids[:, :-1], ids[:, 1:]).backward()
    opt.step()
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    state = opt.state_dict()
    # Unsharded and keyed by parameter name, merged over both optimizers.
    assert "model.layers.0.self_attn.q_proj.weight" in state["state"]
    assert "model.embed_tokens.weight" in state["state"]
    assert "momentum_buffer" in state["state"]["model.layers.0.self_attn.q_proj.weight"]

    torch.manual_seed(0)
    twin = LlamaLM(tiny_model_config)
    twin.load_state_dict(model.state_dict())
    other = _two_optimizers(twin)
    other.load_state_dict(copy.deepcopy(state))  # a copy, as from disk: the state's tensors may be the live ones
    for ga, gb in zip(opt.param_groups, other.param_groups):
        assert ga["lr"] == gb["lr"] and ga["lr_scale"] == gb["lr_scale"]
    # The same next update from the restored state.
    for m, o in ((model, opt), (twin, other)):
        m(ids[:, :-1], ids[:, 1:]).backward()
        o.step()
    for (name, a), b in zip(model.named_parameters(), twin.parameters()):
        assert torch.equal(a, b), name


def test_a_saved_state_without_multipliers_keeps_the_configured_ones(tiny_model_config):
    model = LlamaLM(tiny_model_config)
    opt = _two_optimizers(model, matrix_scale=3.0)
    state = opt.state_dict()
    for group in state["param_groups"]:
        del group["lr_scale"]  # as in checkpoints written before the multipliers existed
    opt.load_state_dict(state)
    opt.set_lr(1e-3)
    assert [g["lr_scale"] for g in opt.param_groups] == [3.0, 1.0]
    assert opt.param_groups[0]["lr"] == 3e-3
