"""One rank of a two-process gloo DDP run with train.compile=true, started by torchrun from test_distributed.py.

Each rank builds the tiny model, lets :func:`edulm.train.distributed.wrap_model` wrap and compile it,
runs three optimizer steps on its own batches, and rank 0 writes what the test checks as JSON to the
path given as the first argument. Graphs are compiled with ``aot_eager`` (counted), as in test_compile.py.
"""

from __future__ import annotations

import json
import sys

import torch
from torch._dynamo.backends.debugging import aot_eager
from torch.nn.parallel import DistributedDataParallel

from edulm.config import ModelConfig, TrainConfig
from edulm.model.llama import LlamaLM
from edulm.train.distributed import full_model_state, init_distributed, teardown, wrap_model
from edulm.train.optim import build_optimizer
from edulm.train.step import train_step

MODEL = ModelConfig(vocab_size=320, n_layers=2, d_model=64, d_ff=160, n_heads=4, n_kv_heads=2, max_seq_len=64)
STEPS, MICRO, SEQ = 3, 2, 32


def batches(rank: int, world_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Step ``s``'s batch of rank ``r`` is the ``s * world_size + r``-th of one seeded sequence."""
    g = torch.Generator().manual_seed(5)
    every = [torch.randint(0, MODEL.vocab_size, (MICRO, SEQ + 1), generator=g) for _ in range(STEPS * world_size)]
    return [(w[:, :-1].contiguous(), w[:, 1:].contiguous()) for w in every[rank::world_size]]


def main(out: str) -> None:
    graphs = []
    original = torch.nn.Module.compile
    torch.nn.Module.compile = lambda self, *a, **k: original(  # count every graph the trainer's compile makes
        self, *a, **{**k, "backend": lambda gm, inputs: graphs.append(1) or aot_eager(gm, inputs)})
    env = init_distributed("cpu")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = LlamaLM(MODEL)
    wrapped = wrap_model(model, env, "ddp", compile=True)
    order = {
        "wrapper_is_ddp": isinstance(wrapped, DistributedDataParallel),
        "wrapper_compiled": getattr(wrapped, "_compiled_call_impl", None) is not None,
        "model_compiled_on_its_own": getattr(model, "_compiled_call_impl", None) is not None,
    }
    optimizer = build_optimizer(model, TrainConfig(lr=1e-3))
    data = iter(batches(env.rank, env.world_size))
    losses = [train_step(wrapped, optimizer, data, 1, 1.0, env, None).loss for _ in range(STEPS)]
    names = sorted(full_model_state(model))
    if env.is_main:
        with open(out, "w") as f:
            json.dump({"order": order, "losses": losses, "graphs": len(graphs), "names": names}, f)
    teardown(env)


if __name__ == "__main__":
    main(sys.argv[1])
