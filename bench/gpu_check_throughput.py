"""The throughput parts of ``bench/gpu_check.py``: the compile warm-up, edulm against transformers, the fast config.

All three drive ``bench/train_throughput.py``'s own code (``Runner``, ``run_cases``), so the check and
the benchmark measure the same step; see :mod:`gpu_check_parts` for what a part is.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import torch

from gpu_check_parts import Context, bench_config, train_throughput

def _throughput_args(ctx: Context, grad_accum: int = 1, warmup: int | None = None, steps: int | None = None,
                     compile: bool = True):
    """The step settings ``train_throughput.Runner`` reads (config, micro-batch and device are passed to it directly)."""
    s = ctx.sizes
    argv = ["--grad-accum", str(grad_accum), "--warmup", str(s.warmup if warmup is None else warmup),
            "--steps", str(s.steps if steps is None else steps), "--compile-backend", s.compile_backend]
    return train_throughput.parse_args(argv + ([] if compile else ["--no-compile"]))


WARMUP_FILE = "compile_warmup.json"
"""The compile warm-up's record in the parts' folder (``ctx.out_dir``), read by the throughput part."""


def warmed_cases(ctx: Context) -> dict[tuple[int, bool], float]:
    """``{(micro-batch, checkpointing): seconds its compilations took}`` for the cases the compile warm-up finished
    (so their graphs are in inductor's cache); {} when it left no record (it did not run, or ran in-process)."""
    import json

    try:
        record = json.loads((ctx.out_dir / WARMUP_FILE).read_text())
        compiled = (record.get("result") or {}).get("compiled") or []
    except (OSError, ValueError, AttributeError):
        return {}
    warmed: dict[tuple[int, bool], float] = {}
    for entry in compiled:
        if isinstance(entry, dict) and not entry.get("error"):
            key = (entry["micro_batch"], entry["grad_ckpt"])
            warmed[key] = warmed.get(key, 0.0) + float(entry.get("seconds") or 0.0)
    return warmed


def _run_cases(ctx: Context, label_impls: list[tuple[str, str]], cfg, args, plan: list[tuple[int, bool]],
               result: dict) -> None:
    """Run ``plan``'s (micro-batch, checkpointing) cases in order while time allows; cases into ``result``.

    A case starts only when the time left exceeds 1.2 x its projected length: the longest case so far, and for
    a case the warm-up did not compile (a cold one, when the warm-up's record says which were warmed) that plus
    the longest compilation the warm-up measured, or the longest cold case so far. A case projected as warm when
    it is cold would start and be stopped by the part's limit."""
    variants = [(label, impl, cfg) for label, impl in label_impls]
    warmed = warmed_cases(ctx)
    compile_s = max(warmed.values(), default=0.0)
    longest = longest_cold = 0.0
    for micro, ckpt in plan:
        cold = bool(warmed) and (micro, ckpt) not in warmed
        projected = max(longest + compile_s, longest_cold) if cold else longest
        if longest and ctx.left() < 1.2 * projected:
            why = (f"a case the warm-up did not compile is projected at {projected:.0f} s" if cold
                   else f"the longest case so far took {longest:.0f} s")
            result["skipped_cases"].append({"micro_batch": micro, "grad_ckpt": ckpt, "cold": cold,
                                            "reason": f"time budget: {max(ctx.left(), 0):.0f} s left, {why}"})
            continue
        start = time.monotonic()
        cases = train_throughput.run_cases(variants, args, micro, ckpt, ctx.device)
        seconds = time.monotonic() - start
        longest = max(longest, seconds)
        if cold:
            longest_cold = max(longest_cold, seconds)
        result["cases"] += [{**dataclasses.asdict(c), "case_seconds": round(seconds, 1), "cold": cold} for c in cases]
        ctx.partial(result)


IMPLEMENTATIONS = [("edulm", "edulm"), ("transformers", "transformers")]
"""(label, implementation) of the throughput cases."""


def _throughput_plan(ctx: Context) -> list[tuple[int, bool]]:
    """(micro-batch, checkpointing) of the throughput cases, most wanted first: without checkpointing (what an
    80 GB card runs), then with it."""
    return [(micro, ckpt) for ckpt in (False, True) for micro in ctx.sizes.micro_batches]


def compile_warmup(ctx: Context) -> dict:
    """Compile the throughput cases (one optimizer step each, in the throughput part's order) so their graphs sit
    in inductor's on-disk caches when the throughput part times them.

    ``bench/gpu_check.py`` runs it in the background while parts that time nothing run (the precision check,
    the tests), then stops it before the throughput part starts: every case compiled here then costs that
    part a cache lookup instead of a compilation. The seconds per compilation are a figure of their own.
    """
    cfg = bench_config(ctx, ctx.config, ctx.sizes.seq_len)
    args = _throughput_args(ctx)
    result: dict[str, Any] = {"compile": args.compile_backend, "compiled": []}
    for micro, ckpt in _throughput_plan(ctx)[: ctx.sizes.warm_cases]:
        for label, impl in IMPLEMENTATIONS:
            if ctx.left() <= 0:
                return result
            torch._dynamo.reset()
            start = time.monotonic()
            entry: dict[str, Any] = {"impl": label, "micro_batch": micro, "grad_ckpt": ckpt}
            try:
                runner = train_throughput.Runner(label, impl, cfg, args, micro, ckpt, ctx.device)
                runner.step()  # the first step compiles (the runner's code, so the cache keys are the timed ones')
                train_throughput.sync(ctx.device)
                del runner
            except Exception as err:  # noqa: BLE001 - recorded; the next case still compiles
                entry["error"] = train_throughput.case_error(err)
            if ctx.device.type == "cuda":
                torch.cuda.empty_cache()
            result["compiled"].append({**entry, "seconds": round(time.monotonic() - start, 1)})
            ctx.partial(result)
    return result


def throughput(ctx: Context) -> dict:
    """edulm and transformers, same weights, batches, bf16, compile and fused AdamW, at each micro-batch of the
    sizes with and without checkpointing (:func:`_throughput_plan`)."""
    cfg = bench_config(ctx, ctx.config, ctx.sizes.seq_len)
    args = _throughput_args(ctx)
    plan = _throughput_plan(ctx)
    result: dict[str, Any] = {"config": ctx.config, "seq_len": cfg.train.seq_len, "compile": args.compile_backend,
                              "warmup": args.warmup, "steps": args.steps, "cases": [], "skipped_cases": []}
    _run_cases(ctx, IMPLEMENTATIONS, cfg, args, plan, result)
    if any(c["error"] for c in result["cases"]):
        result["failed"] = "; ".join(f"{c['impl']} micro {c['micro_batch']}: {c['error']}" for c in result["cases"] if c["error"])
    return result


def fast_config(ctx: Context) -> dict:
    """The throughput of ``--fast-config``'s own settings (optimizer, precision, checkpointing, compile, micro-batch
    and accumulation), built with the trainer's builders; skipped when the file does not exist."""
    from edulm.config import load_config
    from edulm.train.autobatch import resolve_batch_shape

    path = Path(ctx.fast_config)
    if not path.is_file():
        return {"skipped": f"{ctx.fast_config} does not exist (yet)"}
    seq_override = [] if ctx.sizes.own_seq_len else [f"train.seq_len={ctx.sizes.seq_len}"]
    full = load_config(path, [*ctx.sizes.overrides, *seq_override])  # validated as the trainer would
    cfg = bench_config(ctx, str(path), None if ctx.sizes.own_seq_len else ctx.sizes.seq_len)
    model = train_throughput.build_model(cfg, "edulm", ctx.device, cfg.train.grad_checkpointing)
    shape = resolve_batch_shape(full, model, ctx.device)  # probes the device for micro_batch_size: auto
    del model
    if ctx.device.type == "cuda":
        torch.cuda.empty_cache()
    accum = min(shape.grad_accum_steps, ctx.sizes.max_accum or shape.grad_accum_steps)
    args = _throughput_args(ctx, accum, warmup=1,
                            steps=max(1, ctx.sizes.steps // 3), compile=cfg.train.compile)
    timed = "" if accum == shape.grad_accum_steps else f" (timed with {accum} micro-batches per step)"
    result: dict[str, Any] = {"config": str(path), "seq_len": cfg.train.seq_len, "batch": shape.describe() + timed, "optimizer": cfg.train.optimizer,
                              "precision": cfg.train.precision, "grad_ckpt": cfg.train.grad_checkpointing,
                              "compile": args.compile_backend if cfg.train.compile else "off", "warmup": args.warmup,
                              "steps": args.steps, "cases": [], "skipped_cases": []}
    ctx.partial(result)  # the probed batch is a figure of its own, kept if the timed steps run out of time
    _run_cases(ctx, [(path.stem, "edulm")], cfg, args, [(shape.micro_batch_size, cfg.train.grad_checkpointing)], result)
    if any(c["error"] for c in result["cases"]):
        result["failed"] = result["cases"][0]["error"]
    return result
