"""Where a run's numbers came from: package versions, the code's git revision, the cost in GPU-hours.

Recorded in ``training_summary.json`` so that a result can be traced to the code and environment
that produced it.
"""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
from pathlib import Path
from typing import Any


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, str | None]:
    """Versions of python, torch, transformers and edulm (transformers read from its metadata, not imported)."""
    import torch

    from edulm import __version__

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": _dist_version("transformers"),
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
