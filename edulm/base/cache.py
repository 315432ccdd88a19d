"""edulm's cache folder: converted tokenizers, the built-in sample, exports made for lm-eval.

It sits at the bottom of the import graph (no edulm imports), so the tokenizer, the data package and
the exporter can all use it without importing one another.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """edulm's cache folder: ``$EDULM_CACHE`` or ``~/.cache/edulm``."""
    return Path(os.environ.get("EDULM_CACHE") or Path.home() / ".cache" / "edulm")
