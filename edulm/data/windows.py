"""Packed windows over memory-mapped shards, batch buffers, and the background checksum pass.

A split's shards, in order, are one long token stream. Window ``w`` is the ``seq_len + 1`` tokens
starting at ``w * seq_len``: inputs are its first ``seq_len`` tokens and targets the last ``seq_len``,
so consecutive windows share one token and every token is a target exactly once per pass. Windows
cross document and shard boundaries (the end-of-document token separates documents).
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import torch

from edulm.data.shards import verify_shard
from edulm.base.errors import UsageError


class TokenStream:
    """The windows of one token stream made of several arrays (shards)."""

    def __init__(self, arrays: list[np.ndarray], seq_len: int):
        self.arrays = [a for a in arrays if len(a)]
        self.offsets = np.cumsum([0] + [len(a) for a in self.arrays])
        self.total_tokens = int(self.offsets[-1])
        self.seq_len = seq_len
        self.n_windows = max(0, (self.total_tokens - 1) // seq_len)
        """Complete windows in the stream."""

    def copy_window(self, window: int, x: np.ndarray, y: np.ndarray) -> None:
        """Write window ``window``'s inputs into ``x`` and its targets into ``y``."""
        start = window * self.seq_len
        shard = int(np.searchsorted(self.offsets, start, side="right")) - 1
        local = start - int(self.offsets[shard])
        array = self.arrays[shard]
        need = self.seq_len + 1
        if local + need <= len(array):
            chunk = array[local : local + need]
        else:  # the window runs into the next shard(s)
            pieces = []
            while need:
                piece = self.arrays[shard][local : local + need]
                pieces.append(piece)
                need -= len(piece)
                shard, local = shard + 1, 0
            chunk = np.concatenate(pieces)
        x[:] = chunk[:-1]
        y[:] = chunk[1:]


def batch_buffers(batch_size: int, seq_len: int, pin_memory: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Fresh int64 ``(inputs, targets)`` tensors, in pinned memory when asked (for fast, async copies to the GPU).

    Fresh on every batch: the consumer may still be copying the previous one asynchronously. Torch's
    pinned-memory allocator caches freed blocks, so this costs no new pinning after the first batches.
    """
    x = torch.empty((batch_size, seq_len), dtype=torch.int64, pin_memory=pin_memory)
    y = torch.empty((batch_size, seq_len), dtype=torch.int64, pin_memory=pin_memory)
    return x, y


class ChecksumPass:
    """Reads every given shard in a background thread and checks its CRC-32.

    A large dataset thus costs no start-up time; :meth:`raise_damage` (called for each batch) stops
    training with the damaged file's name once the pass has found one.
    """

    def __init__(self, checksums: list[tuple[Path, int]]):
        self.damage: UsageError | None = None
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(checksums,), name="edulm-shard-check", daemon=True)
        self._thread.start()

    def _run(self, checksums: list[tuple[Path, int]]) -> None:
        for path, crc in checksums:
            if self._closed.is_set():
                return
            try:
                verify_shard(path, crc)
            except UsageError as err:
                self.damage = err
                return

    def raise_damage(self) -> None:
        """Raise the damage found so far, if any."""
        if self.damage is not None:
            raise self.damage

    def wait(self) -> None:
        """Wait for the whole pass; raise UsageError naming a damaged shard."""
        self._thread.join()
        self.raise_damage()

    def close(self) -> None:
        """Stop the pass at the next shard and wait for the thread."""
        self._closed.set()
        self._thread.join()
