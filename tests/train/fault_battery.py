"""The fault battery's machinery: rows, how a command is run and judged, what "nothing lost" means, the report.

A row (registered with :func:`row` in ``test_fault_battery.py``) is one fault a user can meet: a
signal, a kill, a full disk, a damaged file, a second writer, bad input. Its function sets the
fault up, runs the command that meets it and returns that command's :class:`Outcome`; it also
checks, with the helpers here, that nothing was lost or left half-written (files compared
before and after, checkpoints intact, exact resumption). The test then judges every row alike:
the expected exit code, no traceback, exactly one error line on stderr holding the row's message
(none for a success), the expected warnings, and no temporary or lock file left anywhere in the
row's folder.

Print the table of rows with their results::

    python tests/train/fault_battery.py --report     # runs the battery, then prints the table

(a plain ``pytest`` run that includes the battery prints the same table at its end).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import re
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

HERE = Path(__file__).resolve().parent
BATTERY_FILE = "test_fault_battery.py"


@dataclass
class Outcome:
    """What a command did: its exit code and output (``code`` is -N for a process killed by signal N)."""

    code: int | None
    stdout: str = ""
    stderr: str = ""


@dataclass(frozen=True)
class Row:
    """One fault of the battery and what must come of it."""

    id: str
    """Short name (the pytest id)."""
    fault: str
    """The command or fault, as a user meets it."""
    promise: str
    """The guarantee it tests (see docs/reliability.md)."""
    exit: int
    """Expected exit code of the command that meets the fault."""
    message: str | None
    """A piece of the one error line on stderr; None: no error line at all."""
    warnings: tuple[str, ...]
    """Pieces of the warning lines expected on stderr, one line each, and no other warning."""
    run: Callable[..., Outcome] = field(compare=False, repr=False)
    """Sets the fault up, runs the command, checks that nothing was lost; returns the command's outcome."""


ROWS: list[Row] = []
"""Every row, in the order of the table."""


def row(id: str, fault: str, promise: str, exit: int, message: str | None = None,
        warnings: tuple[str, ...] = ()) -> Callable[[Callable[..., Outcome]], Callable[..., Outcome]]:
    """Register the decorated function as a row of the battery."""
    def register(run: Callable[..., Outcome]) -> Callable[..., Outcome]:
        assert all(r.id != id for r in ROWS), f"two rows named {id}"
        ROWS.append(Row(id, fault, promise, exit, message, warnings, run))
        return run
    return register


# ---------------------------------------------------------------------------------------------
# Running commands
# ---------------------------------------------------------------------------------------------


def run_in_process(*argv: str) -> Outcome:
    """``edulm ARGV`` in this process (no interpreter start-up): exit code, stdout, and stderr with the
    ``edulm`` logger's warnings in it, as a terminal would show them."""
    from edulm.cli import main

    out, err = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(err)
    handler.setLevel(logging.WARNING)
    logger = logging.getLogger("edulm")
    logger.addHandler(handler)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(argv))
            except SystemExit as stop:  # a run stopped by a signal exits 143 / 130
                code = stop.code
    finally:
        logger.removeHandler(handler)
    return Outcome(code, out.getvalue(), err.getvalue())


def finished(proc: subprocess.Popen, timeout: float = 300) -> Outcome:
    """Wait for a process started with text pipes and return its outcome."""
    out, err = proc.communicate(timeout=timeout)
    return Outcome(proc.returncode, out or "", err or "")


# ---------------------------------------------------------------------------------------------
# Judging output
# ---------------------------------------------------------------------------------------------


def stderr_lines(stderr: str) -> list[str]:
    """Non-empty lines of stderr (progress bars redraw with carriage returns: each redraw is a line)."""
    return [line.strip() for line in stderr.replace("\r", "\n").splitlines() if line.strip()]


def error_lines(stderr: str) -> list[str]:
    """Lines that report a failure: edulm's own (``edulm: ...``) but not its warnings and notes."""
    return [line for line in stderr_lines(stderr)
            if line.startswith("edulm:") and not line.startswith(("edulm: warning:", "edulm: note:"))]


def warning_lines(stderr: str) -> list[str]:
    """edulm's warning lines."""
    return [line for line in stderr_lines(stderr) if line.startswith("edulm: warning:")]


def judge(r: Row, outcome: Outcome) -> None:
    """The checks every row shares (see the module docstring); AssertionError naming what failed."""
    where = f"{r.id}: exit {outcome.code}, stderr:\n{outcome.stderr[-3000:]}"
    assert outcome.code == r.exit, where
    assert "Traceback" not in outcome.stderr and "terminate called" not in outcome.stderr, where
    errors = error_lines(outcome.stderr)
    if r.message is None:
        assert errors == [], where
    else:
        assert len(errors) == 1 and r.message in errors[0], where
    warnings = warning_lines(outcome.stderr)
    assert len(warnings) == len(r.warnings), where
    for piece in r.warnings:
        assert sum(piece in line for line in warnings) == 1, f"{where}\n(expected one warning with {piece!r})"


