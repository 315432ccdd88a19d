"""A fine-tuning set: chat records as tokenized rows (ids and assistant-only targets), a held-out split,
and an honest count of what did not fit.

Every conversation becomes one row of at most ``seq_len + 1`` tokens (the ChatML ids of
:func:`edulm.tokenizer.chat_template.encode_chats`, whose mask marks the assistant replies). A longer
conversation is *truncated* to its first ``seq_len + 1`` tokens and counted; one with no assistant token
left to learn (no reply at all, or its first reply beyond the cut) is *left out* and counted. Both counts
are said at the start of the run (a warning when anything was cut) and kept in the summary.

The held-out split takes whole conversations, by the rule of the text data (:mod:`edulm.data.split`):
a pure function of ``(run.seed, record number)`` and the token quota ``data.val_tokens``. A held-out
conversation is never trained on.

The set is read and tokenized once per process (the training rows and the held-out rows come from the
same call, cached): fine-tuning sets are small next to pretraining data, and no ``edulm prepare`` step is
needed. Token ids are kept in one flat int32 array (about 5 bytes a token with the mask).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from edulm.base.errors import UsageError
from edulm.data.chat_records import read_conversations
from edulm.data.split import SplitAssigner

log = logging.getLogger(__name__)

TOKENIZE_BATCH = 512
"""Conversations tokenized per call (the fast tokenizer works on a batch in parallel)."""


@dataclass(frozen=True)
class ChatRows:
    """Conversations as rows: ``ids[starts[i]:starts[i+1]]`` and its mask are conversation ``i``."""

    ids: np.ndarray
    """Token ids of every row, one after the other (int32)."""
    mask: np.ndarray
    """1 where the token is one the model is trained to write (an assistant reply or its <|im_end|>), int8."""
    starts: np.ndarray
    """Where each row begins in ``ids``, with the total length last (int64, ``len(rows) + 1`` values)."""

    def __len__(self) -> int:
        return len(self.starts) - 1

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Ids and mask of row ``i``."""
        a, b = self.starts[i], self.starts[i + 1]
        return self.ids[a:b], self.mask[a:b]

    @functools.cached_property
    def trained(self) -> np.ndarray:
        """Per row, the targets that count: masked tokens after the first (the first token is never a target)."""
        per_token = self.mask.astype(np.int64)
        per_token[self.starts[:-1][self.starts[:-1] < len(self.mask)]] = 0
        return np.add.reduceat(per_token, self.starts[:-1]) if len(self) else np.zeros(0, dtype=np.int64)

    @property
    def tokens(self) -> int:
        """Tokens of all rows."""
        return int(self.starts[-1])


@dataclass(frozen=True)
class ChatSet:
    """A fine-tuning set: training and held-out rows, and what was cut or left out."""

    train: ChatRows
    """The training conversations, in record order."""
    val: ChatRows
    """The held-out conversations, in record order."""
    report: dict[str, Any]
    """``conversations`` read, ``held_out``, ``truncated`` (longer than ``seq_len + 1`` tokens, cut),
    ``truncated_tokens`` (tokens cut off), ``no_reply`` (left out: no assistant token within the row),
    ``longest`` (tokens of the longest conversation before any cut), ``seq_len``."""


def _rows(encoded: list[tuple[np.ndarray, np.ndarray]]) -> ChatRows:
    lengths = np.array([len(ids) for ids, _ in encoded], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    if not encoded:
        return ChatRows(np.zeros(0, np.int32), np.zeros(0, np.int8), starts)
    return ChatRows(np.concatenate([ids for ids, _ in encoded]).astype(np.int32),
                    np.concatenate([mask for _, mask in encoded]).astype(np.int8), starts)


def build_chat_set(conversations, tok, seq_len: int, seed: int, val_tokens: int) -> ChatSet:
    """Tokenize ``conversations`` (an iterable of checked message lists) with ``tok``, cut each to ``seq_len + 1``
    tokens, leave out those with nothing to learn and split the rest (see the module docstring)."""
    from edulm.tokenizer.chat_template import encode_chats

    limit = seq_len + 1
    split = SplitAssigner(seed, val_tokens)
    train: list[tuple[np.ndarray, np.ndarray]] = []
    val: list[tuple[np.ndarray, np.ndarray]] = []
    counts = {"conversations": 0, "held_out": 0, "truncated": 0, "truncated_tokens": 0, "no_reply": 0, "longest": 0}
    batch: list = []

    def flush() -> None:
        for chat in encode_chats(tok, batch):
            index = counts["conversations"]
            counts["conversations"] += 1
            counts["longest"] = max(counts["longest"], len(chat.ids))
            ids, mask = chat.ids[:limit], chat.mask[:limit]
            if len(chat.ids) > limit:
                counts["truncated"] += 1
                counts["truncated_tokens"] += len(chat.ids) - limit
            if not mask[1:].any():  # nothing to learn in this row
                counts["no_reply"] += 1
                continue
            if split.is_val(index, len(ids)):
                counts["held_out"] += 1
                val.append((ids, mask))
            else:
                train.append((ids, mask))
        batch.clear()

    for messages in conversations:
        batch.append(messages)
        if len(batch) >= TOKENIZE_BATCH:
            flush()
    flush()
    return ChatSet(_rows(train), _rows(val), {**counts, "seq_len": seq_len})


def describe(report: dict[str, Any]) -> str:
    """One line about the set for the start of a run."""
    return (f"chat data: {report['conversations']:,} conversations, {report['held_out']:,} held out; "
            f"{report['truncated']:,} truncated to {report['seq_len'] + 1:,} tokens ({report['truncated_tokens']:,} tokens cut), "
            f"{report['no_reply']:,} left out with no assistant token to learn")


@functools.lru_cache(maxsize=2)
def _cached_chat_set(source: str, pattern: str, field: str, tokenizer: str, seq_len: int, seed: int,
                     val_tokens: int) -> ChatSet:
    from edulm.tokenizer.loading import load_tokenizer

    chats = build_chat_set(read_conversations(source, field, pattern), load_tokenizer(tokenizer), seq_len, seed, val_tokens)
    if chats.report["conversations"] == 0:
        raise UsageError(f"data.source '{source}' holds no chat records")
    return chats


def say_what_was_cut(report: dict[str, Any]) -> None:
    """The set's line at the start of a run: a warning when conversations were cut or left out, so it is never silent."""
    line = describe(report)
    if report["truncated"] or report["no_reply"]:
        log.warning("%s (the longest has %s tokens; raise train.seq_len to keep more)", line, f"{report['longest']:,}")
    else:
        log.info(line)


def chat_set(cfg) -> ChatSet:
    """The fine-tuning set of a run config (``train.objective: sft``), read once per process."""
    d = cfg.data
    return _cached_chat_set(d.source, d.pattern, d.messages_field, cfg.tokenizer.name, cfg.train.seq_len, cfg.run.seed,
                            d.val_tokens)
