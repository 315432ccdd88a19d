"""One optimizer step: accumulation equals one big batch, clipping, non-finite steps are skipped.

(The evaluation pass is tested in tests/test_heldout.py.)
"""

import math

import torch

from edulm.config import TrainConfig
from edulm.model.llama import LlamaLM
from edulm.train.distributed import DistEnv
from edulm.train.optim import build_optimizer
from edulm.train.step import autocast_dtype, train_step

from train_helpers import random_batches

CPU = DistEnv(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))


def fresh(cfg, seed=0):
    torch.manual_seed(seed)
    model = LlamaLM(cfg)
    return model, build_optimizer(model, TrainConfig(lr=1e-3))


def test_accumulation_matches_one_big_batch(tiny_model_config):
    data = random_batches(2, 2, 16, tiny_model_config.vocab_size)
    model_a, opt_a = fresh(tiny_model_config)
    res_a = train_step(model_a, opt_a, iter(data), 2, 0.0, CPU, None)
    model_b, opt_b = fresh(tiny_model_config)
    big = (torch.cat([d[0] for d in data]), torch.cat([d[1] for d in data]))
    res_b = train_step(model_b, opt_b, iter([big]), 1, 0.0, CPU, None)
    assert res_a.finite and math.isclose(res_a.loss, res_b.loss, rel_tol=1e-6)
    assert math.isclose(res_a.grad_norm, res_b.grad_norm, rel_tol=1e-5)
    for pa, pb in zip(model_a.parameters(), model_b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)


def test_clipping_reports_the_norm_before_clipping(tiny_model_config):
    data = random_batches(1, 2, 16, tiny_model_config.vocab_size)
    model, opt = fresh(tiny_model_config)
    res = train_step(model, opt, iter(data), 1, 1e-6, CPU, None)
    assert res.grad_norm > 1e-3  # far above the clip value: it is the raw norm


def test_non_finite_step_is_skipped_then_training_goes_on(tiny_model_config):
    data = random_batches(2, 2, 16, tiny_model_config.vocab_size)
    model, opt = fresh(tiny_model_config)
    with torch.no_grad():
        saved = model.model.norm.weight.clone()
        model.model.norm.weight.fill_(float("inf"))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    res = train_step(model, opt, iter(data[:1]), 1, 1.0, CPU, None)
    assert not res.finite
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(p, before[n]) or torch.isinf(p).all() for n, p in model.named_parameters())
    assert not opt.optimizers[0].state  # no update happened: AdamW never stepped
    with torch.no_grad():
        model.model.norm.weight.copy_(saved)
    res = train_step(model, opt, iter(data[1:]), 1, 1.0, CPU, None)
    assert res.finite and opt.optimizers[0].state


def test_precision_choice():
    assert autocast_dtype("auto", torch.device("cpu")) is None
    assert autocast_dtype("auto", torch.device("cuda")) is torch.bfloat16
    assert autocast_dtype("fp32", torch.device("cuda")) is None
