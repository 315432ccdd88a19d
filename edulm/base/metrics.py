"""The metrics a run records: the columns of ``training_metrics.csv``, its writer and reader, and
perplexity from a loss (no torch: readers such as the model card import it cheaply).

Columns (what the numbers mean is defined once, in :mod:`edulm.train.throughput` for speed and memory):

- ``step``, ``tokens``: optimizer steps done and training tokens seen (all processes).
- ``loss``: mean training loss of the step; ``grad_norm``: global gradient norm before clipping;
  ``lr``: the learning rate of the base parameter groups (``train.lr`` times the schedule).
- ``tokens_per_s``, ``mfu``, ``memory``: see :mod:`edulm.train.throughput`.
- ``elapsed``: seconds of wall time since the run started, summed over resumed segments.
- ``val_loss``, ``val_ppl``, ``val_bpb``: held-out loss, its perplexity and its bits per byte (the summed
  loss in bits over the UTF-8 bytes of the scored tokens, :mod:`edulm.evaluate.bits_per_byte`), on evaluation
  rows only.
- ``skipped``: steps skipped so far for a non-finite loss.

A run may add its own columns after these (``extra_columns``): ``downstream/TASK/METRIC`` and their standard
errors for ``train.downstream`` (:mod:`edulm.evaluate.in_loop`).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from edulm.base.step_file import CsvRows, StepFile

CSV_COLUMNS = [
    "step", "tokens", "loss", "lr", "grad_norm", "tokens_per_s", "mfu", "memory", "elapsed",
    "val_loss", "val_ppl", "val_bpb", "skipped",
]
"""Columns of ``training_metrics.csv``, in order."""


def perplexity(loss: float) -> float:
    """exp(loss), or inf when it overflows."""
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf


class MetricsCSV:
    """``training_metrics.csv``: one row per logged step, appended and flushed as it is written.

    On resume the file is cut back to the rows at or before the checkpoint's step (a
    :class:`~edulm.base.step_file.StepFile`), so the rows a crashed run wrote after its last checkpoint are not
    repeated when those steps run again.
    """

    def __init__(self, path: str | Path, resume_step: int | None = None, extra_columns: list[str] | None = None) -> None:
        self.path = Path(path)
        # Extra columns: the run's own, e.g. its downstream scores. A resumed file keeps the ones it has, so the
        # scores of tasks a resume no longer asks for stay in the rows before it.
        kept = _extra_columns(self.path) if resume_step else []
        self.columns = CSV_COLUMNS + kept + [c for c in extra_columns or [] if c not in kept]
        self._file = StepFile(self.path, CsvRows(self.columns), "the metrics CSV").open(resume_step)

    def write(self, row: dict[str, Any]) -> None:
        """Append one row (missing columns and None are left empty, other keys ignored; floats keep full precision).

        A full disk is :class:`~edulm.base.errors.DiskFullError`; a row cut short by it is dropped on resume.
        """
        self._file.write({k: _cell(row.get(k)) for k in self.columns})

    def close(self) -> None:
        """Flush and close the file."""
        self._file.close()


def _extra_columns(path: Path) -> list[str]:
    """The columns of the file's header beyond :data:`CSV_COLUMNS` (none for a missing or empty file)."""
    try:
        with path.open(newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), [])
    except FileNotFoundError:
        return []
    return [c for c in header if c not in CSV_COLUMNS]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)  # shortest text that reads back to the same float
    return str(value)


def read_metrics(path: str | Path, finite_only: bool = False) -> list[dict[str, float | None]]:
    """Rows of a metrics CSV as numbers: empty cells, and cells a crash cut short, become None.

    ``finite_only`` also turns NaN and infinite values (the loss of a diverged step) into None, for
    readers that report a figure rather than plot a curve.
    """

    def number(text: str | None) -> float | None:
        try:
            value = float(text) if text not in (None, "") else None
        except ValueError:
            return None
        return None if value is None or (finite_only and not math.isfinite(value)) else value

    with Path(path).open(newline="") as f:
        return [{k: number(v) for k, v in row.items() if k is not None} for row in csv.DictReader(f)]
