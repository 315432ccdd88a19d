"""Naming a device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` (or any name torch reads) -> a checked ``torch.device``.

One function serves the trainer (``train.device``, one device per ``torchrun`` process) and the
commands that load a model for inference (``--device``).
"""

from __future__ import annotations

import torch

from edulm.base.errors import UsageError


def resolve_device(name: str | torch.device, local_rank: int = 0, setting: str = "--device") -> torch.device:
    """``auto`` -> ``cuda:LOCAL_RANK`` when CUDA is available, else ``cpu``; otherwise the named device.

    A bare ``cuda`` means this process's GPU, ``cuda:LOCAL_RANK``. A name torch does not know, or a CUDA
    device on a machine without CUDA, is a :class:`UsageError` naming ``setting`` (the option or config
    key the name came from).
    """
    if str(name) == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise UsageError(f"{setting}: {str(name)!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            use_cpu = f"{setting} cpu" if setting.startswith("-") else f"{setting}=cpu"
            raise UsageError(f"{setting} is {str(name)!r} but CUDA is not available here; use {use_cpu}")
        if device.index is None:
            device = torch.device(f"cuda:{local_rank}")
    return device
