"""Peak training memory of a full-size model, predicted on a CPU from a few small measured steps.

Every decoder layer holds the same activations, and every sequence of a micro-batch the same, so
the peak of one forward + backward is linear in both the number of layers L and the micro-batch B
once B x seq_len fills a whole loss chunk (the fused loss's workspace is then a constant):

    peak(L, B) = c + B * (a + L * b)

Three small real steps (bf16 autocast on CPU, the same ops and dtypes as on CUDA; tensors counted
byte for byte by ``edulm.base.memory.TensorMemoryTracker``) give c, a and b; a fourth checks the fit.
The prediction then adds what exists outside the step: the float32 weights and the optimizer's
state, as its registry entry sizes it (``edulm.train.optim.optimizer_state_bytes``: AdamW two float32
moments per parameter, 16 bytes per parameter with weights and gradients; Muon one momentum buffer
for the block matrices and AdamW's two moments for the rest).

    python bench/memory_estimate.py                      # the 135M recipe, micro-batch 8, seq 2048
    python bench/memory_estimate.py --config configs/l20_135m_deepthin.yaml --micro-batch 8 --grad-ckpt
    python bench/memory_estimate.py --optimizer muon

It is an estimate of ``torch.cuda.max_memory_allocated``: CUDA kernels' own workspaces and the
allocator's caching (``memory_reserved``) come on top and are measured on the GPU itself.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

import torch

from edulm.config import Config, ModelConfig, load_config
from edulm.base.memory import track_tensor_memory
from edulm.model import LlamaLM, count_parameters
from edulm.model.llama import LOSS_CHUNK_TOKENS
from edulm.train.optim import OPTIMIZERS, optimizer_state_bytes

GiB = 2**30


def measured_peak(cfg: ModelConfig, n_layers: int, batch: int, seq_len: int, bf16: bool, grad_ckpt: bool) -> int:
    """Bytes at the peak of one forward + backward (everything the step allocates, gradients included)."""
    torch.manual_seed(0)
    model = LlamaLM(dataclasses.replace(cfg, n_layers=n_layers)).train()
    model.grad_checkpointing = grad_ckpt
    ids = torch.randint(0, cfg.vocab_size, (batch, seq_len))
    with track_tensor_memory() as mem:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(ids, ids)
        loss.backward()
        del loss
    return mem.peak_bytes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=None, help="a YAML run config (default: the 135M recipe's model)")
    p.add_argument("--micro-batch", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=None, help="default: the config's train.seq_len (2048)")
    p.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    p.add_argument("--grad-ckpt", action="store_true", help="with gradient checkpointing")
    p.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default=None, help="default: the config's train.optimizer")
    args = p.parse_args(argv)
    run = load_config(args.config) if args.config else Config()
    train = dataclasses.replace(run.train, optimizer=args.optimizer or run.train.optimizer)
    T = args.seq_len or run.train.seq_len
    cfg = dataclasses.replace(run.model, max_seq_len=max(run.model.max_seq_len, T))
    bf16 = args.precision == "bf16"
    # Smallest micro-batch whose tokens fill one loss chunk: from there on the peak is linear in B.
    b0 = max(1, -(-LOSS_CHUNK_TOKENS // T))
    points = [(1, b0), (2, b0), (1, b0 + 1), (2, b0 + 1)]
    peaks = {}
    for n_layers, batch in points:
        peaks[n_layers, batch] = measured_peak(cfg, n_layers, batch, T, bf16, args.grad_ckpt)
        print(f"measured L={n_layers} B={batch}: {peaks[n_layers, batch] / GiB:.3f} GiB", file=sys.stderr, flush=True)
    b = (peaks[2, b0] - peaks[1, b0]) / b0  # per layer per sequence
    a = (peaks[1, b0 + 1] - peaks[1, b0]) - b  # per sequence outside the layers
    c = peaks[1, b0] - b0 * (a + b)

    def predict(n_layers: int, batch: int) -> float:
        return c + batch * (a + n_layers * b)

    check = predict(2, b0 + 1)
    n_params = count_parameters(cfg)
    step_peak = predict(cfg.n_layers, args.micro_batch)
    with torch.device("meta"):  # the full-size model's shapes and dtypes, no memory
        full_model = LlamaLM(cfg)
    optimizer_state = optimizer_state_bytes(full_model, train)
    outside = 4 * n_params + optimizer_state  # float32 weights + the optimizer's state
    lines = [
        f"- model: {n_params:,} parameters, {cfg.n_layers} layers, d_model {cfg.d_model}, vocab {cfg.vocab_size}",
        f"- step: micro-batch {args.micro_batch} x seq {T}, {args.precision}, gradient checkpointing "
        f"{'on' if args.grad_ckpt else 'off'}, fused loss chunk {LOSS_CHUNK_TOKENS} tokens",
        f"- per layer per sequence: {b / 2**20:.1f} MiB; per sequence outside the layers: {a / 2**20:.1f} MiB; "
        f"fixed: {c / 2**20:.1f} MiB",
        f"- fit check at L=2, B={b0 + 1}: predicted {check / 2**20:.2f} MiB, measured {peaks[2, b0 + 1] / 2**20:.2f} MiB",
        f"- step peak (activations, gradients, loss workspace): {step_peak / GiB:.2f} GiB",
        f"- weights (float32): {4 * n_params / GiB:.2f} GiB; {train.optimizer} state: {optimizer_state / GiB:.2f} GiB",
        f"- **estimated peak allocated: {(step_peak + outside) / GiB:.2f} GiB**",
    ]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    from bench_main import run_main  # beside this file (bench/ is not a package)

    run_main(main)
