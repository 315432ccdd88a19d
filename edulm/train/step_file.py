"""An append-only JSON-lines file of the run dir with one object per step, as a callback keeps one.

A run that resumes from the checkpoint of step S has already written rows past S before it stopped
(every step until a kill, or until the stop after the checkpoint): they describe steps that will be
trained again. :meth:`StepFile.open` keeps the rows of steps up to S (and drops a line cut short by a
crash), rewrites the file atomically, then appends, so the file holds every step once, as an
uninterrupted run's would. The metrics CSV follows the same rule (:class:`edulm.base.metrics.MetricsCSV`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TextIO

from edulm.base.files import atomic_path, disk_full_error, is_disk_full


class StepFile:
    """``path``: JSON lines, each an object with an integer ``"step"``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file: TextIO | None = None

    def open(self, resumed_step: int) -> "StepFile":
        """Keep the rows of steps up to ``resumed_step`` (0 for a fresh run: none), then append after them."""
        kept = []
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    row = json.loads(line)
                except ValueError:
                    continue  # a line cut short by a crash
                if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= resumed_step:
                    kept.append(line)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path, self.path.name) as tmp:
            tmp.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")
        self._file = self.path.open("a", encoding="utf-8")
        return self

    def write(self, row: dict[str, Any]) -> None:
        """Append one row (it must hold its ``step``), flushed at once."""
        if self._file is None:
            raise RuntimeError(f"{self.path}: open() the step file before writing to it")
        try:
            self._file.write(json.dumps(row) + "\n")
            self._file.flush()
        except OSError as err:
            if is_disk_full(err):
                raise disk_full_error(self.path.parent, self.path.name) from err
            raise

    def close(self) -> None:
        """Close the file (safe to call twice)."""
        if self._file is not None:
            self._file.close()
            self._file = None
