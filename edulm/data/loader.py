"""Training and validation batches from prepared shards (or, with ``data.streaming``, from the source).

The training split is one long token stream (the shards in order), cut into packed windows
(:mod:`edulm.data.windows`): window ``w`` is the ``seq_len + 1`` tokens starting at ``w * seq_len``.

Each epoch visits the windows in a permutation drawn from ``(run.seed, epoch)``. Rank ``r`` of ``n``
takes positions ``r, r + n, r + 2n, ...`` of that permutation (the last ``windows mod n`` positions are
left out so every rank has the same number of steps), so ranks are disjoint and together cover the
epoch. The loader's state is ``(epoch, position)``; a resumed run continues at the exact next window.
A mixture's shards are drawn by weight instead (:mod:`edulm.data.mixture_loader`), and
``data.prefetch`` batches are read ahead by a background thread (:mod:`edulm.data.prefetch`).

Opening checks each shard's header, size and tokenizer fingerprint against ``manifest.json``; the
CRC-32 of every shard's tokens is checked by a background thread while training starts.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edulm.config import Config
from edulm.data.mixture import split_by_weight
from edulm.data.mixture_loader import MixtureLoader
from edulm.data.prefetch import PrefetchingLoader
from edulm.data.shards import MANIFEST, TOKEN_DTYPE, check_fingerprint, open_shards, read_manifest, verify_shard
from edulm.data.windows import ChecksumPass, TokenStream, batch_buffers
from edulm.base.errors import UsageError

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=4)
def _fingerprint_of(tokenizer_name: str) -> str:
    from edulm.tokenizer.loading import load_tokenizer, tokenizer_fingerprint

    return tokenizer_fingerprint(load_tokenizer(tokenizer_name))


def _run_fingerprint(cfg: Config, manifest: dict[str, Any], fingerprint: str | None) -> str:
    """The fingerprint the shards must carry: given, else the manifest's when the tokenizer names agree.

    Loading a tokenizer can take seconds, so it is loaded only when the names differ (the same tokenizer
    can go by a hub id and by a local path, and the fingerprint decides).
    """
    if fingerprint is not None:
        return fingerprint
    recorded = manifest["tokenizer"]
    if recorded["name"] == cfg.tokenizer.name:
        return recorded["fingerprint"]
    return _fingerprint_of(cfg.tokenizer.name)


def _micro_batch_size(cfg: Config, resolved: int | None) -> int:
    """The resolved micro-batch when given, else ``train.micro_batch_size`` when it is a number."""
    size = resolved if resolved is not None else cfg.train.micro_batch_size
    if not isinstance(size, int) or size < 1:
        raise ValueError("the micro-batch must be resolved to a positive number before building the loader "
                         f"(got {size!r}); pass micro_batch_size=")
    return size


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
        self.stream = TokenStream(arrays, seq_len)
        self.total_tokens = self.stream.total_tokens
        self.seq_len, self.batch_size, self.seed = seq_len, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.n_windows = self.stream.n_windows
        self.per_rank = self.n_windows // world_size
        if self.per_rank == 0:
            raise UsageError(
                f"{where}: {self.total_tokens:,} training tokens are too few for one window of {seq_len + 1} tokens "
                f"per rank ({world_size} ranks); prepare more data or lower train.seq_len"
            )
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.epoch, self.position = 0, 0
        self._order_epoch, self._order = -1, np.zeros(0, dtype=np.int64)
        self._checks = ChecksumPass(checksums or [])

    def verified(self) -> None:
        """Wait for the background checksum pass; raise UsageError naming a damaged shard."""
        self._checks.wait()

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

    def __iter__(self) -> "ShardLoader":
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        self._checks.raise_damage()
        x, y = batch_buffers(self.batch_size, self.seq_len, self.pin_memory)
        xs, ys = x.numpy(), y.numpy()
        for row in range(self.batch_size):
            if self.position >= self.per_rank:
                self.epoch, self.position = self.epoch + 1, 0
            self.stream.copy_window(int(self._rank_order()[self.position]), xs[row], ys[row])
            self.position += 1
        return x, y

    def state_dict(self) -> dict[str, Any]:
        """Where the next batch starts, plus what the position means (plain Python values only)."""
        return {
            "kind": "shards", "epoch": self.epoch, "position": self.position, "seed": self.seed,
            "seq_len": self.seq_len, "world_size": self.world_size, "total_tokens": self.total_tokens,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict` (of any rank: all ranks of a step share the position)."""
        if state.get("kind") != "shards":
            raise UsageError(f"the checkpoint's data position is from {_KINDS.get(state.get('kind'), 'another kind of data')}, "
                             "not from prepared shards of one source; resume with the data settings the run started with")
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
            log.info("data position mapped from %d to %d ranks", state["world_size"], self.world_size)
        if self.position > self.per_rank:
            self.epoch, self.position = self.epoch + 1, 0

    def close(self) -> None:
        """Stop the background checksum pass (memory maps close with the arrays)."""
        self._checks.close()


