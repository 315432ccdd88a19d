"""Printed lines of a run that do not break the progress bar; silent on every rank but 0."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


class Console:
    """Lines on stdout (``info``) and stderr (``warn``), printed only when ``enabled``."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def info(self, message: str) -> None:
        """A line on stdout."""
        if self.enabled:
            tqdm.write(message, file=sys.stdout)
            sys.stdout.flush()

    def warn(self, message: str) -> None:
        """A warning line on stderr."""
        if self.enabled:
            tqdm.write(f"edulm: warning: {message}", file=sys.stderr)
