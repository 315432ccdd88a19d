"""Append-only run-dir files of one row per step, which a resume cuts back to the checkpoint's step.

A run that resumes from the checkpoint of step S has already written rows past S before it stopped
(every step until a kill, or until the stop after the checkpoint): they describe steps that will be
trained again. :meth:`StepFile.open` keeps the rows of steps up to S (and drops a line cut short by a
crash), rewrites the file atomically, then appends, so the file holds every step once, as an
uninterrupted run's would. The metrics CSV (:class:`edulm.base.metrics.MetricsCSV`) and a callback's own
JSON-lines file are both one: only their :class:`RowFormat` differs.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Iterator, Protocol, TextIO

from edulm.base.files import atomic_path, disk_full_error, is_disk_full


class RowFormat(Protocol):
    """How a step file's rows are written and read back."""

    def header(self) -> str:
        """Text at the top of the file ('' for none)."""

    def line(self, row: dict[str, Any]) -> str:
        """One row as one line, newline included."""

    def complete_rows(self, text: str) -> Iterator[tuple[int, str]]:
        """``(step, line)`` of every complete row of a file's ``text`` (a line cut short by a crash is skipped)."""


class JsonLines:
    """One JSON object per line, each with an integer ``"step"``."""

    def header(self) -> str:
        return ""

    def line(self, row: dict[str, Any]) -> str:
        return json.dumps(row) + "\n"

    def complete_rows(self, text: str) -> Iterator[tuple[int, str]]:
        for line in text.splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a line cut short by a crash
            if isinstance(row, dict) and isinstance(row.get("step"), int):
                yield row["step"], f"{line}\n"


class CsvRows:
    """A CSV file with a header of ``columns`` (``step`` among them); kept rows are rewritten with these columns, so a
    file of an earlier version with other columns reads on."""

    def __init__(self, columns: list[str]) -> None:
        self.columns = columns

    def _text(self, rows: list[dict[str, Any]], header: bool) -> str:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=self.columns, lineterminator="\r\n")
        if header:
            writer.writeheader()
        writer.writerows(rows)
        return out.getvalue()

    def header(self) -> str:
        return self._text([], header=True)

    def line(self, row: dict[str, Any]) -> str:
        return self._text([{k: row.get(k, "") for k in self.columns}], header=False)

    def complete_rows(self, text: str) -> Iterator[tuple[int, str]]:
        for row in csv.DictReader(io.StringIO(text, newline="")):
            try:
                if None not in row.values():
                    yield int(row["step"]), self.line(row)
            except (KeyError, TypeError, ValueError):
                continue  # a line cut short by a crash


class StepFile:
    """``path``: rows of one step each in ``row_format`` (JSON lines by default); ``what`` names it in a full-disk line."""

    def __init__(self, path: str | Path, row_format: RowFormat | None = None, what: str | None = None) -> None:
        self.path = Path(path)
        self.format = row_format or JsonLines()
        self.what = what or self.path.name
        self._file: TextIO | None = None

    def open(self, resumed_step: int | None) -> "StepFile":
        """Keep the rows of steps up to ``resumed_step`` (None or 0 for a fresh run: none), then append after them."""
        kept = []
        if resumed_step and self.path.is_file():
            text = self.path.read_text(encoding="utf-8", errors="replace")
            kept = [line for step, line in self.format.complete_rows(text) if step <= resumed_step]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path, self.what) as tmp:
            tmp.write_text(self.format.header() + "".join(kept), encoding="utf-8", newline="")
        self._file = self.path.open("a", encoding="utf-8", newline="")
        return self

    def write(self, row: dict[str, Any]) -> None:
        """Append one row (it must hold its ``step``), flushed at once. A full disk is
        :class:`~edulm.base.errors.DiskFullError`; a row cut short by it is dropped on resume."""
        if self._file is None:
            raise RuntimeError(f"{self.path}: open() the step file before writing to it")
        try:
            self._file.write(self.format.line(row))
            self._file.flush()
        except OSError as err:
            if is_disk_full(err):
                raise disk_full_error(self.path.parent, self.what) from err
            raise

    def close(self) -> None:
        """Close the file (safe to call twice; a full disk was reported by :meth:`write` already, so closing then
        drops the unwritten rest of the row instead of raising a second time)."""
        if self._file is not None and not self._file.closed:
            try:
                self._file.close()
            except OSError as err:
                if not is_disk_full(err):
                    raise
        self._file = None
