"""Training throughput: edulm's training step against transformers' ``LlamaForCausalLM``, side by side.

Both models run the trainer's own optimizer step (``edulm.train.step.train_step``: accumulation,
gradient clipping, one host sync) with the same config, the same weights, the same batches (random
token ids, already on the device), the same micro-batch, sequence length and accumulation, the same
AdamW (``edulm.train.optim.build_optimizer``: fused on CUDA), the same precision (bf16 autocast on
CUDA, float32 on CPU unless the config says otherwise) and, unless ``--no-compile``, ``torch.compile``.
transformers runs with ``attn_implementation="sdpa"``. The implementations' steps are interleaved
(one step of each in turn) so that any slowdown of the machine hits them alike. Each case is warmed
up (compilation happens there), then the median of ``--steps`` timed optimizer steps gives tokens/s;
MFU counts ``edulm.model.flops_per_token`` (6N + 12·L·d·T) against
``edulm.train.throughput.peak_bf16_flops`` and says "unknown" for a device not in its table.

Peak memory: the weights and optimizer state of that implementation plus the peak of one step on
top of everything already allocated (activations, gradients, workspaces): on CUDA from the
allocator's statistics over a compiled step, on CPU counted tensor by tensor
(``edulm.base.memory.TensorMemoryTracker``) over an eager step. On CUDA also the peak the caching
allocator reserved during that step, for the whole process (both implementations' weights included).

    python bench/train_throughput.py --config tiny                     # CPU smoke figures
    python bench/train_throughput.py --config configs/l20_135m_deepthin.yaml --micro-batches 4,6,8 \\
        --seq-len 2048 --steps 30 --warmup 5 --out results.md           # one GPU
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

BENCH = Path(__file__).resolve().parent
if str(BENCH.parent) not in sys.path:  # edulm from this checkout, installed or not
    sys.path.insert(0, str(BENCH.parent))

from edulm.config import Config, apply_overrides, config_from_dict, config_to_dict, load_config
from edulm.base.errors import UsageError
from edulm.base.memory import track_tensor_memory
from edulm.train.throughput import device_info, mfu, peak_bf16_flops
from edulm.model import LlamaLM, count_parameters, flops_per_token
from edulm.train.distributed import DistEnv
from edulm.train.optim import build_optimizer
from edulm.train.step import autocast_dtype, train_step

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
SDPA_BACKENDS = {
    "auto": None,
    "flash": SDPBackend.FLASH_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "math": SDPBackend.MATH,
}


GQA_BACKENDS = ("auto", "flash", "math")
"""``--sdpa`` kernels that read grouped K/V heads natively (``enable_gqa``), as edulm's attention passes them."""


def case_error(err: BaseException) -> str:
    """What a failed case records: ``OOM``, or the error's type and first line (a compiler error, a kernel that
    refuses), so one failing case never costs the other cases their figures."""
    if isinstance(err, torch.OutOfMemoryError):
        return "OOM"
    return f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0][:300]}"


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
    peak_reserved_gib: float | None = None
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
    p.add_argument("--compile-backend", default="inductor",
                   help="torch.compile backend (default inductor, what training uses; aot_eager traces alike without "
                        "generating kernels: a quick check of the compiled path on a CPU)")
    p.add_argument("--grad-ckpt", choices=("both", "on", "off"), default="both", help="gradient checkpointing cases")
    p.add_argument("--impl", action="append", metavar="'NAME [section.key=value ...]'",
                   help="an implementation to run (edulm or transformers), optionally with its own config "
                        "overrides; repeat for several (default: edulm and transformers)")
    p.add_argument("--device", default="auto", help="'auto' (CUDA when available), 'cpu' or 'cuda[:N]'")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: torch's choice); 1 keeps timings steady on a busy machine")
    p.add_argument("--sdpa", choices=sorted(SDPA_BACKENDS), default="auto",
                   help="restrict scaled_dot_product_attention to one kernel (default: torch's choice)")
    p.add_argument("--out", default=None, help="also write the results: .json for JSON, anything else for markdown")
    args = p.parse_args(argv)
    try:
        args.micro_batches = [int(x) for x in args.micro_batches.split(",") if x.strip()]
    except ValueError:
        p.error(f"--micro-batches must be comma-separated integers, got {args.micro_batches!r}")
    args.impl = [" ".join(spec.split()) for spec in (args.impl or IMPLEMENTATIONS)]
    for spec in args.impl:
        if not spec or spec.split()[0] not in IMPLEMENTATIONS:
            p.error(f"--impl must start with one of {', '.join(IMPLEMENTATIONS)}; got {spec!r}")
    if not args.micro_batches or min(args.micro_batches) < 1 or args.steps < 1 or args.warmup < 0 or args.grad_accum < 1:
        p.error("--micro-batches, --steps and --grad-accum must be positive, --warmup 0 or more")
    return args


