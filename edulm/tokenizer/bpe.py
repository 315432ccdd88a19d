"""A small byte-level BPE trained from text (``edulm tokenizer train``, tests, the demo's tiny models)."""

from __future__ import annotations

from typing import Iterable

from edulm.base.errors import UsageError
from edulm.tokenizer.loading import DOCUMENT_SEPARATOR


def train_bpe(texts: Iterable[str], vocab_size: int, special_tokens: tuple[str, ...] = (DOCUMENT_SEPARATOR,)):
    """Train a byte-level BPE (GPT-2 style pre-tokenisation) on ``texts``; ``<|endoftext|>`` gets id 0
    and serves as bos, eos and unk, like SmolLM2's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(alphabet) + len(special_tokens):
        raise UsageError(f"vocab size {vocab_size} is too small: byte-level BPE needs at least {len(alphabet) + len(special_tokens)}")
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(special_tokens), initial_alphabet=alphabet, show_progress=False
    )
    core.train_from_iterator(texts, trainer=trainer)
    sep = special_tokens[0]
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token=sep, eos_token=sep, unk_token=sep)
