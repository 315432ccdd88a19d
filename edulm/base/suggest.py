"""Did-you-mean hints for unknown names (config keys, lm-eval tasks, ...): one rule, one cut-off."""

from __future__ import annotations

import difflib
from typing import Iterable

CUTOFF = 0.7
"""Similarity (``difflib`` ratio) a known name needs to be suggested: catches a swapped, missing or
doubled letter in short names (``lrr`` -> ``lr``, ``trian`` -> ``train``) without proposing unrelated
names from a long list such as lm-eval's thousands of tasks."""


def did_you_mean(word: str, choices: Iterable[str], known_up_to: int = 0) -> str:
    """`` (did you mean 'x'?)`` for the closest known name, or an empty string when none is close.

    With ``known_up_to`` > 0 and no close match, a list of at most that many names is short enough to
    show instead: `` (known: a, b, c)``.
    """
    names = [str(c) for c in choices]
    close = difflib.get_close_matches(word, names, n=1, cutoff=CUTOFF)
    if close:
        return f" (did you mean '{close[0]}'?)"
    if 0 < len(names) <= known_up_to:
        return f" (known: {', '.join(names)})"
    return ""
