"""``edulm perplexity``: token-weighted loss, perplexity and bits per byte on a text file or on held-out shards.

Text file: the whole file is tokenized as one document with no special tokens, and cut into
non-overlapping windows of ``seq_len`` tokens; in each window every token after the first is
scored (the first has no context inside the window). Held-out shards: the same windows the trainer
scores for its validation loss, ``seq_len + 1`` tokens with stride ``seq_len``, so every token but
the very first is scored once. Either way the loss is the mean negative log-likelihood over all
scored tokens (a long window counts more than a short one), perplexity is ``exp(loss)``, and bits
per byte is the summed negative log-likelihood in bits over the UTF-8 bytes of the scored tokens
(:mod:`edulm.evaluate.bits_per_byte`): a window's unscored first token adds no bytes.

When MODEL is a run dir or a checkpoint, the window defaults to the run's ``train.seq_len`` and,
on ``--data``, the scored tokens to its ``train.eval_tokens``: the numbers of the run's own
validation rows.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterable

import torch

from edulm.evaluate.bits_per_byte import token_byte_lengths
from edulm.base.devices import resolve_device
from edulm.base.errors import UsageError, first_line
from edulm.evaluate.heldout import HeldOutScore, LossFn, score_heldout
from edulm.model.loss import IGNORE_INDEX

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


def hf_loss(model) -> LossFn:
    """The :data:`LossFn` of a transformers causal LM: cross-entropy of its logits in float32.

    Padding sits at the end of a window, so causal attention keeps it from changing any scored position.
    """

    def loss(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of the scored targets."""
        logits = model(input_ids=inputs).logits
        return torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX)

    return loss


def _check_seq_len(seq_len: int | None) -> None:
    """A window given on the command line scores at least one token (0 is no "default": it is refused)."""
    if seq_len is not None and seq_len < 2:
        raise UsageError(f"--seq-len {seq_len}: a window needs at least 2 tokens")


def _seq_len(requested: int | None, max_seq_len: int) -> int:
    seq_len = max_seq_len if requested is None else requested
    _check_seq_len(seq_len)
    if seq_len > max_seq_len:
        raise UsageError(f"--seq-len {seq_len} is longer than the model's context ({max_seq_len}); use at most {max_seq_len}")
    return seq_len


