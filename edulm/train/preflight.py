"""Checks of a run's inputs that must fail before any work starts, not in the middle of a step.

The config checks itself (finite numbers, sizes that fit together: :func:`edulm.config.validate`);
what it cannot know is what lies outside it. Here: whether every token id the data can hold has a
row in the model's embedding table. A model with fewer ids than its tokenizer would fail inside the
first forward pass (``IndexError: index out of range in self``) after the run dir was written.
"""

from __future__ import annotations

from edulm.config import Config
from edulm.errors import UsageError


def data_vocab_size(cfg: Config) -> int:
    """How many token ids the run's data can hold: the vocabulary recorded in the shards' manifest
    (the tokenizer that wrote them), or with ``data.streaming`` the tokenizer's own size."""
    if cfg.data.streaming:
        from edulm.tokenizer import load_tokenizer

        return len(load_tokenizer(cfg.tokenizer.name))
    from edulm.data.shards import read_manifest

    return read_manifest(cfg.data.shards_dir)["tokenizer"]["vocab_size"]


def check_vocabulary(cfg: Config) -> None:
    """:class:`UsageError` when the data's token ids do not all fit ``model.vocab_size`` (a larger model
    vocabulary is fine: the extra rows are never used)."""
    have = data_vocab_size(cfg)
    if cfg.model.vocab_size < have:
        where = f"tokenizer '{cfg.tokenizer.name}'" if cfg.data.streaming else f"the shards in {cfg.data.shards_dir}"
        raise UsageError(
            f"model.vocab_size is {cfg.model.vocab_size:,} but {where} use {have:,} token ids; "
            f"set model.vocab_size to at least {have:,} (or prepare the data with a smaller tokenizer)"
        )
