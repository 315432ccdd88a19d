"""The parts of ``bench/gpu_check.py``: each measures one thing and returns plain JSON-ready values.

A part is ``part(ctx) -> dict``. It calls ``ctx.partial(result_so_far)`` after every piece it
finishes, so what it measured survives when its time limit kills it, and it starts no new piece
once ``ctx.left()`` says the time is short. A part that cannot run here (no CUDA, no such config)
says so in ``result["skipped"]``; one that measured something wrong sets ``result["failed"]``.
Nothing here is specific to ``--dry-run`` except the sizes in ``ctx.sizes``.
"""

from __future__ import annotations

import contextlib
import math
import platform
import re
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
# train_throughput.py lives beside this file (bench/ is not a package); edulm is read from this checkout.
for _folder in (REPO, BENCH):
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))

import train_throughput  # noqa: E402

TINY = ["model.n_layers=1", "model.vocab_size=512", "model.d_model=64", "model.d_ff=128", "model.n_heads=2",
        "model.n_kv_heads=1"]
"""Model overrides of ``--dry-run``: the 135M config shrunk until every part takes a second or two on a CPU."""


@dataclass(frozen=True)
class Sizes:
    """How big each part runs: the real shapes on a GPU, tiny ones for ``--dry-run``."""

    overrides: tuple[str, ...] = ()
    """Config overrides applied to every config the parts load."""
    seq_len: int = 2048
    """Sequence length of the 135M measurements (and of every config in a dry run)."""
    micro_batches: tuple[int, ...] = (8, 16)
    """Micro-batches of the edulm-against-transformers cases."""
    warmup: int = 3
    """Untimed optimizer steps per throughput case (compilation happens in the first)."""
    steps: int = 10
    """Timed optimizer steps per throughput case."""
    compile_backend: str = "inductor"
    """``torch.compile`` backend of the throughput cases."""
    sdpa_batch: int = 8
    """Sequences per attention call in the kernel check."""
    sdpa_iters: int = 10
    """Timed forward + backward passes per attention kernel."""
    precision_micro: int = 2
    """Sequences per step of the bf16-against-float32 check."""
    precision_steps: int = 5
    """Optimizer steps of the bf16-against-float32 check."""
    own_seq_len: bool = True
    """The fast config runs at its own ``train.seq_len`` (False in a dry run: ``seq_len`` for every config)."""
    max_accum: int | None = None
    """At most this many micro-batches per step of the fast config (None: its own accumulation)."""
    warm_cases: int | None = None
    """Throughput cases the compile warm-up compiles (None: all of them, in the throughput part's order)."""

    @classmethod
    def dry_run(cls) -> "Sizes":
        """Tiny sizes on a CPU; ``aot_eager`` traces and compiles like inductor without generating kernels."""
        return cls(overrides=tuple(TINY), seq_len=32, micro_batches=(2,), warmup=1, steps=1, compile_backend="aot_eager",
                   sdpa_batch=2, sdpa_iters=1, precision_micro=2, precision_steps=2, own_seq_len=False, max_accum=2,
                   warm_cases=1)


@dataclass
class Context:
    """What a part needs: device, sizes, inputs, its deadline and where to leave partial results."""

    device: torch.device
    sizes: Sizes
    deadline: float
    """``time.monotonic()`` by which the part must have finished."""
    out_dir: Path
    config: str
    """The 135M run config measured by the throughput, attention and precision parts."""
    fast_config: str
    gpu_tests: list[str]
    partial: Callable[[dict], None] = field(default=lambda result: None)
    revision: str | None = None
    """The code revision the caller names (a copied checkout has no .git); None: git's, where there is one."""

    def left(self) -> float:
        """Seconds until the deadline."""
        return self.deadline - time.monotonic()


def gpu_test_files() -> list[str]:
    """The test files (relative to the repository) that hold tests marked ``gpu``: what ``pytest -m gpu`` needs to
    collect, and no module whose optional imports (lm_eval, datasets) a bare GPU machine lacks."""
    return sorted(str(path.relative_to(REPO)) for path in (REPO / "tests").rglob("test_*.py")
                  if "pytest.mark.gpu" in path.read_text(errors="replace"))


