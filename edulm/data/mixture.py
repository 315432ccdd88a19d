"""Data mixtures: which source each training window comes from, and what a run really drew.

``data.source`` may be a list of ``{source, weight, text_field, pattern}``. `edulm prepare` tokenizes
each source into its own sub-folder of ``data.shards_dir`` (:func:`source_folder`), holding out each
source's share of ``data.val_tokens`` and stopping each at its share of ``data.max_tokens``
(:func:`split_by_weight`). The training loader then draws windows by weight:

- the run's windows form one global sequence of *draws*; draw ``k`` comes from the source
  :class:`DrawSequence` ``(seed, weights)`` names for it, a seeded pseudo-random choice with the sources'
  probabilities, the same on every machine and independent of the number of processes;
- the ``j``-th draw of source ``s`` is window ``perm[j mod n_s]`` of that source, where ``perm`` is a
  permutation of its ``n_s`` windows drawn from ``(seed, epoch = j div n_s, s)``: every window of a
  source is used once before any is repeated;
- rank ``r`` of ``n`` takes draws ``r, r + n, r + 2n, ...``, so ranks are disjoint and together take
  the global sequence in order.

Because the choice is a pure function of the draw number, :func:`realised_mixture` recomputes exactly
what a run of N tokens drew from each source (tokens, share, epochs) without replaying the run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Sequence

import numpy as np

from edulm.config import DataConfig
from edulm.data.shards import read_manifest

DRAW_BLOCK = 1 << 16
"""Draws whose sources come from one generator call (a block is recomputed, not stored, on resume)."""
_DRAW_STREAM = 0x6D6978  # keeps the draw generator apart from the window permutations


def split_by_weight(total: int, weights: Sequence[float]) -> list[int]:
    """``total`` split in proportion to ``weights``, rounded by largest remainder so the parts sum to ``total``."""
    w = np.asarray(weights, dtype=np.float64)
    exact = total * w / w.sum()
    parts = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - parts), kind="stable")
    parts[order[: total - int(parts.sum())]] += 1
    return [int(p) for p in parts]


def held_out_shares(data: DataConfig) -> list[int]:
    """Each source's share by weight of ``data.val_tokens``: what `edulm prepare` holds out of it, and what
    streaming reads back as its held-out split (they must agree to the token)."""
    return split_by_weight(data.val_tokens, [e.weight for e in data.sources()])


def source_folder(index: int, source: str) -> str:
    """Sub-folder of ``data.shards_dir`` for mixture source ``index``, named after the source's last parts.

    ``hf://HuggingFaceFW/fineweb-edu/sample-10BT`` -> ``00-fineweb-edu-sample-10BT``;
    ``/data/dclm/*.parquet`` -> ``01-data-dclm``. The number alone keeps the names apart.
    """
    parts = [p for p in PurePosixPath(source.strip().removeprefix("hf://").replace(":", "/")).parts
             if p != "/" and not any(ch in p for ch in "*?[")]
    slug = re.sub(r"[^A-Za-z0-9._]+", "-", "-".join(parts[-2:])).strip("-.")[-40:].lstrip("-.")
    return f"{index:02d}-{slug or 'source'}"


class DrawSequence:
    """The source of every global draw for one seed and set of weights (remembers the last block it made)."""

    def __init__(self, seed: int, weights: Sequence[float]):
        w = np.asarray(weights, dtype=np.float64)
        self.seed = seed
        self.cumulative = np.cumsum(w / w.sum())
        self._block, self._sources = -1, np.zeros(0, dtype=np.int64)

    def _block_sources(self, block: int) -> np.ndarray:
        if block != self._block:
            u = np.random.default_rng([self.seed % 2**63, _DRAW_STREAM, block]).random(DRAW_BLOCK)
            # min(): rounding can leave the last cumulative weight a hair under 1
            self._sources = np.minimum(np.searchsorted(self.cumulative, u, side="right"), len(self.cumulative) - 1)
            self._block = block
        return self._sources

    def sources(self, first: int, count: int) -> np.ndarray:
        """The source index of global draws ``first .. first + count - 1`` (int64)."""
        out = np.empty(count, dtype=np.int64)
        done = 0
        while done < count:
            block, offset = divmod(first + done, DRAW_BLOCK)
            take = min(count - done, DRAW_BLOCK - offset)
            out[done : done + take] = self._block_sources(block)[offset : offset + take]
            done += take
        return out


def draws_per_source(seed: int, weights: Sequence[float], draws: int) -> np.ndarray:
    """How many of the first ``draws`` global draws come from each source."""
    sequence = DrawSequence(seed, weights)
    counts = np.zeros(len(weights), dtype=np.int64)
    for first in range(0, draws, DRAW_BLOCK):
        counts += np.bincount(sequence.sources(first, min(DRAW_BLOCK, draws - first)), minlength=len(weights))
    return counts


def window_permutation(seed: int, source: int, epoch: int, n_windows: int) -> np.ndarray:
    """The order in which source ``source`` visits its ``n_windows`` windows in its ``epoch``-th pass."""
    return np.random.default_rng([seed % 2**63, epoch, 1 + source]).permutation(n_windows)


@dataclass(frozen=True)
class SourceUsage:
    """What a run drew from one source of its data."""

    folder: str
    """Sub-folder of the shards dir ('' for a single source)."""
    source: str
    """The source as configured."""
    weight: float
    """Configured weight."""
    target_share: float
    """Weight divided by the sum of the weights."""
    prepared_tokens: int | None
    """Training tokens prepared for this source (None when streamed: nothing was prepared)."""
    windows: int
    """Training windows drawn from it."""
    tokens: int
    """Target tokens trained on from it (windows x seq_len)."""
    share: float
    """Its share of all tokens trained on."""
    epochs: float | None
    """Passes over its prepared windows (above 1: windows were repeated); None when streamed."""


def realised_mixture(manifest: dict[str, Any] | str | Path, seed: int, seq_len: int, tokens: int) -> list[SourceUsage]:
    """Tokens, share and epochs per source of a run that trained on ``tokens`` tokens of these shards.

    ``manifest`` is a shards dir or its manifest; ``seed`` and ``seq_len`` are the run's ``run.seed``
    and ``train.seq_len``; ``tokens`` is the run's training tokens (steps x tokens per step). The
    figures are exact for a run that started from the beginning of the data; a single-source folder
    gives one entry.
    """
    if not isinstance(manifest, dict):
        manifest = read_manifest(manifest)
    draws = max(0, tokens // seq_len)
    if "mixture" in manifest:
        sources = manifest["mixture"]
        weights = [float(s["weight"]) for s in sources]
        counts = draws_per_source(seed, weights, draws)
    else:
        source = manifest.get("source", "")
        sources = [{"folder": "", "source": source if isinstance(source, str) else str(source), "weight": 1.0,
                    "tokens": manifest["tokens"]}]
        weights, counts = [1.0], np.array([draws])
    return [_usage(entry["folder"], entry["source"], weight, sum(weights), int(entry["tokens"]["train"]), int(count),
                   seq_len, draws) for entry, weight, count in zip(sources, weights, counts)]


def streamed_mixture(sources: Sequence[str], weights: Sequence[float], seed: int, seq_len: int,
                     tokens: int) -> list[SourceUsage]:
    """:func:`realised_mixture` of a run that streamed the mixture (``data.streaming``): the same draw
    sequence names each window's source, so tokens and shares are as exact; nothing was prepared, so
    ``prepared_tokens`` and ``epochs`` are None."""
    draws = max(0, tokens // seq_len)
    counts = draws_per_source(seed, list(weights), draws)
    return [_usage("", source, float(weight), float(sum(weights)), None, int(count), seq_len, draws)
            for source, weight, count in zip(sources, weights, counts)]


def _usage(folder: str, source: str, weight: float, total_weight: float, prepared: int | None, count: int,
           seq_len: int, draws: int) -> SourceUsage:
    available = max(0, (prepared - 1) // seq_len) if prepared is not None else 0
    return SourceUsage(
        folder=folder, source=source, weight=weight, target_share=weight / total_weight, prepared_tokens=prepared,
        windows=count, tokens=count * seq_len, share=count / draws if draws else 0.0,
        epochs=(count / available if available else 0.0) if prepared is not None else None,
    )
