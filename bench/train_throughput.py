"""Training throughput: edulm's training step against transformers' ``LlamaForCausalLM``, side by side.

Both models get the same config, the same weights, the same batches (random token ids, already on
the device), the same micro-batch, sequence length and accumulation, the same AdamW
(``edulm.train.optim.build_optimizer``: fused on CUDA), the same precision (bf16 autocast on CUDA,
float32 on CPU unless the config says otherwise) and, unless ``--no-compile``, ``torch.compile``.
transformers runs with ``attn_implementation="sdpa"``. Each case is warmed up (compilation happens
there), then the median of ``--steps`` timed optimizer steps gives tokens/s; MFU counts
``edulm.model.flops_per_token`` (6N + 12·L·d·T) against ``edulm.metrics.peak_bf16_flops`` and says
"unknown" for a device not in its table.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` over the whole case (weights, gradients,
optimizer state, activations). On CPU, the same total counted tensor by tensor
(``edulm.memory.TensorMemoryTracker``) over one extra uncompiled step.

    python bench/train_throughput.py --config tiny                     # CPU smoke figures
    python bench/train_throughput.py --config configs/l20_135m_deepthin.yaml --micro-batches 4,6,8 \\
        --seq-len 2048 --steps 30 --warmup 5 --out results.md           # one GPU
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from edulm.config import Config, apply_overrides, config_from_dict, load_config
from edulm.errors import UsageError
from edulm.memory import track_tensor_memory
from edulm.metrics import device_info, mfu, peak_bf16_flops
from edulm.model import LlamaLM, count_parameters, flops_per_token
from edulm.train.optim import build_optimizer

PRESETS = {
    # The 135M recipe's proportions (head width 64, 3 query heads per K/V head, d_ff = 8/3 d) shrunk
    # until a CPU step takes well under a second.
    "tiny": {
        "model": {"vocab_size": 8192, "n_layers": 4, "d_model": 192, "d_ff": 512, "n_heads": 3, "n_kv_heads": 1,
                  "max_seq_len": 512},
        "train": {"seq_len": 256},
    },
}
IMPLEMENTATIONS = ("edulm", "transformers")


@dataclass
class Case:
    """One measured configuration of one implementation."""

    impl: str
    micro_batch: int
    grad_ckpt: bool
    tokens_per_s: float | None = None
    step_ms: float | None = None
    mfu: float | None = None
    peak_mem_gib: float | None = None
    first_loss: float | None = None
    error: str | None = None
    step_times_s: list[float] = field(default_factory=list)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="tiny", help=f"a YAML run config or a preset ({', '.join(PRESETS)})")
    p.add_argument("overrides", nargs="*", metavar="section.key=value",
                   help="config overrides, e.g. train.fused_loss=false model.n_layers=8")
    p.add_argument("--micro-batches", default="4,6,8", help="comma-separated micro-batch sizes")
    p.add_argument("--seq-len", type=int, default=None, help="sequence length (default: the config's train.seq_len)")
    p.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    p.add_argument("--steps", type=int, default=20, help="timed optimizer steps per case")
    p.add_argument("--warmup", type=int, default=3, help="untimed optimizer steps per case (compilation happens here)")
    p.add_argument("--no-compile", action="store_true", help="run both models eagerly")
    p.add_argument("--grad-ckpt", choices=("both", "on", "off"), default="both", help="gradient checkpointing cases")
    p.add_argument("--impl", default=",".join(IMPLEMENTATIONS), help="implementations to run: edulm,transformers")
    p.add_argument("--device", default="auto", help="'auto' (CUDA when available), 'cpu' or 'cuda[:N]'")
    p.add_argument("--out", default=None, help="also write the results: .json for JSON, anything else for markdown")
    args = p.parse_args(argv)
    try:
        args.micro_batches = [int(x) for x in args.micro_batches.split(",") if x.strip()]
    except ValueError:
        p.error(f"--micro-batches must be comma-separated integers, got {args.micro_batches!r}")
    args.impl = [x.strip() for x in args.impl.split(",") if x.strip()]
    unknown = set(args.impl) - set(IMPLEMENTATIONS)
    if unknown or not args.impl:
        p.error(f"--impl takes {', '.join(IMPLEMENTATIONS)}; got {args.impl}")
    if not args.micro_batches or min(args.micro_batches) < 1 or args.steps < 1 or args.warmup < 0 or args.grad_accum < 1:
        p.error("--micro-batches, --steps and --grad-accum must be positive, --warmup 0 or more")
    return args


def load_bench_config(name: str, seq_len: int | None, overrides: list[str] = ()) -> Config:
    """A preset by name or a YAML run config, with ``overrides`` applied and ``train.seq_len`` set when given."""
    if name in PRESETS:
        raw = apply_overrides(PRESETS[name], list(overrides))
    else:
        cfg = load_config(name, list(overrides))
        raw = {"model": vars(cfg.model).copy(), "train": vars(cfg.train).copy()}
    if seq_len is not None:
        raw["train"]["seq_len"] = seq_len
        raw["model"]["max_seq_len"] = max(raw["model"].get("max_seq_len", seq_len), seq_len)
    return config_from_dict(raw, source=name)


def build_models(cfg: Config, impl: str, device: torch.device, grad_ckpt: bool, seed: int = 0):
    """``(module, loss_fn)`` for one implementation; both start from the weights edulm draws with ``seed``."""
    torch.manual_seed(seed)
    edulm_model = LlamaLM(cfg.model)
    if impl == "edulm":
        edulm_model.grad_checkpointing = grad_ckpt
        edulm_model.fused_loss = cfg.train.fused_loss
        model = edulm_model.to(device).train()
        return model, model
    from transformers import AutoModelForCausalLM

    from edulm.hf import to_hf_config

    hf = AutoModelForCausalLM.from_config(to_hf_config(cfg.model, use_cache=False), attn_implementation="sdpa")
    missing, unexpected = hf.load_state_dict(edulm_model.state_dict(), strict=False)
    if unexpected or set(missing) - {"lm_head.weight"}:
        raise RuntimeError(f"weights do not map onto transformers: missing {missing}, unexpected {unexpected}")
    if grad_ckpt:
        enable = getattr(hf, "activation_checkpointing_enable", None)  # transformers 5 name
        if enable is not None:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = hf.to(device).train()

    def loss_fn(ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        # shift_labels: the targets are already shifted, exactly as edulm receives them.
        return model(input_ids=ids, labels=targets, shift_labels=targets, use_cache=False).loss

    return model, loss_fn


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_case(cfg: Config, args: argparse.Namespace, impl: str, micro: int, grad_ckpt: bool, device: torch.device) -> Case:
    """Warm up, then time ``args.steps`` optimizer steps of one implementation at one micro-batch."""
    case = Case(impl, micro, grad_ckpt)
    seq_len, accum = cfg.train.seq_len, args.grad_accum
    bf16 = device.type == "cuda" and cfg.train.precision in ("auto", "bf16") or cfg.train.precision == "bf16"
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    model, loss_fn = build_models(cfg, impl, device, grad_ckpt)
    optimizer, _ = build_optimizer(model, cfg.train)
    step_fn = loss_fn if args.no_compile else torch.compile(loss_fn)
    g = torch.Generator().manual_seed(1)
    windows = [torch.randint(0, cfg.model.vocab_size, (micro, seq_len + 1), generator=g) for _ in range(4)]
    # (inputs, targets) as the data loader yields them: contiguous, already on the device.
    batches = [(w[:, :-1].contiguous().to(device), w[:, 1:].contiguous().to(device)) for w in windows]

    def train_step(i: int, fn) -> float:
        total = 0.0
        for j in range(accum):
            ids, targets = batches[(i * accum + j) % len(batches)]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = fn(ids, targets) / accum
            loss.backward()
            total += loss.detach()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return total

    try:
        for i in range(args.warmup + args.steps):
            _sync(device)
            start = time.perf_counter()
            loss = train_step(i, step_fn)
            _sync(device)
            if i == 0:
                case.first_loss = float(loss)
            if i >= args.warmup:
                case.step_times_s.append(time.perf_counter() - start)
        if device.type == "cuda":
            case.peak_mem_gib = torch.cuda.max_memory_allocated(device) / 2**30
        else:
            case.peak_mem_gib = _cpu_peak_bytes(model, optimizer, lambda: train_step(0, loss_fn)) / 2**30
    except torch.OutOfMemoryError:
        case.error = "OOM"
    finally:
        del model, optimizer, step_fn, batches
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if case.step_times_s:
        median = statistics.median(case.step_times_s)
        case.step_ms = median * 1e3
        case.tokens_per_s = micro * accum * seq_len / median
        case.mfu = mfu(case.tokens_per_s, flops_per_token(cfg.model, seq_len), peak_bf16_flops(device_info(device)["name"]))
    return case


def _cpu_peak_bytes(model, optimizer, step) -> int:
    """Weights + optimizer state + gradients + the peak of what one eager step allocates on top."""
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    state = sum(t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t))
    with track_tensor_memory() as mem:
        step()
    return params + state + mem.peak_bytes


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def markdown(cases: list[Case], header: dict) -> str:
    """The results as a markdown table (one row per case, edulm's speed-up over transformers last)."""
    lines = [f"- {k}: {v}" for k, v in header.items()]
    lines += ["", "| impl | micro-batch | grad ckpt | tokens/s | step ms | MFU | peak mem GiB | first loss | vs transformers |",
              "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    reference = {(c.micro_batch, c.grad_ckpt): c for c in cases if c.impl == "transformers"}
    for c in cases:
        ref = reference.get((c.micro_batch, c.grad_ckpt))
        speedup = "-"
        if c.impl != "transformers" and ref and ref.tokens_per_s and c.tokens_per_s:
            speedup = f"{c.tokens_per_s / ref.tokens_per_s:.2f}x"
        mfu = "unknown" if c.mfu is None and c.tokens_per_s else _fmt(c.mfu and c.mfu * 100, ".1f") + ("%" if c.mfu else "")
        lines.append(
            f"| {c.impl} | {c.micro_batch} | {'on' if c.grad_ckpt else 'off'} | "
            f"{c.error or _fmt(c.tokens_per_s, ',.0f')} | {_fmt(c.step_ms, '.1f')} | {mfu} | "
            f"{_fmt(c.peak_mem_gib, '.3f')} | {_fmt(c.first_loss, '.4f')} | {speedup} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = load_bench_config(args.config, args.seq_len, args.overrides)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    import transformers

    name = device_info(device)["name"]
    peak = peak_bf16_flops(name)
    header = {
        "device": f"{name} ({torch.get_num_threads()} threads)" if device.type == "cpu" else name,
        "peak bf16 TFLOPS": "unknown" if peak is None else f"{peak / 1e12:g}",
        "torch": torch.__version__, "transformers": transformers.__version__,
        "config": " ".join([args.config, *args.overrides]), "parameters": f"{count_parameters(cfg.model):,}",
        "seq_len": cfg.train.seq_len, "grad_accum": args.grad_accum,
        "FLOPs/token": f"{flops_per_token(cfg.model, cfg.train.seq_len):,}",
        "precision": "bf16 autocast" if device.type == "cuda" and cfg.train.precision != "fp32" else "fp32",
        "compile": not args.no_compile, "steps": f"{args.warmup} warm-up + {args.steps} timed (median)",
    }
    ckpt_cases = {"both": (False, True), "on": (True,), "off": (False,)}[args.grad_ckpt]
    cases = []
    for grad_ckpt in ckpt_cases:
        for micro in args.micro_batches:
            for impl in args.impl:
                case = run_case(cfg, args, impl, micro, grad_ckpt, device)
                cases.append(case)
                print(f"{impl:>12} micro={micro} ckpt={'on' if grad_ckpt else 'off'}: "
                      f"{case.error or _fmt(case.tokens_per_s, ',.0f') + ' tokens/s'}", file=sys.stderr, flush=True)
    table = markdown(cases, header)
    print(table)
    if args.out:
        out = Path(args.out)
        if out.suffix == ".json":
            out.write_text(json.dumps({"header": header, "cases": [vars(c) for c in cases]}, indent=2))
        else:
            out.write_text(table)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
