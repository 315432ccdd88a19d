"""Training and validation batches from prepared shards (or, with ``data.streaming``, from the source).

The training split is one long token stream (the shards in order). Window ``w`` is the ``seq_len + 1``
tokens starting at ``w * seq_len``: inputs are its first ``seq_len`` tokens and targets the last
``seq_len``, so consecutive windows share one token and every token is a target exactly once per epoch.
Windows cross document boundaries (the end-of-document token separates documents).

Each epoch visits the windows in a permutation drawn from ``(run.seed, epoch)``. Rank ``r`` of ``n``
takes positions ``r, r + n, r + 2n, ...`` of that permutation (the last ``windows mod n`` positions are
left out so every rank has the same number of steps), so ranks are disjoint and together cover the
epoch. The loader's state is ``(epoch, position)``; a resumed run continues at the exact next window.

Opening checks each shard's header, size and tokenizer fingerprint against ``manifest.json``; the
CRC-32 of every shard's tokens is checked by a background thread while training starts.
"""

from __future__ import annotations

import functools
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edulm.config import Config
from edulm.data.shards import MANIFEST, open_split, read_manifest, verify_shard
from edulm.errors import UsageError


@functools.lru_cache(maxsize=4)
def _fingerprint_of(tokenizer_name: str) -> str:
    from edulm.tokenizer import load_tokenizer, tokenizer_fingerprint

    return tokenizer_fingerprint(load_tokenizer(tokenizer_name))


def _run_fingerprint(cfg: Config, manifest: dict[str, Any], fingerprint: str | None) -> str:
    """The fingerprint the shards must carry: given, else the manifest's when the tokenizer names agree.

    Loading a tokenizer can take seconds, so it is loaded only when the names differ (the same tokenizer
    can go by a hub id and by a local path, and the fingerprint decides).
    """
    if fingerprint is not None:
        return fingerprint
    recorded = manifest.get("tokenizer", {})
    if recorded.get("name") == cfg.tokenizer.name:
        return recorded.get("fingerprint")
    return _fingerprint_of(cfg.tokenizer.name)


def _micro_batch_size(cfg: Config) -> int:
    size = cfg.train.micro_batch_size
    if not isinstance(size, int):
        raise ValueError("train.micro_batch_size must be resolved to a number before building the loader")
    return size


def _pin(tensor: torch.Tensor, pin: bool) -> torch.Tensor:
    return tensor.pin_memory() if pin else tensor


