"""LM head + cross-entropy alone: the plain path (full logits) against the fused, chunked one.

Times forward + backward of ``edulm.model.loss.lm_loss`` with ``chunk_size=None`` (full float32
logits, then ``F.cross_entropy``) and with chunks, eager and under ``torch.compile``, steps of the
variants interleaved; reports the median and, for eager runs, the peak of what each allocates
(``edulm.memory.TensorMemoryTracker``) and the largest single tensor.

    python bench/lm_head_loss.py --tokens 1024 --d-model 576 --vocab 49152 --chunk 4096
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from edulm.memory import track_tensor_memory
from edulm.model.loss import lm_loss


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
    args = p.parse_args(argv)
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(args.tokens, args.d_model, generator=g).to(device).requires_grad_()
    weight = (torch.randn(args.vocab, args.d_model, generator=g) * 0.02).to(device).requires_grad_()
    targets = torch.randint(0, args.vocab, (args.tokens,), generator=g).to(device)
    variants = {"plain": lambda: lm_loss(hidden, weight, targets), "fused": lambda: lm_loss(hidden, weight, targets, args.chunk)}
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
            line += f", peak {mem.peak_bytes / 2**20:.0f} MiB, largest tensor {mem.largest_bytes / 2**20:.0f} MiB"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
