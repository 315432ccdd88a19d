"""The markdown report of ``bench/gpu_check.py``: one section per part, built from the JSON it writes.

What each figure means is said once, in ``docs/performance.md`` ("The GPU check").
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

from train_throughput import Case, markdown as throughput_table  # noqa: E402

TITLES = {
    "environment": "Device and versions",
    "sdpa": "Attention kernels (SDPA) at the 135M shape",
    "compile_warmup": "Compilation (in the background, for the throughput part's cache)",
    "throughput": "Training throughput: edulm against transformers",
    "precision": "bf16 autocast against float32",
    "gpu_tests": "Tests marked gpu",
    "fast_config": "The fast config's own settings",
}
"""Section title of each part."""


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join("-" if v is None else str(v) for v in row) + " |" for row in rows]


def _num(value: Any, spec: str) -> str:
    return "-" if not isinstance(value, (int, float)) else format(value, spec)


def _environment(r: dict) -> list[str]:
    device = r.get("device") or {}
    keys = [("device", device.get("name")), ("memory GiB", device.get("total_memory_gb")),
            ("compute capability", r.get("capability")), ("multiprocessors", r.get("multiprocessors")),
            ("driver", r.get("driver")), ("CUDA runtime", r.get("cuda_runtime")), ("cuDNN", r.get("cudnn")),
            ("torch", r.get("torch")), ("triton", r.get("triton")), ("transformers", r.get("transformers")),
            ("python", r.get("python")), ("edulm", r.get("edulm")), ("code revision", r.get("code_revision")),
            ("dense bf16 peak TFLOPS (MFU's denominator)", r.get("peak_bf16_tflops") or "unknown: MFU not computed")]
    return _table(["", ""], [[k, v] for k, v in keys])


def _sdpa(r: dict) -> list[str]:
    rows = []
    for b in r.get("backends", []):
        if b.get("usable"):
            note = ""
        else:
            repeated = "runs" if b.get("with_repeated_kv") else "does not run either"
            note = f"{b.get('reason', '')} (with K/V heads repeated it {repeated})"
        rows.append([b["backend"], "yes" if b.get("usable") else "no", _num(b.get("ms"), ".2f"), note])
    return [f"Shape: {r.get('shape', '?')}.", ""] + _table(["kernel", "usable", "fwd+bwd ms", "note"], rows)


def _cases(r: dict) -> list[str]:
    fields = set(Case.__dataclass_fields__)
    cases = [Case(**{k: v for k, v in c.items() if k in fields}) for c in r.get("cases", [])]
    lines = []
    if cases:
        header = {k: r[k] for k in ("config", "seq_len", "batch", "optimizer", "precision", "grad_ckpt", "compile",
                                     "warmup", "steps") if r.get(k) is not None}
        lines += throughput_table(cases, header).splitlines()
    for s in r.get("skipped_cases", []):
        lines.append(f"- not run: micro-batch {s['micro_batch']}, checkpointing {'on' if s['grad_ckpt'] else 'off'} "
                     f"({s['reason']}); measure it with `python bench/train_throughput.py --config {r.get('config')} "
                     f"--micro-batches {s['micro_batch']} --seq-len {r.get('seq_len')} --grad-ckpt "
                     f"{'on' if s['grad_ckpt'] else 'off'} --steps 10 --warmup 3`")
    return lines or ["No case finished."]


def _precision(r: dict) -> list[str]:
    losses = r.get("losses") or {}
    rows = [[i + 1, _num(f, ".5f"), _num(b, ".5f"), _num(abs(b - f) / abs(f), ".3%")]
            for i, (f, b) in enumerate(zip(losses.get("fp32", []), losses.get("bf16", [])))]
    head = (f"{r.get('micro_batch')} x {r.get('seq_len')} tokens per step, learning rate {r.get('lr')}; largest relative "
            f"difference {_num(r.get('max_rel_diff'), '.3%')} (called close under {_num(r.get('tolerance'), '.0%')}).")
    return [head, ""] + _table(["step", "float32 loss", "bf16 loss", "relative difference"], rows)


def _gpu_tests(r: dict) -> list[str]:
    counts = r.get("counts") or {}
    lines = [f"`{r.get('command', 'pytest -m gpu')}`: " + ", ".join(f"{v} {k}" for k, v in counts.items() if v), ""]
    rows = [[t["test"], t["outcome"], _num(t["seconds"], ".1f"), t.get("message") or ""] for t in r.get("tests", [])]
    return lines + (_table(["test", "outcome", "seconds", "message"], rows) if rows else ["No test report was written."])


def _warmup(r: dict) -> list[str]:
    rows = [[c["impl"], c["micro_batch"], "on" if c["grad_ckpt"] else "off", _num(c["seconds"], ".1f"), c.get("error") or ""]
            for c in r.get("compiled", [])]
    head = (f"One optimizer step per case with `torch.compile` ({r.get('compile')}): compilation and the step itself, "
            "while other parts ran beside it.")
    return [head, ""] + _table(["impl", "micro-batch", "grad ckpt", "seconds", "error"], rows)


SECTIONS = {"environment": _environment, "sdpa": _sdpa, "compile_warmup": _warmup, "throughput": _cases,
            "precision": _precision, "gpu_tests": _gpu_tests, "fast_config": _cases}
"""Each part's section body from its result."""


def markdown_report(report: dict) -> str:
    """The whole report: what ran, each part's status and time, then one section per part."""
    mode = ("DRY RUN on the CPU at tiny sizes: these figures check the script, they measure nothing"
            if report["dry_run"] else "measured on the GPU")
    lines = ["# edulm GPU check", "",
             f"- started {report['started_at']}, {report['seconds']} s of the {report['budget_s']:.0f} s budget; {mode}",
             f"- command: `{report['command']}`",
             *([f"- revision: {report['revision']}"] if report.get("revision") else []),
             *([f"- **{report['stopped']}**"] if report.get("stopped") else []),
             *([f"- parts not reached: {', '.join(report['not_reached'])}"] if report.get("not_reached") else []), "",
             *_table(["part", "status", "seconds (limit)", "note"],
                     [[name, rec["status"], f"{rec['seconds']} ({_num(rec.get('limit_s'), '.0f')})", rec.get("reason") or ""]
                      for name, rec in report["parts"].items()])]
    for name, rec in report["parts"].items():
        lines += ["", f"## {TITLES[name]}", ""]
        result = rec.get("result")
        if not result:
            lines.append(f"Nothing measured: {rec.get('reason') or rec['status']}.")
            continue
        if result.get("skipped") and name != "gpu_tests" and not result.get("cases") and not result.get("backends"):
            lines += [f"Skipped: {result['skipped']}.", ""]
            if name != "environment":
                continue
        try:
            lines += SECTIONS[name](result)
        except (KeyError, TypeError, ValueError) as err:  # a partial result: say so rather than fail the report
            lines.append(f"(incomplete result: {type(err).__name__}: {err})")
    return "\n".join(lines) + "\n"