class ShardLoader:
    """Shuffled, rank-sharded, resumable ``(inputs, targets)`` batches over memory-mapped shards."""

    def __init__(
        self,
        arrays: list[np.ndarray],
        seq_len: int,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        pin_memory: bool | None = None,
        where: str = "shards",
        checksums: list[tuple[Path, int]] | None = None,
    ):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        self.arrays = [a for a in arrays if len(a)]
        self.offsets = np.cumsum([0] + [len(a) for a in self.arrays])
        self.total_tokens = int(self.offsets[-1])
        self.seq_len, self.batch_size, self.seed = seq_len, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.n_windows = max(0, (self.total_tokens - 1) // seq_len)
        self.per_rank = self.n_windows // world_size
        if self.per_rank == 0:
            raise UsageError(
                f"{where}: {self.total_tokens:,} training tokens are too few for one window of {seq_len + 1} tokens "
                f"per rank ({world_size} ranks); prepare more data or lower train.seq_len"
            )
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.epoch, self.position = 0, 0
        self._order_epoch, self._order = -1, np.zeros(0, dtype=np.int64)
        # Whole-file checksums are read in the background, so a large dataset costs no start-up time;
        # a damaged shard stops training at the next batch with the file's name.
        self._damage: UsageError | None = None
        self._closed = threading.Event()
        self._verifier = threading.Thread(target=self._verify, args=(checksums or [],), name="edulm-shard-check", daemon=True)
        self._verifier.start()

    def _verify(self, checksums: list[tuple[Path, int]]) -> None:
        for path, crc in checksums:
            if self._closed.is_set():
                return
            try:
                verify_shard(path, crc)
            except UsageError as err:
                self._damage = err
                return

    def verified(self) -> None:
        """Wait for the background checksum pass; raise UsageError naming a damaged shard."""
        self._verifier.join()
        if self._damage is not None:
            raise self._damage

    def _rank_order(self) -> np.ndarray:
        """This rank's window ids for the current epoch (computed once per epoch)."""
        if self._order_epoch != self.epoch:
            perm = np.random.default_rng([self.seed % 2**63, self.epoch]).permutation(self.n_windows)
            self._order = perm[: self.per_rank * self.world_size][self.rank :: self.world_size]
            self._order_epoch = self.epoch
        return self._order

    def window_ids(self, epoch: int) -> np.ndarray:
        """The window ids this rank visits in ``epoch``, in order (for inspection and tests)."""
        saved = self.epoch
        self.epoch = epoch
        try:
            return self._rank_order().copy()
        finally:
            self.epoch = saved

    def _copy_window(self, window: int, x: np.ndarray, y: np.ndarray) -> None:
        start = window * self.seq_len
        stop = start + self.seq_len + 1
        shard = int(np.searchsorted(self.offsets, start, side="right")) - 1
        local = start - int(self.offsets[shard])
        array = self.arrays[shard]
        if local + (stop - start) <= len(array):
            chunk = array[local : local + self.seq_len + 1]
        else:  # the window runs into the next shard(s)
            pieces, need = [], stop - start
            while need:
                piece = self.arrays[shard][local : local + need]
                pieces.append(piece)
                need -= len(piece)
                shard, local = shard + 1, 0
            chunk = np.concatenate(pieces)
        x[:] = chunk[:-1]
        y[:] = chunk[1:]

    def __iter__(self) -> "ShardLoader":
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._damage is not None:
            raise self._damage
        x = np.empty((self.batch_size, self.seq_len), dtype=np.int64)
        y = np.empty((self.batch_size, self.seq_len), dtype=np.int64)
        for row in range(self.batch_size):
            if self.position >= self.per_rank:
                self.epoch, self.position = self.epoch + 1, 0
            self._copy_window(int(self._rank_order()[self.position]), x[row], y[row])
            self.position += 1
        return _pin(torch.from_numpy(x), self.pin_memory), _pin(torch.from_numpy(y), self.pin_memory)

    def state_dict(self) -> dict[str, Any]:
        """Where the next batch starts, plus what the position means (plain Python values only)."""
        return {
            "kind": "shards", "epoch": self.epoch, "position": self.position, "seed": self.seed,
            "seq_len": self.seq_len, "world_size": self.world_size, "total_tokens": self.total_tokens,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict` (of any rank: all ranks of a step share the position)."""
        if state.get("kind") != "shards":
            raise UsageError("the checkpoint's data position is from a streaming run; set data.streaming=true to resume it")
        for key in ("seed", "seq_len", "total_tokens"):
            if state.get(key) != getattr(self, key):
                raise UsageError(
                    f"the checkpoint's data position does not fit these shards ({key}: checkpoint {state.get(key)}, "
                    f"now {getattr(self, key)}); resume with the data and settings the run started with"
                )
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        if state["world_size"] != self.world_size:
            # Ranks walk the same permutation in lockstep, so the global position carries over exactly
            # up to rounding to a multiple of the new world size.
            self.position = self.position * int(state["world_size"]) // self.world_size
            print(f"edulm: data position mapped from {state['world_size']} to {self.world_size} ranks", file=sys.stderr)
        if self.position > self.per_rank:
            self.epoch, self.position = self.epoch + 1, 0

    def close(self) -> None:
        """Stop the background checksum pass (memory maps close with the arrays)."""
        self._closed.set()
        self._verifier.join()


def make_train_loader(cfg: Config, rank: int = 0, world_size: int = 1, fingerprint: str | None = None):
    """The training batch iterator for ``cfg``: shards of ``data.shards_dir``, or the source when streaming.

    ``fingerprint`` is the run tokenizer's; shards made with another tokenizer are refused. Without it,
    the manifest's tokenizer is accepted when its name equals ``tokenizer.name`` and is fingerprinted
    otherwise.
    """
    if cfg.data.streaming:
        from edulm.data.streaming import StreamingLoader

        return StreamingLoader(cfg, rank=rank, world_size=world_size)
    manifest = read_manifest(cfg.data.shards_dir)
    expected = _run_fingerprint(cfg, manifest, fingerprint)
    arrays = open_split(cfg.data.shards_dir, "train", fingerprint=expected)
    folder = Path(cfg.data.shards_dir)
    # Each rank checks every world_size-th shard: on one machine every shard is read once.
    checksums = [(folder / e["file"], e["crc32"]) for e in manifest["splits"]["train"]["shards"]][rank::world_size]
    return ShardLoader(
        arrays, cfg.train.seq_len, _micro_batch_size(cfg), cfg.run.seed, rank, world_size,
        where=str(folder / MANIFEST), checksums=checksums,
    )


def windows_to_batches(tokens: np.ndarray, seq_len: int, batch_size: int, max_tokens: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Non-overlapping ``seq_len + 1`` windows (stride ``seq_len``) of ``tokens`` as batches, in order.

    ``max_tokens`` (0: all) caps the scored tokens, rounded up to whole windows; the tail shorter than a
    window is left out so every batch has the same width.
    """
    n = max(0, (len(tokens) - 1) // seq_len)
    if max_tokens > 0:
        n = min(n, -(-max_tokens // seq_len))
    batches = []
    for first in range(0, n, batch_size):
        rows = range(first, min(n, first + batch_size))
        x = np.stack([tokens[w * seq_len : w * seq_len + seq_len] for w in rows]).astype(np.int64)
        y = np.stack([tokens[w * seq_len + 1 : w * seq_len + seq_len + 1] for w in rows]).astype(np.int64)
        batches.append((torch.from_numpy(x), torch.from_numpy(y)))
    return batches


def make_val_batches(cfg: Config, batch_size: int, max_tokens: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The held-out split as a fixed list of ``(inputs, targets)`` batches (empty when nothing is held out).

    Windows are consecutive and non-overlapping, so the same batches come back on every call.
    With ``data.streaming`` the held-out documents are read and tokenized from the source.
    """
    if cfg.data.streaming:
        from edulm.data.streaming import held_out_tokens

        tokens = held_out_tokens(cfg)
    else:
        arrays = open_split(cfg.data.shards_dir, "val")
        tokens = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.uint16)
    return windows_to_batches(tokens, cfg.train.seq_len, batch_size, max_tokens)
