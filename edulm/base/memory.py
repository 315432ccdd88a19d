"""Deterministic accounting of tensor memory, on any device (CPU included).

``torch.cuda.max_memory_allocated`` only exists on CUDA; these helpers count the bytes of tensor
storages themselves, so the same measurement works on a CPU and gives the same answer every run:

- :class:`TensorMemoryTracker` follows every storage created inside its ``with`` block (through a
  ``TorchDispatchMode``) and frees it from the count when the storage dies, recording the peak and
  the single largest storage. Storages that existed before the block (parameters, inputs) are not
  counted: the figures are what the block itself allocated on top.
- :func:`saved_for_backward_bytes` counts the distinct storages autograd keeps for the backward pass
  (activation memory), leaving out the ones that existed before (parameters).
"""

from __future__ import annotations

import weakref
from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class TensorMemoryTracker(TorchDispatchMode):
    """Peak and largest bytes of the tensor storages created while active (eager mode only).

    ``current_bytes`` is what is still alive, ``peak_bytes`` the most alive at once and
    ``largest_bytes`` the biggest single storage. Tensors made by compiled graphs are not seen:
    measure an uncompiled model.
    """

    def __init__(self) -> None:
        super().__init__()
        self._live: dict[tuple[str, int], int] = {}
        self.current_bytes = 0
        self.peak_bytes = 0
        self.largest_bytes = 0

    def _release(self, key: tuple[str, int]) -> None:
        self.current_bytes -= self._live.pop(key, 0)

    def _track(self, tensor: torch.Tensor) -> None:
        if tensor.device.type == "meta":
            return
        storage = tensor.untyped_storage()
        size = storage.nbytes()
        key = (str(tensor.device), storage.data_ptr())
        if size == 0 or key in self._live:
            return  # a view of a storage already counted
        self._live[key] = size
        self.current_bytes += size
        self.peak_bytes = max(self.peak_bytes, self.current_bytes)
        self.largest_bytes = max(self.largest_bytes, size)
        # The Python storage object lives exactly as long as the C++ storage (torch keeps the
        # two together), so its finalizer marks the moment the memory is returned.
        weakref.finalize(storage, self._release, key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for item in tree_flatten(out)[0]:
            if isinstance(item, torch.Tensor):
                self._track(item)
        return out


def saved_for_backward_bytes(fn: Callable[[], torch.Tensor], exclude: list[torch.Tensor] = ()) -> tuple[torch.Tensor, int]:
    """Run ``fn`` (a forward pass) and count the bytes of distinct storages saved for its backward.

    Storages of the tensors in ``exclude`` (typically the parameters) are not counted. Returns the
    output of ``fn`` (its graph still attached) and the byte count.
    """
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in skip:
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(seen.values())


@contextmanager
def track_tensor_memory() -> Iterator[TensorMemoryTracker]:
    """``with track_tensor_memory() as mem: ...`` then read ``mem.peak_bytes`` / ``mem.largest_bytes``."""
    tracker = TensorMemoryTracker()
    with tracker:
        yield tracker
