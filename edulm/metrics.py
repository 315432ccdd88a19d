"""Training measurements: device peak FLOPs and MFU, memory, the metrics CSV, the summary JSON.

Everything a run reports goes through here, so the numbers in ``training_metrics.csv``,
``training_summary.json``, the benchmarks and the model card mean the same thing:

- ``tokens_per_s``: training tokens (all processes) per second of step time (forward, backward and
  optimizer; evaluation and checkpoint writing are not counted).
- ``mfu``: model FLOPs utilisation, ``tokens_per_s * flops_per_token / (peak * n_devices)``, with
  ``flops_per_token`` from :func:`edulm.model.llama.flops_per_token` (6N + attention; recomputation
  by gradient checkpointing is not counted) and ``peak`` the device's dense bf16 peak from
  :data:`PEAK_BF16_TFLOPS`. Empty when the device is not in the table, on CPU, and for fp32 runs:
  never a guessed default.
- ``memory``: peak accelerator memory allocated by tensors since the previous row, in GiB (CPU: the
  process's peak resident set size in GiB).
- ``elapsed``: seconds of wall time since the run started, summed over resumed segments.
"""

from __future__ import annotations

import csv
import importlib.metadata
import json
import math
import os
import platform
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

PEAK_BF16_TFLOPS: dict[str, float] = {
    # Dense bf16 tensor-core peaks from the vendors' data sheets. Matched as substrings of the CUDA
    # device name, in this order, so the more specific names come first.
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "H100": 989.0,  # SXM (the name reads "NVIDIA H100 80GB HBM3")
    "H200": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L20": 119.5,
}
"""Dense bf16 peak TFLOPS per device, keyed by a substring of ``torch.cuda.get_device_name()``."""

CSV_COLUMNS = [
    "step", "tokens", "loss", "lr", "grad_norm", "tokens_per_s", "mfu", "memory", "elapsed",
    "val_loss", "val_ppl", "skipped",
]
"""Columns of ``training_metrics.csv`` (``skipped``: steps skipped so far for a non-finite loss)."""

GiB = 2**30


def peak_bf16_flops(device_name: str) -> float | None:
    """Dense bf16 peak of one device in FLOP/s, or None when the device is not in the table."""
    lowered = device_name.lower()
    for key, tflops in PEAK_BF16_TFLOPS.items():
        if key.lower() in lowered:
            return tflops * 1e12
    return None


def mfu(tokens_per_s: float, flops_per_token: float, peak_flops: float | None, n_devices: int = 1) -> float | None:
    """Model FLOPs utilisation in [0, 1], or None when the peak is unknown."""
    if peak_flops is None or peak_flops <= 0:
        return None
    return tokens_per_s * flops_per_token / (peak_flops * n_devices)


def device_info(device: torch.device) -> dict[str, Any]:
    """Name and total memory (GiB) of the training device."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return {"type": "cuda", "name": props.name, "total_memory_gb": round(props.total_memory / GiB, 2)}
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else 0
    return {"type": device.type, "name": name, "cores": os.cpu_count(), "total_memory_gb": round(total / GiB, 2)}


def take_peak_memory_gb(device: torch.device) -> float:
    """Peak memory since the last call, in GiB (CUDA: tensor allocations, then the peak is reset; CPU: peak RSS)."""
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        return peak / GiB
    # ru_maxrss is in KiB on Linux (bytes on macOS).
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (GiB if sys.platform == "darwin" else 2**20)


class MetricsCSV:
    """``training_metrics.csv``: one row per logged step, appended and flushed as it is written.

    On resume the file is cut back to the rows at or before the checkpoint's step, so the rows a
    crashed run wrote after its last checkpoint are not repeated when those steps run again.
    """

    def __init__(self, path: str | Path, resume_step: int | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = self._rows_up_to(resume_step) if resume_step is not None else []
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            writer.writerows(kept)
        tmp.replace(self.path)
        self._file = self.path.open("a", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=CSV_COLUMNS)

    def _rows_up_to(self, step: int) -> list[dict[str, str]]:
        if not self.path.is_file():
            return []
        kept = []
        with self.path.open(newline="") as f:
            for row in csv.DictReader(f):
                try:
                    if int(row["step"]) <= step and None not in row.values():
                        kept.append({k: row.get(k, "") for k in CSV_COLUMNS})
                except (KeyError, TypeError, ValueError):
                    continue  # a line cut short by a crash
        return kept

    def write(self, row: dict[str, Any]) -> None:
        """Append one row (missing columns and None are left empty; floats keep full precision)."""
        self._writer.writerow({k: _cell(row.get(k)) for k in CSV_COLUMNS})
        self._file.flush()

    def close(self) -> None:
        """Flush and close the file."""
        if not self._file.closed:
            self._file.close()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)  # shortest text that reads back to the same float
    return str(value)


def read_metrics(path: str | Path) -> list[dict[str, float | None]]:
    """Rows of a metrics CSV as numbers (empty cells become None)."""
    rows = []
    with Path(path).open(newline="") as f:
        for row in csv.DictReader(f):
            rows.append({k: (float(v) if v not in ("", None) else None) for k, v in row.items()})
    return rows


def perplexity(loss: float) -> float:
    """exp(loss), or inf when it overflows."""
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf


def versions() -> dict[str, str | None]:
    """Versions of python, torch, transformers and edulm (transformers read from its metadata, not imported)."""

    def dist_version(name: str) -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    from edulm import __version__

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": dist_version("transformers"),
        "edulm": __version__,
    }


def code_revision() -> str | None:
    """Git commit of the edulm source (with ``-dirty`` when it has local changes), or None outside git."""
    root = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10)
        return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def cost_estimate(wall_time_s: float, n_gpus: int, gpu_hourly_rate: float | None) -> dict[str, Any]:
    """GPU-hours (wall time x GPUs; 0 on CPU) and, given a price per GPU-hour, the cost with its formula."""
    gpu_hours = wall_time_s / 3600 * n_gpus
    out: dict[str, Any] = {"gpu_hours": round(gpu_hours, 6), "gpu_hourly_rate": gpu_hourly_rate, "cost": None}
    if gpu_hourly_rate is not None:
        out["cost"] = round(gpu_hours * gpu_hourly_rate, 4)
        out["formula"] = (
            f"cost = wall_time_s / 3600 x n_gpus x gpu_hourly_rate = {wall_time_s:.1f} / 3600 x {n_gpus} x "
            f"{gpu_hourly_rate} = {out['cost']}"
        )
    return out


def write_json(path: str | Path, data: dict[str, Any]) -> None:
    """Write JSON atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)
