"""Which documents are held out for validation: a pure function of (seed, record index) and a token quota.

A record is a *candidate* when a 64-bit hash of the run seed and its index falls in a 1-in-
:data:`VAL_EVERY` slice. Candidates are held out, in source order, until the held-out split holds at
least ``val_tokens`` tokens; every other document is training data. The choice depends on nothing but
the seed, the record numbering and the token counts, so `edulm prepare` (any number of workers, resumed
or not) and the streaming loader make exactly the same split, and a document is never in both.
"""

from __future__ import annotations

VAL_EVERY = 20
"""One record in this many (by hash) is a validation candidate until the quota is met."""

_MASK = (1 << 64) - 1


def _mix64(x: int) -> int:
    """SplitMix64 finaliser: a fast, well-spread 64-bit hash of an integer."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def is_val_candidate(seed: int, index: int) -> bool:
    """Whether record ``index`` may be held out under ``seed``."""
    return _mix64(_mix64(seed & _MASK) ^ index) % VAL_EVERY == 0


class SplitAssigner:
    """Assigns documents, in record order, to the validation or training split."""

    def __init__(self, seed: int, val_tokens: int, held_out: int = 0):
        self.seed = seed
        self.val_tokens = val_tokens
        self.held_out = held_out
        """Tokens held out so far."""

    def is_val(self, index: int, n_tokens: int) -> bool:
        """Decide for record ``index`` with ``n_tokens`` tokens (call in increasing index order)."""
        if self.held_out < self.val_tokens and is_val_candidate(self.seed, index):
            self.held_out += n_tokens
            return True
        return False
