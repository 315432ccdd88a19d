"""Training batches from a mixture's prepared shards: windows drawn by weight, rank-sharded, exactly resumable.

See :mod:`edulm.data.mixture` for the rule. The loader's state is the global draw number of the next
batch and how many draws each source has had before it: plain integers, the same on every rank of a
step, so a resumed run (with any number of processes) continues at exactly the next window.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from edulm.data.mixture import DrawSequence, window_permutation
from edulm.data.windows import ChecksumPass, TokenStream, batch_buffers
from edulm.base.errors import UsageError


class MixtureLoader:
    """``(inputs, targets)`` batches whose windows come from several token streams, chosen by weight."""

    def __init__(
        self,
        streams: Sequence[list[np.ndarray]],
        weights: Sequence[float],
        seq_len: int,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        pin_memory: bool | None = None,
        names: Sequence[str] | None = None,
        checksums: list[tuple[Path, int]] | None = None,
    ):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        if len(streams) != len(weights) or not streams:
            raise ValueError("one weight per source, and at least one source")
        self.sources = [TokenStream(arrays, seq_len) for arrays in streams]
        names = list(names or [f"source {i}" for i in range(len(streams))])
        for name, source in zip(names, self.sources):
            if source.n_windows == 0:
                raise UsageError(
                    f"{name}: {source.total_tokens:,} training tokens are too few for one window of {seq_len + 1} tokens; "
                    "prepare more data for it or lower train.seq_len"
                )
        self.weights = [float(w) for w in weights]
        self.seq_len, self.batch_size, self.seed = seq_len, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.draws = DrawSequence(seed, self.weights)
        self.draw = 0
        """Global number of the next batch's first draw."""
        self.counts = [0] * len(self.sources)
        """Draws each source has had before :attr:`draw`."""
        self._perms: dict[int, tuple[int, np.ndarray]] = {}
        self._checks = ChecksumPass(checksums or [])

    def window_of(self, source: int, j: int) -> int:
        """The window of ``source`` that its ``j``-th draw takes: one pass over all of them per epoch, shuffled."""
        n = self.sources[source].n_windows
        epoch, position = divmod(j, n)
        cached = self._perms.get(source)
        if cached is None or cached[0] != epoch:
            cached = (epoch, window_permutation(self.seed, source, epoch, n))
            self._perms[source] = cached
        return int(cached[1][position])

    def __iter__(self) -> "MixtureLoader":
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        self._checks.raise_damage()
        x, y = batch_buffers(self.batch_size, self.seq_len, self.pin_memory)
        xs, ys = x.numpy(), y.numpy()
        step = self.batch_size * self.world_size  # every rank takes one row per world_size draws
        row = 0
        for t, source in enumerate(self.draws.sources(self.draw, step).tolist()):
            j = self.counts[source]
            self.counts[source] = j + 1
            if t % self.world_size == self.rank:
                self.sources[source].copy_window(self.window_of(source, j), xs[row], ys[row])
                row += 1
        self.draw += step
        return x, y

    def state_dict(self) -> dict[str, Any]:
        """The next batch's global draw and each source's draws so far, plus what they refer to."""
        return {"kind": "mixture", "draw": self.draw, "counts": list(self.counts), "seed": self.seed,
                "seq_len": self.seq_len, "weights": list(self.weights),
                "tokens": [s.total_tokens for s in self.sources]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict` of any rank and any number of processes."""
        if state.get("kind") != "mixture":
            raise UsageError("the checkpoint's data position is not from a mixture of sources; "
                             "resume with the data settings the run started with")
        mine = self.state_dict()
        for key in ("seed", "seq_len", "weights", "tokens"):
            if state.get(key) != mine[key]:
                raise UsageError(
                    f"the checkpoint's data position does not fit this mixture ({key}: checkpoint {state.get(key)}, "
                    f"now {mine[key]}); resume with the data and settings the run started with"
                )
        self.draw, self.counts = int(state["draw"]), [int(c) for c in state["counts"]]

    def close(self) -> None:
        """Stop the background checksum pass."""
        self._checks.close()
