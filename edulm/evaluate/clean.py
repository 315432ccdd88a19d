"""Contamination-aware scores: each task's score recomputed without the documents found in the training text.

``edulm contamination`` lists the contaminated documents of each task by number, the ``doc_id`` that
lm-eval gives each example in the samples files ``edulm eval`` and ``edulm baselines`` write. Joining
the two gives, per task and metric:

- the full score, recomputed from the samples (it equals lm-eval's own number);
- the clean-subset score: the same aggregation (lm-eval's, from the task's config) over the examples
  whose document was not flagged, with its standard error (for mean-aggregated metrics such as acc
  and acc_norm the closed form lm-eval uses, ``sample standard deviation / sqrt(n)``; for other
  aggregations, such as perplexity, none is computed);
- how many of the scored documents were flagged.

A task whose every scored document is flagged has no clean subset (its clean score is None).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from edulm.base.errors import UsageError
from edulm.evaluate.results import ModelScores


@dataclass(frozen=True)
class CleanScore:
    """One metric of one task, on all scored documents and on the clean ones."""

    metric: str
    """The lm-eval metric (acc, acc_norm, ...)."""
    full: float | None
    """Score over every scored document (lm-eval's number)."""
    full_stderr: float | None
    """lm-eval's standard error of the full score."""
    clean: float | None
    """Score over the documents that were not flagged; None when every one was."""
    clean_stderr: float | None
    """Standard error of the clean score (mean-aggregated metrics with at least two clean documents)."""
    documents: int
    """Documents scored."""
    flagged: int
    """Of those, how many the contamination report flagged."""

    def as_dict(self) -> dict[str, Any]:
        """The fields, and :attr:`moved`, as a JSON-ready mapping."""
        return {**asdict(self), "moved": self.moved}

    @property
    def moved(self) -> bool:
        """True when the clean score differs from the full score by more than the full score's standard error."""
        if self.clean is None or self.full is None or self.full_stderr is None:
            return False
        return abs(self.clean - self.full) > self.full_stderr


def _aggregation(results: ModelScores, task: str, metric: str) -> Callable[[list], float]:
    """The function lm-eval aggregated ``metric`` of ``task`` with: the task config's, else the metric's default."""
    from lm_eval.api import registry

    for entry in results.task_config(task).get("metric_list") or []:
        if isinstance(entry, dict) and entry.get("metric") == metric and isinstance(entry.get("aggregation"), str):
            found = registry.get_aggregation(entry["aggregation"])
            if found is not None:
                return found
    try:
        default = registry.get_metric_aggregation(metric)
    except (KeyError, ValueError):
        default = None
    return default if callable(default) else registry.get_aggregation("mean")  # lm-eval falls back to the mean too


def _stderr(aggregate: Callable[[list], float], values: list) -> float | None:
    """lm-eval's closed-form standard error for a mean of at least two values; None otherwise."""
    from lm_eval.api.metrics import mean, mean_stderr

    if aggregate is not mean or len(values) < 2:
        return None
    return float(mean_stderr(values))


def read_samples(path: Path) -> list[dict[str, Any]]:
    """The rows of a samples JSONL file."""
    from edulm.data.manifest import shape_problem

    rows = []
    try:
        with path.open(encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if line.strip():
                    rows.append(json.loads(line))
                    # lm-eval writes one mapping per example, numbered by doc_id: anything else is damage
                    problem = shape_problem(rows[-1], {"doc_id": int}, f"line {number}")
                    if problem:
                        raise ValueError(problem)
    except (OSError, ValueError) as err:
        raise UsageError(f"{path}: cannot read this samples file ({err}); re-run the evaluation") from None
    return rows


def task_clean_scores(results: ModelScores, task: str, flagged: set[int], metrics: list[str] | None = None) -> dict[str, CleanScore]:
    """``{metric: CleanScore}`` of one task; {} when its samples file is missing."""
    path = results.samples_file(task)
    if path is None:
        return {}
    rows = read_samples(path)
    reported = results.all_metrics.get(task, {})
    out = {}
    for metric in metrics or list(reported):
        value = reported.get(metric)
        filt = value.filter if value else "none"
        pairs = [(int(r["doc_id"]), r[metric]) for r in rows if r.get("filter", "none") == filt and metric in r]
        if not pairs:
            continue
        aggregate = _aggregation(results, task, metric)
        clean = [v for d, v in pairs if d not in flagged]
        out[metric] = CleanScore(
            metric=metric,
            full=float(aggregate([v for _, v in pairs])),
            full_stderr=value.stderr if value else None,
            clean=float(aggregate(clean)) if clean else None,
            clean_stderr=_stderr(aggregate, clean),
            documents=len(pairs),
            flagged=sum(1 for d, _ in pairs if d in flagged),
        )
    return out


def clean_scores(results: ModelScores, flags: dict[str, set[int]]) -> dict[str, dict[str, CleanScore]]:
    """``{task: {metric: CleanScore}}`` for every task of ``results`` that the contamination report covers."""
    out = {}
    for task in results.metrics:
        if task in flags:
            scores = task_clean_scores(results, task, flags[task])
            if scores:
                out[task] = scores
    return out


def read_flags(path: str | Path) -> dict[str, set[int]]:
    """The flagged documents of a ``contamination.json`` (see :func:`edulm.evaluate.contamination_report.flagged_documents`)."""
    from edulm.evaluate.contamination_report import flagged_documents

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such contamination report; pass the contamination.json of 'edulm contamination'")
    try:
        report = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise UsageError(f"{path}: not valid JSON ({err}); run 'edulm contamination' again") from None
    return flagged_documents(report if isinstance(report, dict) else {}, path)
