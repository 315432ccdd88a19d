"""LM head + cross-entropy alone: the plain path (full logits) against chunked ones.

Times forward + backward of ``edulm.model.loss.lm_loss`` with ``chunk_size=None`` (full float32
logits, then ``F.cross_entropy``), of chunks whose logits are recomputed in the backward pass
(activation checkpointing: four matrix products per chunk) and of edulm's fused path (gradients in
the forward pass: three), eager or under ``torch.compile``, steps of the variants interleaved; reports the median and, for eager runs, the peak of what each allocates
(``edulm.base.memory.TensorMemoryTracker``) and the largest single tensor.

    python bench/lm_head_loss.py --tokens 1024 --d-model 576 --vocab 49152 --chunk 4096
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

if str(Path(__file__).resolve().parent.parent) not in sys.path:  # edulm from this checkout, installed or not
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edulm.base.memory import track_tensor_memory  # noqa: E402
from edulm.model.loss import IGNORE_INDEX, compute_dtype, lm_loss


def recompute_loss(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int) -> torch.Tensor:
    """The alternative design: chunks under activation checkpointing, each chunk's logits recomputed in backward."""

    def chunk_sum(h: torch.Tensor, w: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        logits = (h.to(compute_dtype(h)) @ w.to(compute_dtype(h)).t()).float()
        return F.cross_entropy(logits, t, ignore_index=IGNORE_INDEX, reduction="sum")

    total = sum(
        checkpoint(chunk_sum, hidden[i : i + chunk], weight, targets[i : i + chunk], use_reentrant=False)
        for i in range(0, hidden.shape[0], chunk)
    )
    return total / (targets != IGNORE_INDEX).sum().clamp(min=1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", type=int, default=1024, help="tokens in the batch (micro-batch x seq_len)")
    p.add_argument("--d-model", type=int, default=576)
    p.add_argument("--vocab", type=int, default=49152)
    p.add_argument("--chunk", type=int, default=4096, help="tokens per slice of the fused path")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--compile", action="store_true", help="compile both paths")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--bf16", action="store_true", help="under bf16 autocast")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(args.tokens, args.d_model, generator=g).to(device).requires_grad_()
    weight = (torch.randn(args.vocab, args.d_model, generator=g) * 0.02).to(device).requires_grad_()
    targets = torch.randint(0, args.vocab, (args.tokens,), generator=g).to(device)
    variants = {
        "plain": lambda: lm_loss(hidden, weight, targets),
        "recompute": lambda: recompute_loss(hidden, weight, targets, args.chunk),
        "fused": lambda: lm_loss(hidden, weight, targets, args.chunk),
    }
    fns = {k: torch.compile(f) if args.compile else f for k, f in variants.items()}

    def run(fn) -> None:
        hidden.grad = weight.grad = None
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            loss = fn()
        loss.backward()

    times = {k: [] for k in fns}
    for i in range(args.steps + 2):  # two warm-up rounds (compilation)
        for name, fn in fns.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            run(fn)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= 2:
                times[name].append(time.perf_counter() - start)
    print(f"tokens {args.tokens}, d_model {args.d_model}, vocab {args.vocab}, chunk {args.chunk}, "
          f"{'compiled' if args.compile else 'eager'}, {'bf16' if args.bf16 else 'fp32'}, {device}")
    for name in fns:
        line = f"{name}: {statistics.median(times[name]) * 1e3:.1f} ms"
        if not args.compile:
            with track_tensor_memory() as mem:
                run(variants[name])
            line += f", peak {mem.peak_bytes / 2**20:.1f} MiB, largest tensor {mem.largest_bytes / 2**20:.1f} MiB"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
