"""Device checks of the training path on CUDA (marker ``gpu``): CI never runs them; ``bench/gpu_check.py`` does.

    pytest -m gpu tests           # on a machine with a CUDA device

bf16 autocast against float32, the fused AdamW kernel, the memory probe behind ``micro_batch_size: auto``
and torch.compile (inductor, Triton kernels) with the trainer's step and held-out loop.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from edulm.config import Config, ModelConfig, TrainConfig
from edulm.evaluate.heldout import padded_to_one_shape, score_heldout
from edulm.model.llama import LlamaLM
from edulm.train.autobatch import GLOBAL_BATCH_TOLERANCE, cuda_fits, resolve_batch_shape
from edulm.train.distributed import DistEnv
from edulm.train.optim import build_optimizer, param_groups
from edulm.train.step import train_step

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

MODEL = ModelConfig(vocab_size=2048, n_layers=2, d_model=256, d_ff=688, n_heads=4, n_kv_heads=2, max_seq_len=256)
"""Head width 64 and grouped K/V heads, as the 135M model; small enough to compile in seconds."""
SEQ = 256


@pytest.fixture
def cuda() -> DistEnv:
    torch.backends.cuda.matmul.allow_tf32 = False  # float32 means float32 in the comparisons below
    return DistEnv(rank=0, local_rank=0, world_size=1, device=torch.device("cuda"))


def fresh_model(device: torch.device, seed: int = 0) -> LlamaLM:
    torch.manual_seed(seed)
    return LlamaLM(MODEL).to(device).train()


def batches(n: int, micro: int, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    ids = [torch.randint(0, MODEL.vocab_size, (micro, SEQ + 1), generator=g) for _ in range(n)]
    return [(w[:, :-1].contiguous(), w[:, 1:].contiguous()) for w in ids]


def test_bf16_autocast_steps_are_finite_and_close_to_float32(cuda):
    data = batches(3, 4)
    results = {}
    for name, amp in (("fp32", None), ("bf16", torch.bfloat16)):
        model = fresh_model(cuda.device)
        optimizer = build_optimizer(model, TrainConfig(lr=1e-3))
        results[name] = [train_step(model, optimizer, iter([b]), 1, 1.0, cuda, amp) for b in data]
    for fp32, bf16 in zip(results["fp32"], results["bf16"]):
        assert fp32.finite and bf16.finite
        assert bf16.loss == pytest.approx(fp32.loss, rel=1e-2)
        assert bf16.grad_norm == pytest.approx(fp32.grad_norm, rel=5e-2)


def test_adamw_uses_the_fused_kernel_on_cuda_and_matches_foreach(cuda):
    model = fresh_model(cuda.device)
    twin = copy.deepcopy(model)
    fused = build_optimizer(model, TrainConfig(lr=1e-2, weight_decay=0.1))
    assert all(opt.defaults.get("fused") for opt in fused.optimizers)
    reference = torch.optim.AdamW([{"params": g["params"], "weight_decay": g["weight_decay"]} for g in param_groups(twin, 0.1)],
                                  lr=1e-2, betas=(0.9, 0.95), eps=1e-8, foreach=True)
    for inputs, targets in batches(3, 2):
        model(inputs.cuda(), targets.cuda()).backward()
        for p, q in zip(model.parameters(), twin.parameters()):
            q.grad = p.grad.clone()  # the same gradients: only the optimizers differ
        fused.step()
        reference.step()
        fused.zero_grad()
        reference.zero_grad()
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)


def test_auto_micro_batch_probe_fits_releases_memory_and_keeps_the_global_batch(cuda):
    cfg = Config(model=MODEL, train=TrainConfig(seq_len=SEQ, micro_batch_size="auto", global_batch_size=96))
    model = fresh_model(cuda.device)
    fits = cuda_fits(cfg, model, cuda.device)
    assert fits(1)
    before = torch.cuda.memory_allocated()  # after a first probe: cuBLAS keeps its workspace from then on
    assert fits(8)
    total = torch.cuda.get_device_properties(cuda.device).total_memory
    too_many = total // (SEQ * MODEL.d_model * 4) + 1  # its embedding output alone is larger than the device
    assert not fits(too_many)  # out of memory: reported as not fitting, never raised
    assert torch.cuda.memory_allocated() - before < 64 * 2**20  # the probes gave their activations back
    assert all(p.grad is None for p in model.parameters())
    shape = resolve_batch_shape(cfg, model, cuda.device)
    assert shape.micro_batch_size >= 8
    assert abs(shape.sequences_per_step - 96) <= GLOBAL_BATCH_TOLERANCE * 96


def test_compiled_steps_and_evaluations_on_cuda_compile_two_graphs_and_match_eager(cuda):
    from torch._inductor.compile_fx import compile_fx

    graphs = []

    def counting_inductor(graph_module, example_inputs):
        graphs.append(graph_module)
        return compile_fx(graph_module, example_inputs)

    torch._dynamo.reset()
    eager, compiled = fresh_model(cuda.device), fresh_model(cuda.device)
    compiled.compile(backend=counting_inductor)
    held_out = padded_to_one_shape(batches(3, 4, seed=2) + batches(1, 2, seed=3))  # a smaller last batch, padded
    scores = {}
    for name, model in (("eager", eager), ("compiled", compiled)):
        optimizer = build_optimizer(model, TrainConfig(lr=1e-3))
        data = iter(batches(4, 4))
        losses = []
        for _ in range(2):  # step, evaluation, step, evaluation: the pattern of a run
            losses.append(train_step(model, optimizer, data, 2, 1.0, cuda, torch.bfloat16).loss)
            losses.append(score_heldout(model, held_out, cuda.device, torch.bfloat16).loss)
        scores[name] = losses
    assert len(graphs) == 2, [g.graph for g in graphs]  # one training graph, one evaluation graph
    assert all(math.isfinite(x) for x in scores["compiled"])
    assert scores["compiled"] == pytest.approx(scores["eager"], rel=2e-2)
    torch._dynamo.reset()
