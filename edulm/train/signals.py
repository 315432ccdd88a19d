"""SIGTERM and SIGINT become a request to stop at the next step boundary (after saving a checkpoint).

Cluster schedulers send SIGTERM before they kill a job; Ctrl-C sends SIGINT. Either one sets a flag
that the training loop reads between steps, so the step in flight finishes, a checkpoint is written
and the process exits cleanly: code 143 (128 + SIGTERM) or 130 (128 + SIGINT), the shell's
conventions for "stopped by that signal". A second SIGINT interrupts at once.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

EXIT_CODES = {signal.SIGTERM: 143, signal.SIGINT: 130}
"""Exit code after a graceful stop, per signal."""


class GracefulStop:
    """Context manager that installs the handlers (main thread only) and records the first signal."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        """True once SIGTERM or SIGINT has arrived."""
        return self.signum is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and self.signum == signal.SIGINT:
            raise KeyboardInterrupt  # asked twice: stop now
        if self.signum is None:
            self.signum = signum

    def __enter__(self) -> "GracefulStop":
        if threading.current_thread() is threading.main_thread():
            for sig in EXIT_CODES:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
