"""How many training tokens each compared model saw: the context that makes a score table fair.

A model trained on 2T tokens beating one trained on 10B says little about the recipe; the budget
table puts that next to the scores. The built-in entries come from each model's paper or card
(cited per entry); ``--budgets FILE`` (YAML or JSON) adds or overrides entries, either as
``model: 300B`` or as ``model: {tokens: 300e9, note: ..., source: ...}``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from edulm.base.errors import UsageError


@dataclass(frozen=True)
class Budget:
    """Training tokens of one model, with where the number comes from."""

    tokens: int | None
    """Tokens seen in pretraining; None when the authors did not report it."""
    note: str = ""
    """What the number means (data set, steps x batch)."""
    source: str = ""
    """Where it is published."""


TRAINING_TOKENS: dict[str, Budget] = {
    # GPT-2 was trained on WebText (about 40 GB of text, 8M documents); OpenAI did not publish the
    # number of tokens or epochs. Radford et al. 2019, "Language Models are Unsupervised Multitask Learners".
    "gpt2": Budget(None, "WebText, about 40 GB of text; token count not published", "Radford et al. 2019 (GPT-2 report)"),
    # OPT: a ~180B-token corpus; every OPT model was trained on 300B tokens. Zhang et al. 2022, arXiv:2205.01068.
    "facebook/opt-125m": Budget(300_000_000_000, "300B tokens from a ~180B-token corpus", "Zhang et al. 2022, arXiv:2205.01068"),
    # Model card: "trained on the Pile for 300 billion tokens over 572,300 steps".
    "EleutherAI/gpt-neo-125m": Budget(300_000_000_000, "the Pile, 572,300 steps", "huggingface.co/EleutherAI/gpt-neo-125m"),
    # Chinchilla-optimal (20 tokens/parameter); the card lists 9,037 steps of 120 sequences of 2,048 tokens.
    "cerebras/Cerebras-GPT-111M": Budget(2_220_933_120, "the Pile, 20 tokens per parameter (9,037 x 120 x 2,048)",
                                         "Dey et al. 2023, arXiv:2304.03208; huggingface.co/cerebras/Cerebras-GPT-111M"),
    # Every Pythia model: 143,000 steps of 2,097,152 tokens on the Pile. Biderman et al. 2023, arXiv:2304.01373.
    "EleutherAI/pythia-160m": Budget(299_892_736_000, "the Pile, 143,000 x 2,097,152 tokens", "Biderman et al. 2023, arXiv:2304.01373"),
    # The SmolLM blog post: the 135M and 360M models were trained on 600B tokens of SmolLM-Corpus.
    "HuggingFaceTB/SmolLM-135M": Budget(600_000_000_000, "SmolLM-Corpus", "huggingface.co/blog/smollm"),
    # Model card: "The 135M model was trained on 2 trillion tokens" (FineWeb-Edu, DCLM, The Stack, ...).
    "HuggingFaceTB/SmolLM2-135M": Budget(2_000_000_000_000, "FineWeb-Edu, DCLM, The Stack and others",
                                         "huggingface.co/HuggingFaceTB/SmolLM2-135M; Ben Allal et al. 2025, arXiv:2502.02737"),
    # edulm's reference run: the 10B-token FineWeb-Edu sample, one epoch.
    "l20-edu-135m": Budget(10_000_000_000, "FineWeb-Edu sample-10BT, one epoch", "edulm reference run"),
}
"""Built-in training budgets, keyed by hub id (or run name)."""

_SUFFIX = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9, "T": 10**12}


def parse_tokens(value: Any, where: str) -> int | None:
    """A token count from a number, a string such as ``300B`` / ``2T`` / ``2.2e9``, or null."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise UsageError(f"{where}: expected a token count such as 300B, got {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise UsageError(f"{where}: token count must not be negative, got {value}")
        return int(value)
    match = re.fullmatch(r"\s*([0-9][0-9_,]*(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)\s*([KkMmBbGgTt]?)\s*", str(value))
    if not match:
        raise UsageError(f"{where}: {value!r} is not a token count; write e.g. 300B, 2T or 2200000000")
    number = float(match.group(1).replace(",", "").replace("_", ""))
    return int(round(number * _SUFFIX[match.group(2).upper()]))


def load_budgets(path: str | Path | None) -> dict[str, Budget]:
    """The built-in table extended (and overridden) by a YAML/JSON file of ``model: tokens`` entries."""
    table = dict(TRAINING_TOKENS)
    if path is None:
        return table
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--budgets {path}: no such file; pass a YAML or JSON mapping of model -> training tokens")
    try:
        data = json.loads(path.read_text()) if path.suffix.lower() == ".json" else yaml.safe_load(path.read_text())
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise UsageError(f"--budgets {path}: not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'} ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UsageError(f"--budgets {path}: expected a mapping of model -> training tokens, e.g. 'my-model: 10B'")
    for model, entry in data.items():
        where = f"--budgets {path}: {model}"
        if isinstance(entry, dict):
            unknown = set(entry) - {"tokens", "note", "source"}
            if unknown:
                raise UsageError(f"{where}: unknown keys {sorted(unknown)}; use tokens, note and source")
            table[str(model)] = Budget(parse_tokens(entry.get("tokens"), where), str(entry.get("note", "")),
                                       str(entry.get("source", f"user table {path.name}")))
        else:
            table[str(model)] = Budget(parse_tokens(entry, where), "", f"user table {path.name}")
    return table


def lookup(table: dict[str, Budget], model: str) -> Budget | None:
    """The budget of ``model``: exact key, else case-insensitive, else by the part after the last '/'."""
    if model in table:
        return table[model]
    lowered = {k.lower(): v for k, v in table.items()}
    if model.lower() in lowered:
        return lowered[model.lower()]
    short = model.rsplit("/", 1)[-1].replace("__", "/").rsplit("/", 1)[-1].lower()
    matches = [v for k, v in table.items() if k.rsplit("/", 1)[-1].lower() == short]
    return matches[0] if len(matches) == 1 else None


def format_tokens(tokens: int | None) -> str:
    """``2T``, ``300B``, ``2.22B``, ``10M``; ``not reported`` for None."""
    if tokens is None:
        return "not reported"
    for suffix, scale in (("T", 10**12), ("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if tokens >= scale:
            return f"{tokens / scale:.3g}{suffix}"
    return str(tokens)
