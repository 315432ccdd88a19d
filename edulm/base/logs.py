"""The ``edulm`` logger: what reaches the console at which verbosity, and what a log file holds.

Every module logs to the ``edulm`` logger (``logging.getLogger(__name__)`` inside the package is one
of its children). The command line installs one :class:`ConsoleHandler` on it for the life of a
command (:func:`console_logging`, set by ``--quiet`` / ``--verbose``):

- info and debug lines go to stdout as they are; warnings and errors to stderr, after
  ``edulm: warning:`` / ``edulm: error:``, so every warning of every command looks alike;
- lines are written with ``tqdm.write``, so a progress bar on the terminal is not broken;
- a record logged with ``extra={"console": False}`` reaches log files only (the trainer's plain step
  lines while a progress bar shows the same figures).

``edulm train`` also appends every line, console or not, to ``training/train.log``
(:class:`LogFileHandler`, via :class:`edulm.train.console.Console`). Library code that runs outside
the command line gets Python's defaults (warnings on stderr) until :func:`ensure_console` is called;
the trainer calls it, so a script's ``train(cfg)`` prints what ``edulm train`` prints.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path
from typing import IO, Iterator

LOGGER_NAME = "edulm"
"""The package's logger; modules log to it or to a child of it."""

QUIET, NORMAL, VERBOSE = logging.WARNING, logging.INFO, logging.DEBUG
"""Console levels of ``--quiet`` (warnings and errors), the default (info lines) and ``--verbose`` (debug lines)."""

_PREFIX = {logging.DEBUG: "edulm: debug: ", logging.WARNING: "edulm: warning: ", logging.ERROR: "edulm: error: ",
           logging.CRITICAL: "edulm: error: "}

FILE_FORMAT = "%(asctime)s %(levelname)-7s %(message)s"
"""A log file's line: local time with its UTC offset, the level, the message."""
FILE_DATE_FORMAT = "%Y-%m-%d %H:%M:%S%z"


def write_line(text: str, stream: IO[str]) -> None:
    """Write ``text`` and its newline in one write, then flush.

    ``print`` writes the text and the newline separately; with unbuffered output (``PYTHONUNBUFFERED``,
    common on clusters) the ranks of one job sharing a stream then interleave mid-line. One write of a
    line under the pipe's atomic size (4 KiB) reaches the reader whole.
    """
    stream.write(text + "\n")
    stream.flush()


def logger() -> logging.Logger:
    """The ``edulm`` logger."""
    return logging.getLogger(LOGGER_NAME)


class ConsoleFormatter(logging.Formatter):
    """Info lines as they are; other levels after ``edulm: LEVEL:``."""

    def format(self, record: logging.LogRecord) -> str:
        """The record's console line."""
        return _PREFIX.get(record.levelno, "") + super().format(record)


class ConsoleHandler(logging.Handler):
    """Info and debug lines on stdout, warnings and errors on stderr, written around any progress bar."""

    def __init__(self, level: int = NORMAL) -> None:
        super().__init__(level)
        self.setFormatter(ConsoleFormatter("%(message)s"))
        self.addFilter(lambda record: getattr(record, "console", True))

    def emit(self, record: logging.LogRecord) -> None:
        """Write one line (the streams are looked up now: tests and wrappers replace sys.stdout)."""
        from tqdm import tqdm

        try:
            stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
            with tqdm.external_write_mode(file=stream):
                write_line(self.format(record), stream)
        except BrokenPipeError:
            raise  # the reader went away (`| head`): the command line ends quietly
        except Exception:  # noqa: BLE001 - logging's own policy for a failing handler
            self.handleError(record)


def _console_handler() -> ConsoleHandler | None:
    return next((h for h in logger().handlers if isinstance(h, ConsoleHandler)), None)


def console_level() -> int:
    """The lowest level the console shows (``NORMAL`` when no console handler is installed)."""
    handler = _console_handler()
    return handler.level if handler is not None else NORMAL


