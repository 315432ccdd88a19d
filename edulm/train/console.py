"""A run's printed lines and its log file, silent on every rank but 0; and how progress is shown.

Lines go through the ``edulm`` logger (:mod:`edulm.base.logs`): the console shows them at the
verbosity the command line chose, and ``training/train.log`` receives all of them once the run dir
is known (:meth:`Console.log_to`). Lines logged before that (a damaged checkpoint skipped while
looking for one to resume) wait in memory and open the file's new segment, so a resumed run's log
reads in order.
"""

from __future__ import annotations

import logging
import sys
from logging.handlers import MemoryHandler
from pathlib import Path

from edulm.base.files import disk_full_error, is_disk_full
from edulm.base.logs import NORMAL, LogFileHandler, console_level, ensure_console, is_terminal, logger, progress_bars

_EARLY_LINES = 1000
"""Lines kept in memory until the log file opens (set-up logs a handful)."""


class Console:
    """A run's lines: ``info`` and ``debug`` (stdout), ``warn`` (stderr), all into the log file; nothing
    when not ``enabled`` (every rank but 0)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._early: MemoryHandler | None = None
        self._file: LogFileHandler | None = None
        if enabled:
            ensure_console()
            self._early = MemoryHandler(_EARLY_LINES, flushLevel=logging.CRITICAL + 1, flushOnClose=False)
            logger().addHandler(self._early)

    def info(self, message: str) -> None:
        """An info line."""
        if self.enabled:
            logger().info(message)

    def warn(self, message: str) -> None:
        """A warning line (``edulm: warning: ...`` on stderr)."""
        if self.enabled:
            logger().warning(message)

    def log_to(self, path: Path, heading: str) -> None:
        """From now on append every line of the ``edulm`` logger to ``path``: first ``heading``, then
        the lines logged since the run began, then the rest as they come."""
        if not self.enabled or self._file is not None:
            return
        log = logger()
        try:
            self._file = LogFileHandler(path)
        except OSError as err:
            if is_disk_full(err):
                raise disk_full_error(path.parent, "the log file") from err  # train() adds the resume advice
            raise
        self.log_only(logging.INFO, heading)
        if self._early is not None:
            log.removeHandler(self._early)
            self._early.setTarget(self._file)
            self._early.flush()
            self._early = None
        log.addHandler(self._file)

    def log_only(self, level: int, message: str) -> None:
        """A line for the log file alone (nothing when no file is open)."""
        if self._file is not None:
            self._file.handle(logger().makeRecord(logger().name, level, __file__, 0, message, None, None))

    def close(self) -> None:
        """Stop writing the log file and drop lines that never reached one (safe to call twice)."""
        log = logger()
        for handler in (self._early, self._file):
            if handler is not None:
                log.removeHandler(handler)
                handler.close()
        self._early = self._file = None


def progress_display() -> tuple[bool, bool]:
    """How a run's step figures reach the console: ``(bar, lines)``.

    A tqdm bar on stderr when stderr is a terminal (in a file it would be a stream of carriage
    returns); one plain line per metrics row on stdout when stdout is not a terminal (a file, a pipe,
    SLURM, nohup) or there is no bar. Neither with ``--quiet``. The log file gets the lines always.
    """
    if console_level() > NORMAL:
        return False, False
    bar = progress_bars()
    return bar, not (bar and is_terminal(sys.stdout))
