"""Fine-tuning batches: one conversation per row, targets only on the assistant replies, resumable mid-epoch.

A row holds one conversation (:mod:`edulm.data.chat_data`) and is padded to ``seq_len`` after it. Why
not pack several conversations into a row as pretraining packs documents: the model's attention is
plain causal attention over the whole row, so a packed conversation would attend to the ones before it
and learn replies that lean on another user's questions. Padding sits after the conversation, where
causal attention keeps it from every scored position; its targets are ``IGNORE_INDEX``, as are the
targets of every token that is not an assistant reply or its ``<|im_end|>``, so the loss
(:func:`edulm.model.loss.lm_loss`, the mean over targets that are not ``IGNORE_INDEX``) is the loss of
the replies alone.

The set is finite and visited in epochs; each epoch's order is a permutation drawn from ``(run.seed,
epoch)``. Rank ``r`` of ``n`` takes positions ``r, r + n, ...`` of it (the last ``rows mod n`` left out
so every rank has as many), as :class:`edulm.data.loader.ShardLoader` does with windows. The state is
``(epoch, position)`` with the counts of rows and trained targets so far (over all ranks): a resumed
run continues at the exact next conversation, and the summary reports the share of trained tokens.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from edulm.base.errors import UsageError
from edulm.data.chat_data import ChatRows, chat_set, say_what_was_cut

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
"""Target id that the loss skips: the model's (``edulm.model.loss.IGNORE_INDEX``, PyTorch's convention), written
here so that the data layer does not import the model layer beside it (a test checks the two agree)."""

PAD_ID = 0
"""Input id of the padding after a conversation (never scored, never attended to by a scored position)."""


def fill_row(ids: np.ndarray, mask: np.ndarray, inputs: np.ndarray, targets: np.ndarray) -> None:
    """Write one conversation into a row: inputs ``ids[:-1]``, targets ``ids[1:]`` where the mask says so,
    padding after it (``inputs`` and ``targets`` are ``seq_len`` long; ``ids`` at most ``seq_len + 1``)."""
    n = len(ids) - 1
    inputs[:n] = ids[:-1]
    inputs[n:] = PAD_ID
    targets[:n] = np.where(mask[1:] == 1, ids[1:], IGNORE_INDEX)
    targets[n:] = IGNORE_INDEX


class ChatLoader:
    """Shuffled, rank-sharded, resumable ``(inputs, targets)`` batches of fine-tuning rows."""

    def __init__(self, rows: ChatRows, seq_len: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 report: dict[str, Any] | None = None):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        self.rows, self.seq_len, self.batch_size, self.seed = rows, seq_len, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.conversations, self.tokens = len(rows), rows.tokens
        self.per_rank = len(rows) // world_size
        if self.per_rank == 0:
            raise UsageError(f"{len(rows):,} training conversations are too few for one per rank ({world_size} ranks); "
                             "add conversations or lower data.val_tokens")
        self.report = dict(report or {})
        self.epoch, self.position = 0, 0
        self.rows_seen, self.trained_tokens = 0, 0  # over all ranks, for the summary
        self._order_epoch, self._order = -1, np.zeros(0, dtype=np.int64)

    def _epoch_order(self) -> np.ndarray:
        """The epoch's permutation, cut to a multiple of the world size (every rank walks it in lockstep)."""
        if self._order_epoch != self.epoch:
            perm = np.random.default_rng([self.seed % 2**63, self.epoch, 1]).permutation(len(self.rows))
            self._order = perm[: self.per_rank * self.world_size]
            self._order_epoch = self.epoch
        return self._order

    def row_ids(self, epoch: int) -> np.ndarray:
        """The conversation numbers (training rows) this rank visits in ``epoch``, in order (for tests)."""
        saved = self.epoch
        self.epoch = epoch
        try:
            return self._epoch_order()[self.rank :: self.world_size].copy()
        finally:
            self.epoch = saved

    def __iter__(self) -> "ChatLoader":
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.empty(self.batch_size, self.seq_len, dtype=torch.long)
        y = torch.empty(self.batch_size, self.seq_len, dtype=torch.long)
        xs, ys = x.numpy(), y.numpy()
        for row in range(self.batch_size):
            if self.position >= self.per_rank:
                self.epoch, self.position = self.epoch + 1, 0
            order = self._epoch_order()
            every_rank = order[self.position * self.world_size : (self.position + 1) * self.world_size]
            fill_row(*self.rows.row(int(every_rank[self.rank])), xs[row], ys[row])
            self.rows_seen += self.world_size
            self.trained_tokens += int(self.rows.trained[every_rank].sum())
            self.position += 1
        return x, y

    def state_dict(self) -> dict[str, Any]:
        """Where the next batch starts, what the position means, and the counts so far (plain values)."""
        return {
            "kind": "chat", "epoch": self.epoch, "position": self.position, "seed": self.seed, "seq_len": self.seq_len,
            "world_size": self.world_size, "conversations": self.conversations, "tokens": self.tokens,
            "rows_seen": self.rows_seen, "trained_tokens": self.trained_tokens, "report": self.report,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict` (of any rank: all ranks of a step share the position)."""
        if state.get("kind") != "chat":
            raise UsageError("the checkpoint's data position is not from fine-tuning rows (train.objective sft); resume "
                             "with the objective and data the run started with, or start from its weights with "
                             "model.init_from")
        for key in ("seed", "seq_len", "conversations", "tokens"):
            if state.get(key) != getattr(self, key):
                raise UsageError(f"the checkpoint's data position does not fit these conversations ({key}: checkpoint "
                                 f"{state.get(key)}, now {getattr(self, key)}); resume with the data and settings the run "
                                 "started with")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self.rows_seen, self.trained_tokens = int(state["rows_seen"]), int(state["trained_tokens"])
        if state["world_size"] != self.world_size:
            self.position = self.position * int(state["world_size"]) // self.world_size
            log.info("data position mapped from %d to %d ranks", state["world_size"], self.world_size)
        if self.position > self.per_rank:
            self.epoch, self.position = self.epoch + 1, 0

    def close(self) -> None:
        """Nothing to release (the rows are in memory)."""


def make_chat_loader(cfg, rank: int = 0, world_size: int = 1, micro_batch_size: int = 1) -> ChatLoader:
    """The training rows of a fine-tuning config (``train.objective: sft``); says what was cut or left out."""
    chats = chat_set(cfg)
    say_what_was_cut(chats.report)
    if not cfg.model.init_from:
        log.warning("train.objective sft on a freshly initialised model: set model.init_from to fine-tune a pretrained one")
    return ChatLoader(chats.train, cfg.train.seq_len, micro_batch_size, cfg.run.seed, rank, world_size, chats.report)


def chat_val_batches(cfg, batch_size: int, max_tokens: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The held-out conversations as a fixed list of batches, in record order; ``max_tokens`` (0: all) caps the
    scored targets, rounded up to whole conversations."""
    val = chat_set(cfg).val
    seq_len = cfg.train.seq_len
    chosen, scored = [], 0
    for i in range(len(val)):
        if max_tokens and scored >= max_tokens:
            break
        chosen.append(i)
        scored += int(val.trained[i])
    batches = []
    for first in range(0, len(chosen), batch_size):
        rows = chosen[first : first + batch_size]
        x = np.empty((len(rows), seq_len), dtype=np.int64)
        y = np.empty((len(rows), seq_len), dtype=np.int64)
        for r, i in enumerate(rows):
            fill_row(*val.row(i), x[r], y[r])
        batches.append((torch.from_numpy(x), torch.from_numpy(y)))
    return batches