def is_terminal(stream: IO[str]) -> bool:
    """True when ``stream`` is an open terminal (not a file, a pipe or a closed stream)."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no such method, or a closed stream
        return False


def progress_bars() -> bool:
    """Whether a command may draw a progress bar (on stderr): only at a terminal, where it redraws one
    line (in a file or a cluster's log it would be a stream of carriage returns), and not with ``--quiet``."""
    return console_level() <= NORMAL and is_terminal(sys.stderr)


@contextlib.contextmanager
def library_progress_bars(show: bool) -> Iterator[None]:
    """For the block, the progress bars that libraries draw (lm-eval building and running requests and
    bootstrapping, datasets building a split, transformers loading weights) follow :func:`progress_bars`:
    with ``show`` False every tqdm bar is off, so a redirected log holds lines, not carriage-return redraws.

    The libraries have no common switch (lm-eval none at all, and some of its bars are created inside
    functions), but all of them are tqdm: its constructor is told ``disable=True`` for the block and is
    put back afterwards.
    """
    if show:
        yield
        return
    from tqdm import std

    as_defined = std.tqdm.__dict__["__init__"]  # put back as it was (tqdm wraps it to read TQDM_* defaults)
    original = std.tqdm.__init__

    def disabled(self, *args, **kwargs) -> None:
        original(self, *args, **{**kwargs, "disable": True})

    std.tqdm.__init__ = disabled
    try:
        yield
    finally:
        std.tqdm.__init__ = as_defined


def ensure_console() -> None:
    """Install the console handler at ``NORMAL`` unless one is installed, and let info lines through the logger."""
    log = logger()
    if _console_handler() is None:
        log.addHandler(ConsoleHandler(NORMAL))
    if log.getEffectiveLevel() > NORMAL:
        log.setLevel(NORMAL)


@contextlib.contextmanager
def console_logging(level: int = NORMAL) -> Iterator[None]:
    """For the block: the console shows ``level`` and above, the logger passes ``level`` (info at least,
    for log files), and the libraries' progress bars follow :func:`progress_bars` as edulm's own do
    (:func:`library_progress_bars`); the logger's previous handlers and level are put back afterwards."""
    log = logger()
    before = (log.level, list(log.handlers))
    for handler in [h for h in log.handlers if isinstance(h, ConsoleHandler)]:
        log.removeHandler(handler)
    log.addHandler(ConsoleHandler(level))
    log.setLevel(min(level, NORMAL))
    try:
        with library_progress_bars(progress_bars()):
            yield
    finally:
        log.setLevel(before[0])
        for handler in list(log.handlers):
            if isinstance(handler, ConsoleHandler):
                log.removeHandler(handler)
        for handler in before[1]:
            if handler not in log.handlers:
                log.addHandler(handler)


class LogFileHandler(logging.FileHandler):
    """A log file, appended to, one timestamped line per record, flushed at once (``tail -f`` sees it).

    Writing it must never stop the work it records: when a write fails (a full disk), the console
    says so once and the file is left alone from then on.
    """

    def __init__(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        super().__init__(path, mode="a", encoding="utf-8")
        self.setFormatter(logging.Formatter(FILE_FORMAT, FILE_DATE_FORMAT))
        self.failed = False

    def emit(self, record: logging.LogRecord) -> None:
        """Append the record's line (nothing once a write has failed)."""
        if not self.failed:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        """One console warning instead of logging's traceback per line; then stop writing."""
        self._fail(sys.exc_info()[1])

    def close(self) -> None:
        """Close the file; a failure to write its last bytes is said (once), not raised."""
        try:
            super().close()
        except OSError as err:
            self._fail(err)

    def _fail(self, err: BaseException | None) -> None:
        if not self.failed:
            self.failed = True
            logger().warning("could not write %s (%s); the log file stops here, the work goes on", self.baseFilename, err)