_KINDS = {"stream": "a streaming run (data.streaming=true)", "mixture": "a mixture of sources",
          "shards": "prepared shards of one source", "chat": "fine-tuning rows (train.objective sft)"}
"""How a loader state's ``kind`` is named in messages."""


def make_train_loader(cfg: Config, rank: int = 0, world_size: int = 1, fingerprint: str | None = None,
                      micro_batch_size: int | None = None):
    """The training batch iterator for ``cfg``: shards of ``data.shards_dir``, or the source when streaming.

    ``micro_batch_size``: sequences per batch, as the run resolved them (``TrainState.batch``, e.g.
    from ``train.micro_batch_size: auto``); None takes ``train.micro_batch_size``, which must then be
    a number.

    ``fingerprint`` is the run tokenizer's; shards made with another tokenizer are refused. Without it,
    the manifest's tokenizer is accepted when its name equals ``tokenizer.name`` and is fingerprinted
    otherwise. With ``data.prefetch`` above 0 a background thread reads that many batches ahead.
    """
    size = _micro_batch_size(cfg, micro_batch_size)
    if cfg.train.objective == "sft":  # chat records, one conversation per row (no shards)
        from edulm.data.chat_loader import make_chat_loader

        chats: Any = make_chat_loader(cfg, rank=rank, world_size=world_size, micro_batch_size=size)
        return PrefetchingLoader(chats, cfg.data.prefetch) if cfg.data.prefetch > 0 else chats
    if cfg.data.streaming:
        from edulm.data.streaming import StreamingLoader

        return StreamingLoader(cfg, rank=rank, world_size=world_size, micro_batch_size=size)  # reads ahead in its own process
    folder = Path(cfg.data.shards_dir)
    manifest = read_manifest(folder)
    check_fingerprint(manifest, folder, _run_fingerprint(cfg, manifest, fingerprint))
    _check_source(cfg, manifest, folder)
    entries = manifest["splits"]["train"]["shards"]
    arrays = open_shards(folder, entries, manifest["tokenizer"]["fingerprint"])
    # Each rank checks every world_size-th shard: on one machine every shard is read once.
    checksums = [(folder / e["file"], e["crc32"]) for e in entries][rank::world_size]
    if "mixture" in manifest:
        sources = manifest["mixture"]
        streams = [[a for a, e in zip(arrays, entries) if e["source"] == i] for i in range(len(sources))]
        loader: Any = MixtureLoader(
            streams, [s["weight"] for s in sources], cfg.train.seq_len, size, cfg.run.seed, rank, world_size,
            names=[str(folder / s["folder"]) for s in sources], checksums=checksums,
        )
    else:
        loader = ShardLoader(arrays, cfg.train.seq_len, size, cfg.run.seed, rank, world_size,
                             where=str(folder / MANIFEST), checksums=checksums)
    if cfg.data.prefetch > 0:
        return PrefetchingLoader(loader, cfg.data.prefetch)
    return loader


def _check_source(cfg: Config, manifest: dict[str, Any], folder: Path) -> None:
    """Refuse shards prepared from other data than ``data.source`` names: another source, one source for a
    mixture, another mixture's sources or weights. (The summary and the card name ``data.source``: it must
    be what the run trains on.)"""
    prepared = manifest.get("mixture")
    wanted = cfg.data.sources() if cfg.data.is_mixture else None
    if prepared is None and wanted is None:
        recorded = (manifest.get("settings") or {}).get("source")
        if isinstance(recorded, str) and recorded.strip() != cfg.data.source.strip():
            raise UsageError(f"{folder / MANIFEST}: prepared from data.source '{recorded}', but the config's data.source is "
                             f"'{cfg.data.source}'; set data.source back, or run 'edulm prepare' with this config into "
                             "another data.shards_dir")
        return
    if prepared is None or wanted is None:
        what = "one source" if prepared is None else "a mixture"
        raise UsageError(f"{folder / MANIFEST}: prepared from {what}, but data.source is {'a mixture' if wanted else 'one source'}; "
                         "run 'edulm prepare' with this config, or point data.shards_dir at matching shards")
    if [(p["source"], float(p["weight"])) for p in prepared] != [(w.source, w.weight) for w in wanted]:
        raise UsageError(f"{folder / MANIFEST}: prepared for another mixture (sources and weights "
                         f"{[(p['source'], p['weight']) for p in prepared]}); run 'edulm prepare' with this config, "
                         "or point data.shards_dir at matching shards")


