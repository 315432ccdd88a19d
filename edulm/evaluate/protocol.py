"""The evaluation protocol shared by ``eval``, ``baselines``, ``compare``, ``contamination`` and the card.

The reference protocol is zero-shot lm-evaluation-harness on six tasks, each scored by one
reference metric (length-normalised accuracy where the harness reports one that the field quotes,
plain accuracy otherwise), with the harness's seeds fixed as its own command line fixes them.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, NamedTuple

from edulm.base.errors import UsageError
from edulm.base.layout import FINAL_DIR

REFERENCE_METRICS: dict[str, str] = {
    "arc_challenge": "acc_norm",
    "arc_easy": "acc_norm",
    "hellaswag": "acc_norm",
    "lambada_openai": "acc",
    "piqa": "acc_norm",
    "winogrande": "acc",
}
"""Task -> the metric quoted for it (and compared between models)."""

REFERENCE_TASKS: list[str] = list(REFERENCE_METRICS)
"""The six tasks evaluated by default."""

NUM_FEWSHOT = 0
"""Every task is run zero-shot."""

SEEDS: dict[str, int] = {
    "random_seed": 0,
    "numpy_random_seed": 1234,
    "torch_random_seed": 1234,
    "fewshot_random_seed": 1234,
}
"""Seeds passed to ``lm_eval.simple_evaluate`` (the harness's command-line defaults)."""

METRIC_PREFERENCE = ("acc_norm", "acc", "exact_match", "f1", "mcc")
"""For tasks outside the reference map: the first of these the task reports is its reference metric."""

SIDE_BY_SIDE = ("acc_norm", "acc")
"""Metrics shown next to each other for a task that reports both (they differ widely on HellaSwag)."""

RESULTS_FORMAT = "edulm-eval-results"
"""Value of the ``format`` key of a results file written by ``edulm eval`` / ``edulm baselines``."""


def parse_tasks(text: str | None) -> list[str]:
    """``--tasks a,b`` as a list (default: the reference six); rejects an empty list."""
    if text is None:
        return list(REFERENCE_TASKS)
    tasks = [t.strip() for t in text.split(",") if t.strip()]
    if not tasks:
        raise UsageError("--tasks is empty; name one or more lm-eval tasks, e.g. --tasks arc_easy,piqa")
    return tasks


def parse_limit(limit: float | None) -> int | float | None:
    """``--limit``: an example count (whole number >= 1) or a fraction in (0, 1)."""
    if limit is None:
        return None
    if not (math.isfinite(limit) and limit > 0):
        raise UsageError(f"--limit must be a positive number, got {limit}; use a count such as 100 or a fraction such as 0.1")
    if limit >= 1:
        if not float(limit).is_integer():
            raise UsageError(f"--limit {limit}: a count must be a whole number (fractions must be below 1)")
        return int(limit)
    return float(limit)


class MetricValue(NamedTuple):
    """One metric of one task as lm-eval reports it."""

    value: float | None
    """The aggregated score (None when lm-eval reported no number)."""
    stderr: float | None
    """Its standard error (None when lm-eval reported ``N/A``)."""
    filter: str
    """The lm-eval filter it was computed under (``none`` for most tasks)."""


def _number(value: Any) -> float | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def metric_values(task_results: dict[str, Any]) -> dict[str, MetricValue]:
    """``{metric: MetricValue}`` from one task's lm-eval results row (keys ``metric,filter``; the first filter wins)."""
    out: dict[str, MetricValue] = {}
    for key, value in task_results.items():
        if "," not in key or "_stderr," in key:
            continue
        metric, _, filt = key.partition(",")
        stderr = task_results.get(f"{metric}_stderr,{filt}")
        out.setdefault(metric, MetricValue(_number(value), _number(stderr), filt))
    return out


def reference_metric(task: str, available: list[str]) -> str | None:
    """The metric a task is scored by: the reference map's, else the first of :data:`METRIC_PREFERENCE`, else the first reported."""
    if task in REFERENCE_METRICS and REFERENCE_METRICS[task] in available:
        return REFERENCE_METRICS[task]
    for metric in METRIC_PREFERENCE:
        if metric in available:
            return metric
    return available[0] if available else None


def shown_metrics(protocol_metric: str, available: list[str]) -> list[str]:
    """The metrics to show for a task: its protocol metric first, then the other of :data:`SIDE_BY_SIDE` if reported."""
    shown = [protocol_metric]
    if protocol_metric in SIDE_BY_SIDE:
        shown += [m for m in SIDE_BY_SIDE if m != protocol_metric and m in available]
    return shown


def safe_name(model: str) -> str:
    """A file name for a model id or folder: ``facebook/opt-125m`` -> ``facebook__opt-125m``."""
    path = Path(model)
    text = path.resolve().name if path.exists() else model.strip("/")
    if text == FINAL_DIR and path.exists():  # an exported run folder: name it after its run
        text = path.resolve().parent.name
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text.replace("/", "__")) or "model"