def first_line(err: BaseException) -> str:
    """The first line of an error's message, cut to 300 characters."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:300]


def bench_config(ctx: Context, path: str, seq_len: int | None):
    """``path``'s model and train sections with the sizes' overrides, at ``seq_len`` (None: the config's own)."""
    return train_throughput.load_bench_config(path, seq_len, list(ctx.sizes.overrides))


# ---------------------------------------------------------------------------------------------
# Device and versions
# ---------------------------------------------------------------------------------------------

def _driver_version() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout.strip() else None


def environment(ctx: Context) -> dict:
    """Device, driver, CUDA / cuDNN / torch / triton / transformers versions, the code revision."""
    from edulm.train.provenance import code_revision, versions
    from edulm.train.throughput import device_info, peak_bf16_flops

    info = device_info(ctx.device)
    peak = peak_bf16_flops(info["name"])
    result: dict[str, Any] = {
        **versions(), "platform": platform.platform(), "code_revision": ctx.revision or code_revision() or "-",
        "cuda_runtime": torch.version.cuda, "device": info,
        "peak_bf16_tflops": peak / 1e12 if peak else None,
    }
    try:
        import triton

        result["triton"] = triton.__version__
    except ImportError:
        result["triton"] = None
    if ctx.device.type == "cuda":
        props = torch.cuda.get_device_properties(ctx.device)
        result.update(driver=_driver_version(), cudnn=torch.backends.cudnn.version(),
                      capability=".".join(map(str, torch.cuda.get_device_capability(ctx.device))),
                      multiprocessors=props.multi_processor_count, bf16_supported=torch.cuda.is_bf16_supported())
    else:
        result["skipped"] = "no CUDA device: driver, cuDNN and compute capability not read"
    return result


# ---------------------------------------------------------------------------------------------
# Attention kernels
# ---------------------------------------------------------------------------------------------

def sdpa_backends(ctx: Context) -> dict:
    """Which SDPA kernels run edulm's attention at the 135M shape (bf16 autocast, causal, grouped K/V heads read
    natively as edulm does on CUDA), and their forward + backward time; a kernel that refuses is also tried with the
    K/V heads repeated, to say whether grouping was the reason."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from edulm.model.attention import Attention
    from edulm.model.rope import RotaryEmbedding

    m, s, device = bench_config(ctx, ctx.config, ctx.sizes.seq_len).model, ctx.sizes, ctx.device
    attention = Attention(m.d_model, m.n_heads, m.n_kv_heads).to(device)
    cos, sin = RotaryEmbedding(m.head_dim, s.seq_len, m.rope_theta).to(device)(0, s.seq_len)
    x = torch.randn(s.sdpa_batch, s.seq_len, m.d_model, device=device, requires_grad=True)
    shape = (f"batch {s.sdpa_batch} x {s.seq_len} tokens, {m.n_heads} query / {m.n_kv_heads} K/V heads of {m.head_dim}, "
             "bf16 autocast, causal")
    result: dict[str, Any] = {"shape": shape, "backends": []}
    kernels = [("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION),
               ("efficient", SDPBackend.EFFICIENT_ATTENTION), ("math", SDPBackend.MATH), ("auto", None)]

    def forward_backward() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out = attention(x, cos, sin)
        out.float().sum().backward()

    for name, backend in kernels:
        entry: dict[str, Any] = {"backend": name}
        chosen = contextlib.nullcontext() if backend is None else sdpa_kernel([backend])
        try:
            with chosen:
                forward_backward()  # warm-up (kernel selection, workspaces)
                train_throughput.sync(device)
                start = time.perf_counter()
                for _ in range(s.sdpa_iters):
                    forward_backward()
                train_throughput.sync(device)
            entry.update(usable=True, ms=(time.perf_counter() - start) * 1e3 / s.sdpa_iters)
        except Exception as err:  # noqa: BLE001 - a kernel that refuses (or fails to build) is a finding
            entry.update(usable=False, reason=first_line(err), with_repeated_kv=_usable_with_repeated_kv(backend, x, m))
        x.grad = None
        attention.zero_grad(set_to_none=True)
        result["backends"].append(entry)
        ctx.partial(result)
    if device.type != "cuda":
        result["skipped"] = "no CUDA device: flash, cuDNN and memory-efficient kernels exist on CUDA only (dry run)"
    return result


def _usable_with_repeated_kv(backend, x: torch.Tensor, m) -> bool:
    """Whether ``backend`` runs plain causal SDPA in bf16 when every query head has its own K/V head."""
    from torch.nn.attention import sdpa_kernel

    b, t = x.shape[:2]
    q = torch.randn(b, m.n_heads, t, m.head_dim, device=x.device, dtype=torch.bfloat16)
    try:
        with sdpa_kernel([backend]):
            F.scaled_dot_product_attention(q, q, q, is_causal=True)
        return True
    except Exception:  # noqa: BLE001
        return False


# ---------------------------------------------------------------------------------------------
# bf16 against float32
# ---------------------------------------------------------------------------------------------

PRECISION_TOLERANCE = 0.02
"""Largest relative difference of a step's loss between bf16 autocast and float32 called close."""


def precision(ctx: Context) -> dict:
    """A few optimizer steps of the 135M model from the same weights on the same batches, bf16 autocast against
    float32 (TF32 off): the losses step by step and their largest relative difference."""
    from edulm.train.distributed import DistEnv
    from edulm.train.optim import build_optimizer
    from edulm.train.step import train_step

    cfg, s, device = bench_config(ctx, ctx.config, ctx.sizes.seq_len), ctx.sizes, ctx.device
    env = DistEnv(rank=0, local_rank=0, world_size=1, device=device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # the reference is true float32
    g = torch.Generator().manual_seed(3)
    windows = [torch.randint(0, cfg.model.vocab_size, (s.precision_micro, s.seq_len + 1), generator=g)
               for _ in range(s.precision_steps)]
    batches = [(w[:, :-1].contiguous().to(device), w[:, 1:].contiguous().to(device)) for w in windows]
    losses: dict[str, list[float]] = {}
    for name, amp in (("fp32", None), ("bf16", torch.bfloat16)):
        model = train_throughput.build_model(cfg, "edulm", device, grad_ckpt=False)
        optimizer = build_optimizer(model, cfg.train)
        optimizer.set_lr(cfg.train.lr)
        losses[name] = [train_step(model, optimizer, iter([b]), 1, cfg.train.grad_clip, env, amp).loss for b in batches]
        del model, optimizer
        ctx.partial({"losses": losses})
    worst = max(abs(b - f) / abs(f) for f, b in zip(losses["fp32"], losses["bf16"]))
    result: dict[str, Any] = {"micro_batch": s.precision_micro, "seq_len": s.seq_len, "lr": cfg.train.lr, "losses": losses,
                              "max_rel_diff": worst, "tolerance": PRECISION_TOLERANCE}
    if not all(math.isfinite(x) for x in losses["bf16"]) or worst > PRECISION_TOLERANCE:
        result["failed"] = f"bf16 losses differ from float32 by up to {worst:.2%} (tolerance {PRECISION_TOLERANCE:.0%})"
    return result


# ---------------------------------------------------------------------------------------------
# The tests marked gpu
# ---------------------------------------------------------------------------------------------

def gpu_tests(ctx: Context) -> dict:
    """``pytest -m gpu`` on ``ctx.gpu_tests`` within the part's time: each test's outcome and time from its JUnit
    XML, or, when pytest had to be stopped before writing it, the outcomes it had printed."""
    xml = ctx.out_dir.resolve() / "pytest-gpu.xml"  # absolute: pytest runs in the repository, not here
    xml.unlink(missing_ok=True)
    # -v prints one line per test as it ends; a module that cannot be imported here (a missing optional
    # package) must not stop the device checks.
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-v", "-p", "no:cacheprovider",
               "--continue-on-collection-errors", f"--junitxml={xml}", *ctx.gpu_tests]
    result: dict[str, Any] = {"command": " ".join(["python", *command[1:]])}
    limit = max(ctx.left(), 1)
    try:
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=limit)
        result["exit_code"], printed = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as err:
        printed = (err.stdout or b"").decode(errors="replace") if isinstance(err.stdout, bytes) else (err.stdout or "")
        result["failed"] = f"pytest was stopped after {limit:.0f} s, before the end"
    result["output_tail"] = printed[-2000:]
    tests = _junit_cases(xml) if xml.is_file() else _printed_outcomes(printed)
    result["tests"] = tests
    result["counts"] = {o: sum(t["outcome"] == o for t in tests) for o in ("passed", "failed", "error", "skipped")}
    if result.get("exit_code") not in (0, None) or result["counts"]["failed"] or result["counts"]["error"]:
        result.setdefault("failed", f"{result['counts']['failed']} failed, {result['counts']['error']} errors "
                                    f"(pytest exit code {result.get('exit_code')})")
    if tests and all(t["outcome"] == "skipped" for t in tests):
        result["skipped"] = "every test marked gpu skipped itself (no CUDA device)"
    return result


_PRINTED = re.compile(r"^(\S+::\S+) (PASSED|FAILED|SKIPPED|ERROR)\b", re.MULTILINE)


def _printed_outcomes(text: str) -> list[dict]:
    """Outcomes from ``pytest -v`` lines (``path::test PASSED [ 20%]``), for a run stopped before its XML."""
    return [{"test": name, "outcome": outcome.lower(), "seconds": None, "message": ""}
            for name, outcome in _PRINTED.findall(text)]


def _junit_cases(path: Path) -> list[dict]:
    cases = []
    for case in ElementTree.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed"}.get(child.tag, child.tag)
                message = (child.get("message") or "").splitlines()[0][:300] if child.get("message") else ""
        cases.append({"test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome,
                      "seconds": float(case.get("time") or 0), "message": message})
    return cases