# ---------------------------------------------------------------------------------------------
# Nothing lost, nothing half-written
# ---------------------------------------------------------------------------------------------


def snapshot(folder: Path) -> dict[str, str]:
    """``{relative path: SHA-256}`` of every file under ``folder`` ({} when it does not exist)."""
    if not folder.exists():
        return {}
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


_LEFTOVER = re.compile(r"(\.tmp-|\.tmp$|\.lock$|^\.old-)")


def leftovers(folder: Path) -> list[str]:
    """Temporaries (of any naming edulm ever used) and lock files under ``folder``."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if _LEFTOVER.search(p.name))


def assert_checkpoints_intact(run_dir: Path) -> None:
    """Every checkpoint folder of the run passes its full check."""
    from edulm.checkpoint import folders as checkpoint

    for path in checkpoint.list_checkpoints(run_dir):
        assert checkpoint.verify(path) is None, f"{path}: {checkpoint.verify(path)}"


def losses(run_dir: Path) -> dict[int, tuple[float, float | None]]:
    """``{step: (loss, val_loss)}`` of a run's metrics CSV."""
    from edulm.base.metrics import read_metrics

    return {int(r["step"]): (r["loss"], r["val_loss"]) for r in read_metrics(run_dir / "training" / "training_metrics.csv")}


def assert_resumed_exactly(run_dir: Path, reference: Path) -> None:
    """The run's metrics and final weights are bit for bit the uninterrupted reference run's, and nothing is damaged."""
    assert losses(run_dir) == losses(reference)  # every step once, losses bitwise equal
    assert (run_dir / "final" / "model.safetensors").read_bytes() == (reference / "final" / "model.safetensors").read_bytes()
    assert_checkpoints_intact(run_dir)


@contextlib.contextmanager
def tmpfs(path: Path, size_kib: int, read_only: bool = False) -> Iterator[Path]:
    """A real tmpfs of ``size_kib`` mounted at ``path`` for the block (the test is skipped where mounting
    is not permitted: it needs root or CAP_SYS_ADMIN)."""
    import pytest

    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size_kib}k" + (",ro" if read_only else "")
    if shutil.which("mount") is None:
        pytest.skip("no mount command here (a full disk needs a small tmpfs)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, f"edulm-battery-{uuid.uuid4().hex[:6]}", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'mount failed'}); needs root or CAP_SYS_ADMIN")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(folder: Path, leave_bytes: int, name: str = "filler") -> Path:
    """Write a file into ``folder`` that leaves about ``leave_bytes`` free on its file system."""
    free = shutil.disk_usage(folder).free
    filler = folder / name
    with open(filler, "wb") as f:
        remaining = max(0, free - leave_bytes)
        while remaining > 0:
            chunk = min(remaining, 1 << 20)
            f.write(b"\0" * chunk)
            remaining -= chunk
    return filler


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------


def battery_results(stats: dict[str, list]) -> dict[str, str]:
    """``{row id: passed | failed | skipped}`` from pytest's terminal statistics."""
    results = {}
    for outcome in ("passed", "failed", "skipped", "error"):
        for report in stats.get(outcome, []):
            nodeid = getattr(report, "nodeid", "")
            match = re.search(rf"{re.escape(BATTERY_FILE)}::test_fault\[(.+)\]$", nodeid)
            if match and (outcome != "passed" or getattr(report, "when", "call") == "call"):
                results[match.group(1)] = "failed" if outcome == "error" else outcome
    return results


def report_table(results: dict[str, str]) -> str:
    """The battery as a Markdown table, with the counts: cases tried (run, not skipped) and cases clean."""
    shown = {"passed": "clean", "failed": "FAILED", "skipped": "skipped"}
    lines = ["| row | fault or command | guarantee | exit | result |", "| --- | --- | --- | --- | --- |"]
    for r in ROWS:
        if r.id in results:
            lines.append(f"| `{r.id}` | {r.fault} | {r.promise} | {r.exit} | {shown[results[r.id]]} |")
    tried = sum(1 for v in results.values() if v != "skipped")
    clean = sum(1 for v in results.values() if v == "passed")
    skipped = sum(1 for v in results.values() if v == "skipped")
    lines.append("")
    lines.append(f"fault battery: {tried} cases tried, {clean} clean" + (f", {skipped} skipped" if skipped else ""))
    return "\n".join(lines)


def print_report(terminalreporter) -> None:
    """``pytest_terminal_summary`` body: the table, when the battery ran."""
    results = battery_results(terminalreporter.stats)
    if results:
        terminalreporter.write_sep("=", "fault battery")
        terminalreporter.write_line(report_table(results))


def main(argv: list[str]) -> int:
    """``python tests/train/fault_battery.py --report [pytest options]``: run the battery and print its table."""
    import pytest

    if not argv or argv[0] != "--report":
        print(__doc__)
        return 2
    os.chdir(HERE.parents[1])
    return pytest.main([str(HERE / BATTERY_FILE), "-q", "-p", "no:cacheprovider", *argv[1:]])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
