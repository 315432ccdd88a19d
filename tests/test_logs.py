"""The edulm logger: what the console shows at each verbosity, the global flags, a log file that cannot be written."""

from __future__ import annotations

import io
import logging
import sys

import pytest

from edulm.cli import build_parser, main
from edulm.base.logs import NORMAL, QUIET, VERBOSE, LogFileHandler, console_logging, console_level, logger, progress_bars
from edulm.train.console import progress_display


def say_everything(name: str = "edulm.somewhere") -> None:
    log = logging.getLogger(name)
    log.debug("a debug line")
    log.info("an info line")
    log.info("a file-only line", extra={"console": False})
    log.warning("a warning line")


@pytest.mark.parametrize("level, out, err", [
    (NORMAL, ["an info line"], ["edulm: warning: a warning line"]),
    (QUIET, [], ["edulm: warning: a warning line"]),
    (VERBOSE, ["edulm: debug: a debug line", "an info line"], ["edulm: warning: a warning line"]),
])
def test_console_levels_and_streams(level, out, err, capsys):
    with console_logging(level):
        assert console_level() == level
        say_everything()
    captured = capsys.readouterr()
    assert captured.out.splitlines() == out and captured.err.splitlines() == err


def test_the_console_setting_is_undone_after_a_command(capsys):
    before = (logger().level, list(logger().handlers))
    with console_logging(QUIET):
        pass
    assert (logger().level, list(logger().handlers)) == before


@pytest.mark.parametrize("argv, quiet, verbose", [
    (["--quiet", "info"], True, False),
    (["info", "--quiet"], True, False),
    (["info", "x.yaml", "--verbose"], False, True),
    (["tokenizer", "train", "--out", "t", "--verbose"], False, True),
    (["info"], False, False),
])
def test_quiet_and_verbose_before_or_after_the_command(argv, quiet, verbose):
    args = build_parser().parse_args(argv)
    assert (args.quiet, args.verbose) == (quiet, verbose)


def test_quiet_and_verbose_together_are_one_line_exit_2(capsys):
    assert main(["--quiet", "info", "configs/smoke.yaml", "--verbose"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--quiet and --verbose" in err


def test_a_log_file_that_cannot_be_written_is_said_once_and_then_left_alone(capsys):
    handler = LogFileHandler("/dev/full")  # every write fails with "no space left on device"
    with console_logging(NORMAL):
        logger().addHandler(handler)
        try:
            say_everything()
            say_everything()
        finally:
            logger().removeHandler(handler)
            handler.close()
    err = capsys.readouterr().err.splitlines()
    failures = [line for line in err if "could not write /dev/full" in line]
    assert len(failures) == 1 and "No space left on device" in failures[0]
    assert err.count("edulm: warning: a warning line") == 2  # the work (and its console) goes on


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("stderr_tty, stdout_tty, level, bars, display", [
    (True, True, NORMAL, True, (True, False)),     # a terminal: the bar, no plain lines
    (True, False, NORMAL, True, (True, True)),     # stdout to a file: the bar and plain lines there
    (False, True, NORMAL, False, (False, True)),   # stderr to a file: no carriage returns in it
    (False, False, NORMAL, False, (False, True)),  # SLURM, nohup: plain lines only
    (True, True, QUIET, False, (False, False)),    # --quiet: neither
])
def test_progress_bars_only_at_a_terminal_and_never_with_quiet(monkeypatch, stderr_tty, stdout_tty, level, bars,
                                                               display):
    monkeypatch.setattr(sys, "stderr", _Terminal() if stderr_tty else io.StringIO())
    monkeypatch.setattr(sys, "stdout", _Terminal() if stdout_tty else io.StringIO())
    with console_logging(level):
        assert progress_bars() is bars
        assert progress_display() == display


class WriteRecorder(io.StringIO):
    """A stream that keeps each write call apart, as an unbuffered pipe shared by several ranks would see them."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        if text:
            self.writes.append(text)
        return super().write(text)


def test_every_console_line_and_error_line_is_one_write(monkeypatch):
    """Ranks of one job share stderr; a line written in two pieces (text, then newline) interleaves with another
    rank's under PYTHONUNBUFFERED. Warnings, info lines and the command line's error line are each one write."""
    err, out = WriteRecorder(), WriteRecorder()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(sys, "stdout", out)
    with console_logging(NORMAL):
        say_everything()
    assert main(["train", "/nonexistent/config.yaml"]) == 2
    assert out.writes == ["an info line\n"]
    assert err.writes[0] == "edulm: warning: a warning line\n"
    assert len(err.writes) == 2 and err.writes[1].startswith("edulm: error: ") and err.writes[1].endswith("\n")
    assert err.writes[1].count("\n") == 1


def test_library_progress_bars_off_for_a_block_then_as_before():
    """lm-eval, datasets and transformers draw tqdm bars of their own (some created inside functions, some
    subclasses): off for the block when bars are not wanted, untouched when they are, and as before afterwards."""
    from tqdm import std
    from tqdm.auto import tqdm as auto_tqdm

    from edulm.base.logs import library_progress_bars

    before = std.tqdm.__dict__["__init__"]
    with library_progress_bars(show=False):
        from tqdm import tqdm as imported_inside  # as lm-eval's bootstrap does

        assert imported_inside(range(3), file=io.StringIO()).disable
        assert auto_tqdm(range(3), file=io.StringIO()).disable  # datasets' bars subclass tqdm.auto
    with library_progress_bars(show=True):
        assert not std.tqdm(range(3), file=io.StringIO()).disable
    assert std.tqdm.__dict__["__init__"] is before
    assert not std.tqdm(range(3), file=io.StringIO()).disable