def windows_to_batches(tokens: np.ndarray, seq_len: int, batch_size: int, max_tokens: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Non-overlapping ``seq_len + 1`` windows (stride ``seq_len``) of ``tokens`` as batches, in order.

    ``max_tokens`` (0: all) caps the scored tokens, rounded up to whole windows; the tail shorter than a
    window is left out so every batch has the same width.
    """
    return held_out_batches([tokens], [1.0], seq_len, batch_size, max_tokens)


def held_out_batches(segments: list[np.ndarray], weights: list[float], seq_len: int, batch_size: int,
                     max_tokens: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each segment (a source's held-out tokens) cut into non-overlapping windows on its own, as batches.

    ``max_tokens`` (0: all) caps the scored tokens, rounded up to whole windows and shared among the
    segments by ``weights``, so a cap scores the mixture, not its first source.
    """
    available = [max(0, (len(tokens) - 1) // seq_len) for tokens in segments]
    if max_tokens > 0:
        wanted = split_by_weight(-(-max_tokens // seq_len), weights)
        available = [min(a, w) for a, w in zip(available, wanted)]
    return _batches(list(zip(segments, available)), seq_len, batch_size)


def shards_held_out(shards_dir: str | Path, fingerprint: str | None = None) -> tuple[list[np.ndarray], list[float]]:
    """The held-out tokens of a prepared folder, one segment per source (one for a single source), and the
    sources' weights; ``fingerprint`` (the reader's tokenizer) must match the shards'."""
    folder = Path(shards_dir)
    manifest = read_manifest(folder)
    check_fingerprint(manifest, folder, fingerprint)
    entries = manifest["splits"]["val"]["shards"]
    arrays = open_shards(folder, entries, manifest["tokenizer"]["fingerprint"])
    # The held-out split is small and read whole: check every byte before scoring it (the training shards are
    # checked by a background pass while training runs).
    for entry in entries:
        verify_shard(folder / entry["file"], entry["crc32"])
    if "mixture" not in manifest:
        return [_concat(arrays)], [1.0]
    weights = [float(s["weight"]) for s in manifest["mixture"]]
    return [_concat([a for a, e in zip(arrays, entries) if e["source"] == i]) for i in range(len(weights))], weights


def _batches(segments: list[tuple[np.ndarray, int]], seq_len: int, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first ``n`` windows of each ``(tokens, n)`` segment, in order, as batches of ``batch_size`` rows."""
    rows = [tokens[w * seq_len : w * seq_len + seq_len + 1] for tokens, n in segments for w in range(n)]
    batches = []
    for first in range(0, len(rows), batch_size):
        chunk = np.stack(rows[first : first + batch_size]).astype(np.int64)
        batches.append((torch.from_numpy(chunk[:, :-1].copy()), torch.from_numpy(chunk[:, 1:].copy())))
    return batches


def make_val_batches(cfg: Config, batch_size: int, max_tokens: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The held-out split as a fixed list of ``(inputs, targets)`` batches (empty when nothing is held out).

    Windows are consecutive and non-overlapping, so the same batches come back on every call. For a
    mixture, each source's held-out tokens are windowed on their own and ``max_tokens`` is shared
    among the sources by weight, so the loss is over the mixture. With ``data.streaming`` the
    held-out documents are read and tokenized from the source. A fine-tuning run (``train.objective: sft``)
    scores its held-out conversations (:func:`edulm.data.chat_loader.chat_val_batches`).
    """
    if cfg.train.objective == "sft":
        from edulm.data.chat_loader import chat_val_batches

        return chat_val_batches(cfg, batch_size, max_tokens)
    if cfg.data.streaming:
        from edulm.data.streaming import held_out_segments

        segments, weights = held_out_segments(cfg), [e.weight for e in cfg.data.sources()]
    else:
        segments, weights = shards_held_out(cfg.data.shards_dir)
    return held_out_batches(segments, weights, cfg.train.seq_len, batch_size, max_tokens)


def _concat(arrays: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(arrays) if arrays else np.zeros(0, dtype=TOKEN_DTYPE)
