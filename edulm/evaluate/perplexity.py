"""``edulm perplexity``: token-weighted loss and perplexity on a text file or on held-out shards.

Text file: the whole file is tokenized as one document with no special tokens, and cut into
non-overlapping windows of ``seq_len`` tokens; in each window every token after the first is
scored (the first has no context inside the window). Held-out shards: the same windows the trainer
scores for its validation loss, ``seq_len + 1`` tokens with stride ``seq_len``, so every token but
the very first is scored once. Either way the loss is the mean negative log-likelihood over all
scored tokens (a long window counts more than a short one) and perplexity is ``exp(loss)``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import torch

from edulm.errors import UsageError
from edulm.metrics import perplexity

IGNORE_INDEX = -100
"""Target id that is not scored (padding of the last, shorter text window)."""


@dataclass(frozen=True)
class PerplexityResult:
    """A token-weighted loss over ``tokens`` scored tokens."""

    loss: float
    """Mean negative log-likelihood per scored token (nats)."""
    tokens: int
    """Number of scored tokens."""
    windows: int
    """Number of windows the tokens were scored in."""

    @property
    def perplexity(self) -> float:
        """exp(loss), inf when it overflows."""
        return perplexity(self.loss)


def text_windows(ids: list[int], seq_len: int, max_tokens: int = 0) -> list[list[int]]:
    """Non-overlapping windows of ``seq_len`` token ids; the last may be shorter, and one of a single token (which scores nothing) is dropped.

    ``max_tokens`` > 0 keeps only enough leading windows to score that many tokens (the last one cut short).
    """
    windows = []
    scored = 0
    for first in range(0, len(ids), seq_len):
        window = ids[first : first + seq_len]
        if max_tokens > 0:
            window = window[: max_tokens - scored + 1]
        if len(window) < 2:
            break
        windows.append(window)
        scored += len(window) - 1
        if max_tokens > 0 and scored >= max_tokens:
            break
    return windows


def text_batches(ids: list[int], seq_len: int, batch_size: int, max_tokens: int = 0) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """``(inputs, targets)`` batches for :func:`text_windows`; a shorter last window is padded with unscored targets."""
    windows = text_windows(ids, seq_len, max_tokens)
    for first in range(0, len(windows), batch_size):
        group = windows[first : first + batch_size]
        width = max(len(w) for w in group) - 1
        inputs = torch.zeros(len(group), width, dtype=torch.long)
        targets = torch.full((len(group), width), IGNORE_INDEX, dtype=torch.long)
        for row, window in enumerate(group):
            n = len(window) - 1
            inputs[row, :n] = torch.tensor(window[:-1])
            targets[row, :n] = torch.tensor(window[1:])
        yield inputs, targets


@torch.no_grad()
def score_batches(model, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], progress: bool = False) -> PerplexityResult:
    """Token-weighted mean loss of ``model`` over ``(inputs, targets)`` batches (targets of -100 are not scored)."""
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    total_nll = 0.0
    total_tokens = 0
    windows = 0
    batches = list(batches) if not isinstance(batches, list) else batches
    for inputs, targets in tqdm(batches, desc="scoring", unit="batch", disable=not progress, file=sys.stderr):
        inputs, targets = inputs.to(device), targets.to(device)
        n = int((targets != IGNORE_INDEX).sum())
        if n == 0:
            continue
        mean = model(inputs, targets)  # mean over scored tokens, computed in float32
        total_nll += float(mean) * n
        total_tokens += n
        windows += inputs.shape[0]
    if total_tokens == 0:
        raise UsageError("nothing to score: the input has fewer than two tokens per window; give more text or a longer --seq-len")
    return PerplexityResult(total_nll / total_tokens, total_tokens, windows)


def _seq_len(requested: int | None, max_seq_len: int) -> int:
    seq_len = requested or max_seq_len
    if seq_len < 2:
        raise UsageError(f"--seq-len {seq_len}: a window needs at least 2 tokens")
    if seq_len > max_seq_len:
        raise UsageError(f"--seq-len {seq_len} is longer than the model's context ({max_seq_len}); use at most {max_seq_len}")
    return seq_len


def read_text(path: str | Path) -> str:
    """A UTF-8 text file's contents (UsageError when missing, unreadable or empty)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such text file; pass --text with a UTF-8 text file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise UsageError(f"{path}: not UTF-8 text (byte {err.start}); convert it to UTF-8") from None
    if not text.strip():
        raise UsageError(f"{path}: the file is empty; nothing to score")
    return text


def text_perplexity(model, tokenizer, text: str, seq_len: int, batch_size: int = 4, max_tokens: int = 0,
                    progress: bool = False) -> PerplexityResult:
    """Score ``text`` as one document (no special tokens) in windows of ``seq_len``; ``max_tokens`` > 0 keeps only the first tokens."""
    ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    return score_batches(model, list(text_batches(ids, seq_len, batch_size, max_tokens)), progress)


def shards_perplexity(model, tokenizer, shards_dir: str | Path, seq_len: int, batch_size: int = 4,
                      max_tokens: int = 0, progress: bool = False) -> PerplexityResult:
    """Score the held-out split of prepared shards, as the trainer's validation does; the shards must use the model's tokenizer."""
    import numpy as np

    from edulm.data.loader import windows_to_batches
    from edulm.data.shards import open_split
    from edulm.tokenizer import tokenizer_fingerprint

    arrays = open_split(shards_dir, "val", fingerprint=tokenizer_fingerprint(tokenizer))
    tokens = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.uint16)
    if len(tokens) <= seq_len:
        raise UsageError(
            f"{shards_dir}: the held-out split has {len(tokens)} tokens, fewer than one window of {seq_len + 1}; "
            "prepare with a larger data.val_tokens or pass a smaller --seq-len"
        )
    return score_batches(model, windows_to_batches(tokens, seq_len, batch_size, max_tokens), progress)


def perplexity_command(args: argparse.Namespace) -> None:
    """``edulm perplexity MODEL (--text FILE | --data SHARDS_DIR) [--seq-len N]``: prints ``loss=... perplexity=...``."""
    from edulm.hf import load_model, load_model_tokenizer

    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.max_tokens < 0:
        raise UsageError(f"--max-tokens must be 0 (all) or more, got {args.max_tokens}")
    text = read_text(args.text) if args.text is not None else None
    if args.data is not None and not Path(args.data).is_dir():
        raise UsageError(f"{args.data}: no such folder; pass --data with a shards dir written by 'edulm prepare'")
    model, resolved = load_model(args.model, device=args.device, dtype=torch.float32)
    seq_len = _seq_len(args.seq_len, resolved.model_config.max_seq_len)
    tokenizer = load_model_tokenizer(resolved)
    if text is not None:
        result = text_perplexity(model, tokenizer, text, seq_len, args.batch_size, args.max_tokens, progress=True)
    else:
        result = shards_perplexity(model, tokenizer, args.data, seq_len, args.batch_size, args.max_tokens, progress=True)
    print(f"scored tokens: {result.tokens:,} in {result.windows:,} windows of up to {seq_len} tokens", file=sys.stderr)
    print(f"loss={result.loss:.6f} perplexity={result.perplexity:.6f}", flush=True)