def load_bench_config(name: str, seq_len: int | None, overrides: list[str] = ()) -> Config:
    """A preset by name or a YAML run config, with ``overrides`` applied and ``train.seq_len`` set when given."""
    if name in PRESETS:
        raw = apply_overrides(PRESETS[name], list(overrides))
    else:
        cfg = load_config(name, list(overrides))
        whole = config_to_dict(cfg)
        raw = {"model": whole["model"], "train": whole["train"]}
    if seq_len is not None:
        raw["train"]["seq_len"] = seq_len
        raw["model"]["max_seq_len"] = max(raw["model"].get("max_seq_len", seq_len), seq_len)
    return config_from_dict(raw, source=name)


class TransformersLoss(nn.Module):
    """transformers' ``LlamaForCausalLM`` behind edulm's calling convention: ``forward(ids, targets) -> loss``."""

    def __init__(self, hf: nn.Module) -> None:
        super().__init__()
        self.hf = hf

    def forward(self, ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        # shift_labels: the targets are already shifted, exactly as edulm receives them.
        return self.hf(input_ids=ids, labels=targets, shift_labels=targets, use_cache=False).loss


def build_model(cfg: Config, impl: str, device: torch.device, grad_ckpt: bool, seed: int = 0) -> nn.Module:
    """A module with ``forward(ids, targets) -> loss``; both implementations start from the weights edulm draws with ``seed``."""
    torch.manual_seed(seed)
    edulm_model = LlamaLM(cfg.model)
    if impl == "edulm":
        edulm_model.grad_checkpointing = grad_ckpt
        edulm_model.fused_loss = cfg.train.fused_loss
        return edulm_model.to(device).train()
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
    return TransformersLoss(hf).to(device).train()


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (timing on CUDA)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Runner:
    """One implementation at one micro-batch: model, optimizer, (compiled) model and fixed batches."""

    def __init__(self, label: str, impl: str, cfg: Config, args: argparse.Namespace, micro: int, grad_ckpt: bool,
                 device: torch.device) -> None:
        self.case = Case(label, micro, grad_ckpt)
        self.cfg, self.device, self.accum = cfg, device, args.grad_accum
        self.env = DistEnv(rank=0, local_rank=0, world_size=1, device=device)
        self.amp_dtype = autocast_dtype(cfg.train.precision, device)
        self.model = build_model(cfg, impl, device, grad_ckpt)
        self.optimizer = build_optimizer(self.model, cfg.train)
        if device.type == "cuda":
            # TF32 for fp32 matmuls, set before compiling: it is part of inductor's cache key, so every path
            # that compiles these cases (the benchmark, gpu_check's warm-up and its timed parts) shares graphs.
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        # Static shapes, as in training: every case compiles its own graphs (see run_cases).
        self.compiled = self.model if args.no_compile else torch.compile(self.model, dynamic=False,
                                                                         backend=args.compile_backend)
        g = torch.Generator().manual_seed(1)
        windows = [torch.randint(0, cfg.model.vocab_size, (micro, cfg.train.seq_len + 1), generator=g) for _ in range(4)]
        # (inputs, targets) as the data loader yields them: contiguous, already on the device.
        self.batches = itertools.cycle(
            [(w[:, :-1].contiguous().to(device), w[:, 1:].contiguous().to(device)) for w in windows]
        )

    def step(self, eager: bool = False) -> float:
        """One optimizer step of edulm's trainer (``edulm.train.step.train_step``); returns the loss."""
        model = self.model if eager else self.compiled
        result = train_step(model, self.optimizer, self.batches, self.accum, self.cfg.train.grad_clip,
                            self.env, self.amp_dtype)
        return result.loss

    def timed_step(self, i: int, record: bool) -> None:
        if self.case.error:
            return
        try:
            sync(self.device)
            start = time.perf_counter()
            loss = self.step()
            sync(self.device)
        except Exception as err:  # noqa: BLE001 - recorded; the other implementation and cases go on
            self.case.error = case_error(err)
            return
        if i == 0:
            self.case.first_loss = loss
        if record:
            self.case.step_times_s.append(time.perf_counter() - start)

    def persistent_bytes(self) -> int:
        """Weights and optimizer state: what stays allocated between steps."""
        params = sum(p.numel() * p.element_size() for p in self.model.parameters())
        state = sum(t.numel() * t.element_size() for opt in self.optimizer.optimizers for st in opt.state.values()
                    for t in st.values() if torch.is_tensor(t))
        return params + state

    def measure_memory(self) -> None:
        """Peak of one step (activations, gradients, workspaces) on top of this model's weights and state.

        Measured on top of whatever else is allocated, so the other implementation's model, alive
        at the same time, does not count. CUDA: the compiled step, from the allocator's statistics;
        CPU: an eager step, tensor by tensor.
        """
        if self.case.error:
            return
        try:
            if self.device.type == "cuda":
                sync(self.device)
                torch.cuda.empty_cache()
                before = torch.cuda.memory_allocated(self.device)
                torch.cuda.reset_peak_memory_stats(self.device)
                self.step()
                sync(self.device)
                step_peak = torch.cuda.max_memory_allocated(self.device) - before
                # The allocator's reserve is one pool for the whole process (the other implementation's
                # weights and state included): the most the device must hold while this case runs.
                self.case.peak_reserved_gib = torch.cuda.max_memory_reserved(self.device) / 2**30
            else:
                with track_tensor_memory() as mem:
                    self.step(eager=True)
                step_peak = mem.peak_bytes
        except Exception as err:  # noqa: BLE001 - recorded; the other implementation and cases go on
            self.case.error = case_error(err)
            return
        self.case.peak_mem_gib = (self.persistent_bytes() + step_peak) / 2**30

    def finish(self, cfg: Config) -> Case:
        """Release the model and turn the step times into the case's figures."""
        del self.model, self.compiled, self.optimizer, self.batches
        case = self.case
        if case.step_times_s and not case.error:
            median = statistics.median(case.step_times_s)
            tokens = case.micro_batch * self.accum * cfg.train.seq_len
            case.step_ms = median * 1e3
            case.tokens_per_s = tokens / median
            peak = peak_bf16_flops(device_info(self.device)["name"])
            case.mfu = mfu(case.tokens_per_s, flops_per_token(cfg.model, cfg.train.seq_len), peak)
        return case


def run_cases(variants: list[tuple[str, str, Config]], args: argparse.Namespace, micro: int, grad_ckpt: bool,
              device: torch.device) -> list[Case]:
    """Time every variant at one micro-batch, their steps interleaved so that any slowdown of the
    machine hits them alike; then measure each one's memory."""
    torch._dynamo.reset()  # fresh compilation per case: no recompile limits, no shapes marked dynamic
    runners, build_errors = [], {}
    for label, impl, cfg in variants:
        try:
            runners.append(Runner(label, impl, cfg, args, micro, grad_ckpt, device))
        except Exception as err:  # noqa: BLE001 - recorded; the other implementation still runs
            runners.append(None)
            build_errors[label] = case_error(err)
            print(f"{label}: failed while building: {build_errors[label]}", file=sys.stderr)
    for i in range(args.warmup + args.steps):
        for runner in filter(None, runners):
            runner.timed_step(i, record=i >= args.warmup)
    for runner in filter(None, runners):
        runner.measure_memory()
    cases = []
    for runner, (label, _, cfg) in zip(runners, variants):
        cases.append(runner.finish(cfg) if runner else Case(label, micro, grad_ckpt, error=build_errors[label]))
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return cases


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _mfu_text(case: Case) -> str:
    if case.tokens_per_s is None:
        return "-"
    return "unknown" if case.mfu is None else f"{case.mfu * 100:.1f}%"


def markdown(cases: list[Case], header: dict) -> str:
    """The results as a markdown table: one row per case, the speed-up over transformers at the same settings last."""
    lines = [f"- {k}: {v}" for k, v in header.items()]
    lines += ["", "| impl | micro-batch | grad ckpt | tokens/s | step ms | MFU | peak mem GiB | reserved GiB | first loss "
                  "| vs transformers |",
              "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    reference = {(c.micro_batch, c.grad_ckpt): c for c in cases if c.impl == "transformers"}
    for c in cases:
        ref = reference.get((c.micro_batch, c.grad_ckpt))
        speedup = "-"
        if c is not ref and ref and ref.tokens_per_s and c.tokens_per_s:
            speedup = f"{c.tokens_per_s / ref.tokens_per_s:.2f}x"
        lines.append(
            f"| {c.impl} | {c.micro_batch} | {'on' if c.grad_ckpt else 'off'} | "
            f"{c.error or _fmt(c.tokens_per_s, ',.0f')} | {_fmt(c.step_ms, '.1f')} | {_mfu_text(c)} | "
            f"{_fmt(c.peak_mem_gib, '.3f')} | {_fmt(c.peak_reserved_gib, '.2f')} | {_fmt(c.first_loss, '.4f')} | {speedup} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = load_bench_config(args.config, args.seq_len, args.overrides)
    if args.sdpa not in GQA_BACKENDS and cfg.model.n_kv_heads != cfg.model.n_heads:
        raise UsageError(f"--sdpa {args.sdpa}: that kernel cannot read grouped K/V heads ({cfg.model.n_heads} query, "
                         f"{cfg.model.n_kv_heads} K/V), as edulm's attention passes them; choose one of "
                         f"{', '.join(GQA_BACKENDS)}, or a config with model.n_kv_heads equal to model.n_heads")
    variants = []
    for spec in args.impl:
        impl, *extra = spec.split()
        variants.append((spec, impl, load_bench_config(args.config, args.seq_len, [*args.overrides, *extra])))
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
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
        "precision": "bf16 autocast" if autocast_dtype(cfg.train.precision, device) else "fp32",
        "compile": "off" if args.no_compile else args.compile_backend, "sdpa kernel": args.sdpa,
        "steps": f"{args.warmup} warm-up + {args.steps} timed, interleaved across implementations (median)",
    }
    ckpt_cases = {"both": (False, True), "on": (True,), "off": (False,)}[args.grad_ckpt]
    backend = SDPA_BACKENDS[args.sdpa]
    cases = []
    for grad_ckpt in ckpt_cases:
        for micro in args.micro_batches:
            with contextlib.nullcontext() if backend is None else sdpa_kernel([backend]):
                measured = run_cases(variants, args, micro, grad_ckpt, device)
            for case in measured:
                cases.append(case)
                print(f"{case.impl} micro={micro} ckpt={'on' if grad_ckpt else 'off'}: "
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
    from bench_main import run_main  # beside this file (bench/ is not a package)

    run_main(main)
