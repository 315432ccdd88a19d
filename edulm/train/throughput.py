"""How fast and how full a device runs: its bf16 peak, model FLOPs utilisation, memory readings.

- ``tokens_per_s``: training tokens (all processes) per second of step time (forward, backward and
  optimizer; evaluation and checkpoint writing are not counted).
- ``mfu``: model FLOPs utilisation, ``tokens_per_s * flops_per_token / (peak * n_devices)``, with
  ``flops_per_token`` from :func:`edulm.model.llama.flops_per_token` (6N + attention; recomputation
  by gradient checkpointing is not counted) and ``peak`` the device's dense bf16 peak from
  :data:`PEAK_BF16_TFLOPS`. Empty when the device is not in the table, on CPU, and for fp32 runs:
  never a guessed default.
- ``memory``: peak accelerator memory allocated by tensors since the previous reading, in GiB (CPU:
  the process's peak resident set size in GiB).

The trainer's metrics rows and summary, the benchmarks and the model card all take these numbers
from here, so they mean the same thing everywhere.
"""

from __future__ import annotations

import os
import platform
import resource
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