def read_text(path: str | Path) -> str:
    """A UTF-8 text file's contents (UsageError when missing, unreadable or empty)."""
    path = Path(path)
    if path.is_dir():  # --text and --data swapped, most likely
        raise UsageError(f"{path}: is a folder, not a text file; pass --text a UTF-8 text file (a shards dir goes with --data)")
    if not path.is_file():
        raise UsageError(f"{path}: no such text file; pass a UTF-8 text file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise UsageError(f"{path}: not UTF-8 text (byte {err.start}); convert it to UTF-8") from None
    if not text.strip():
        raise UsageError(f"{path}: the file is empty; nothing to score")
    return text


def text_perplexity(loss_fn: LossFn, tokenizer, text: str, seq_len: int, batch_size: int = 4, max_tokens: int = 0,
                    device: torch.device | str = "cpu", progress: bool = False) -> HeldOutScore:
    """Score ``text`` as one document (no special tokens) in windows of ``seq_len``; ``max_tokens`` > 0 keeps only the first tokens."""
    ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    batches = list(text_batches(ids, seq_len, batch_size, max_tokens))
    return _scored(loss_fn, batches, device, tokenizer, progress)


def shards_perplexity(model, tokenizer, shards_dir: str | Path, seq_len: int, batch_size: int = 4,
                      max_tokens: int = 0, progress: bool = False, device: torch.device | str | None = None) -> HeldOutScore:
    """Score the held-out split of prepared shards, as the trainer's validation does (a mixture's sources each
    windowed on their own, a token cap shared by weight); the shards must use the model's tokenizer."""
    from edulm.data.loader import held_out_batches, shards_held_out
    from edulm.tokenizer.loading import tokenizer_fingerprint

    segments, weights = shards_held_out(shards_dir, tokenizer_fingerprint(tokenizer))
    held = sum(len(tokens) for tokens in segments)
    batches = held_out_batches(segments, weights, seq_len, batch_size, max_tokens)
    if not batches:
        raise UsageError(
            f"{shards_dir}: the held-out split has {held} tokens, fewer than one window of {seq_len + 1}; "
            "prepare with a larger data.val_tokens or pass a smaller --seq-len"
        )
    return _scored(model, batches, device or next(model.parameters()).device, tokenizer, progress)


def _scored(loss_fn: LossFn, batches: list, device: torch.device | str, tokenizer, progress: bool) -> HeldOutScore:
    """:func:`~edulm.evaluate.heldout.score_heldout` in full precision with the tokenizer's bytes; nothing scored is a UsageError."""
    result = score_heldout(loss_fn, batches, device, byte_table=token_byte_lengths(tokenizer), progress=progress)
    if result.tokens == 0:
        raise UsageError("nothing to score: the input has fewer than two tokens per window; give more text or a longer --seq-len")
    return result


def run_defaults(resolved) -> dict[str, int]:
    """``{seq_len, eval_tokens}`` of the run behind a run dir or checkpoint (what its validation rows used); {} otherwise."""
    from edulm.evaluate.artifacts import run_config

    if resolved.kind not in ("run", "checkpoint"):
        return {}
    train = (run_config(resolved.path) or {}).get("train") or {}
    return {k: int(train[k]) for k in ("seq_len", "eval_tokens") if isinstance(train.get(k), int) and train[k] > 0}


def perplexity_command(model: str, text: str | Path | None = None, data: str | Path | None = None,
                       seq_len: int | None = None, batch_size: int = 4, max_tokens: int | None = None,
                       device: str = "auto") -> HeldOutScore:
    """``edulm perplexity MODEL (--text FILE | --data SHARDS_DIR)``: prints ``loss=... perplexity=... bits_per_byte=...``.

    ``seq_len`` and ``max_tokens`` None take the run's values when MODEL is a run or checkpoint (see
    :func:`run_defaults`), else the model's context and every token; the window used goes to stderr.
    """
    from edulm.hf import load_model, load_model_tokenizer

    if (text is None) == (data is None):
        raise UsageError("pass exactly one of --text FILE or --data SHARDS_DIR")
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {batch_size}")
    _check_seq_len(seq_len)
    if max_tokens is not None and max_tokens < 0:
        raise UsageError(f"--max-tokens must be 0 (all) or more, got {max_tokens}")
    contents = read_text(text) if text is not None else None
    if data is not None and not Path(data).is_dir():
        what = "is a file, not a folder" if Path(data).exists() else "no such folder"
        raise UsageError(f"{data}: {what}; pass --data with a shards dir written by 'edulm prepare' (a text file goes with --text)")
    if Path(model).suffix == ".gguf":  # a file edulm export --format gguf wrote, read by transformers' GGUF reader
        loaded, tokenizer, context = _gguf_model(Path(model), device)
        defaults: dict[str, int] = {}
    else:
        edulm_model, resolved = load_model(model, device=device, dtype=torch.float32)
        loaded, tokenizer = edulm_model, load_model_tokenizer(resolved)
        context, defaults = resolved.model_config.max_seq_len, run_defaults(resolved)
    window_from = ("--seq-len" if seq_len is not None else "the run's train.seq_len" if "seq_len" in defaults
                   else "the model's context")
    seq_len = _seq_len(seq_len if seq_len is not None else defaults.get("seq_len"), context)
    if max_tokens is None:
        max_tokens = defaults.get("eval_tokens", 0) if data is not None else 0
        cap_from = "the run's train.eval_tokens"
    else:
        cap_from = "--max-tokens"
    device_ = resolve_device(device)
    if contents is not None:
        result = text_perplexity(loaded, tokenizer, contents, seq_len, batch_size, max_tokens, device_, progress=True)
    else:
        if Path(model).suffix == ".gguf":
            tokenizer = _shards_tokenizer_if_same(tokenizer, data, model)
        result = shards_perplexity(loaded, tokenizer, data, seq_len, batch_size, max_tokens, progress=True, device=device_)
    cap = f", at most {max_tokens:,} ({cap_from})" if max_tokens else ""
    print(f"window: {seq_len} tokens ({window_from}){cap}; scored {result.tokens:,} tokens "
          f"({result.bytes:,} bytes) in {result.windows:,} windows", file=sys.stderr)
    bpb = result.bits_per_byte
    print(f"loss={result.loss:.6f} perplexity={result.perplexity:.6f} "
          f"bits_per_byte={'n/a' if bpb is None else f'{bpb:.6f}'}", flush=True)
    return result


def _shards_tokenizer_if_same(gguf_tokenizer, shards_dir: str | Path, model: str):
    """The shards' own tokenizer when it has the GGUF file's vocabulary (the shards hold token ids already; the
    tokenizer only proves what they mean and counts their bytes). transformers rebuilds a GGUF file's tokenizer, so
    its fingerprint differs from the original's even when every id is the same."""
    from edulm.data.shards import read_manifest
    from edulm.tokenizer.loading import load_tokenizer

    named = load_tokenizer(read_manifest(shards_dir)["tokenizer"]["name"])
    if named.get_vocab() != gguf_tokenizer.get_vocab():
        raise UsageError(f"{model}: its vocabulary is not that of the shards' tokenizer "
                         f"({read_manifest(shards_dir)['tokenizer']['name']}); score it on shards of its own tokenizer")
    return named


def _gguf_model(path: Path, device: str):
    """``(loss function, tokenizer, context)`` of a GGUF file, read by transformers (``gguf_file=``): what each
    quantisation costs is then measured on the same windows as any other model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not path.is_file():
        raise UsageError(f"{path}: no such GGUF file; write one with 'edulm export SRC --format gguf --out {path}'")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name, trust_remote_code=False)
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32,
                                                     trust_remote_code=False).to(resolve_device(device)).eval()
    except (OSError, ValueError, KeyError) as err:
        raise UsageError(f"{path}: transformers cannot read this GGUF file ({first_line(err)[:200]})") from None
    return hf_loss(model), tokenizer, int(model.config.max_position_embeddings)


def model_bits_per_byte(model: str, text: str, seq_len: int, batch_size: int = 2, device: str = "cpu") -> dict:
    """Score any causal LM that transformers loads (a local folder or a cached hub id) on ``text``.

    The window is ``seq_len`` capped at the model's context. Returns ``{loss, bits_per_byte, tokens,
    bytes, seq_len}``; a model that cannot be loaded raises a one-line :class:`UsageError`.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not Path(model).exists():  # a hub id: fail at once when the hub is unreachable, rather than retry for a minute
        from edulm.evaluate.tasks import require_hub

        require_hub(f"the model {model}")  # offline mode: returns at once (cached copies are used)
    try:
        tokenizer = AutoTokenizer.from_pretrained(model, trust_remote_code=False)
        hf_model = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32, trust_remote_code=False).to(device).eval()
    except (OSError, ValueError) as err:
        first = first_line(err)
        raise UsageError(f"could not load {model} to score bits per byte ({first[:200]})") from None
    context = getattr(hf_model.config, "max_position_embeddings", None) or getattr(hf_model.config, "n_positions", None)
    window = min(seq_len, int(context)) if context else seq_len
    result = text_perplexity(hf_loss(hf_model), tokenizer, text, window, batch_size, device=device)
    return {"loss": result.loss, "bits_per_byte": result.bits_per_byte, "tokens": result.tokens,
            "bytes": result.bytes, "seq_len": window}
