"""Reading evaluation results: every metric of every task with its standard error, and the protocol's metric.

A results file is the JSON ``edulm eval`` and ``edulm baselines`` write (``format: edulm-eval-results``),
or lm-eval's own results JSON. Both carry lm-eval's ``results`` block (``metric,filter`` keys with
``metric_stderr,filter`` beside them); edulm's also carries ``scores`` (each task's protocol metric)
and the per-example samples files written beside it. :func:`read_results` turns either into
:class:`ModelScores`, the one reader that ``compare``, the contamination-aware scores and the card use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edulm.data.manifest import shape_problem
from edulm.base.errors import UsageError
from edulm.evaluate.protocol import RESULTS_FORMAT, MetricValue, metric_values, reference_metric


def scores_from_results(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{task: {metric, value, stderr, filter, higher_is_better, n_samples, metrics}}`` from raw lm-eval results.

    ``metric`` is the task's protocol metric (:func:`~edulm.evaluate.protocol.reference_metric`);
    ``metrics`` holds every metric's value.
    """
    higher = results.get("higher_is_better", {})
    n_samples = results.get("n-samples", {})
    scores = {}
    for task, row in results.get("results", {}).items():
        values = metric_values(row)
        metric = reference_metric(task, list(values))
        if metric is None:
            continue
        scores[task] = {
            "metric": metric,
            "value": values[metric].value,
            "stderr": values[metric].stderr,
            "filter": values[metric].filter,
            "higher_is_better": higher.get(task, {}).get(metric, True),
            "n_samples": (n_samples.get(task) or {}).get("effective"),
            "metrics": {m: v.value for m, v in values.items()},
        }
    return scores


@dataclass
class ModelScores:
    """One model's results: the protocol metric of each task, and every metric with its standard error."""

    name: str
    """Model name (run name, folder name, hub id, or the NAME of a ``NAME=PATH`` baseline)."""
    file: str
    """The results file it was read from."""
    scores: dict[str, float]
    """Task -> value of its protocol metric."""
    metrics: dict[str, str]
    """Task -> its protocol metric."""
    higher_is_better: dict[str, bool]
    """Task -> whether a higher protocol-metric value is better."""
    protocol: dict[str, Any]
    """The ``protocol`` record of the results file (tasks, few-shot, limit, seeds, ...)."""
    parameters: int | None = None
    """Parameter count, when recorded."""
    training_tokens: int | None = None
    """Training tokens, when the model is an edulm run or checkpoint whose records know them."""
    stderrs: dict[str, float | None] = field(default_factory=dict)
    """Task -> standard error of its protocol metric (None when lm-eval gave none)."""
    all_metrics: dict[str, dict[str, MetricValue]] = field(default_factory=dict)
    """Task -> every metric lm-eval reported for it."""
    model_path: str | None = None
    """The folder (or hub id) that was evaluated, for scoring the same model again (bits per byte)."""
    document: dict[str, Any] = field(default_factory=dict)
    """The whole results document, for readers that need more (task configs, samples files)."""

    def stderr(self, task: str, metric: str | None = None) -> float | None:
        """Standard error of ``metric`` (default: the protocol metric) on ``task``."""
        if metric is None or metric == self.metrics.get(task):
            return self.stderrs.get(task)
        value = self.all_metrics.get(task, {}).get(metric)
        return value.stderr if value else None

    def task_config(self, task: str) -> dict[str, Any]:
        """lm-eval's config of ``task`` (under ``lm_eval`` in edulm's results file, at the top level in
        lm-eval's own output); empty when not recorded."""
        configs = (self.document.get("lm_eval") or {}).get("configs") or self.document.get("configs") or {}
        return configs.get(task) or {}

    def samples_file(self, task: str) -> Path | None:
        """The per-example samples file of ``task`` written beside the results file, if it exists."""
        files = self.document.get("samples_files") or {}
        name = files.get(task) if isinstance(files, dict) else None
        if not isinstance(name, str):
            return None
        path = Path(self.file).parent / name
        return path if path.is_file() else None


def _pretrained(model_args: Any) -> str | None:
    """The ``pretrained`` model of lm-eval's ``model_args`` (a dict or a ``k=v,k=v`` string)."""
    if isinstance(model_args, dict):
        return model_args.get("pretrained")
    if isinstance(model_args, str):
        for part in model_args.split(","):
            key, _, value = part.partition("=")
            if key.strip() == "pretrained":
                return value.strip()
    return None


DOCUMENT_PARTS = {"scores": dict, "results": dict, "protocol": dict, "model": dict, "config": dict, "runtime": dict,
                  "samples_files": dict}
"""The parts of a results document that readers look into, when present, and what each must be."""


def document_problem(doc: dict[str, Any]) -> str | None:
    """What makes a parsed results document unusable (a part of the wrong shape, a score without its metric), or None."""
    for key, shape in DOCUMENT_PARTS.items():
        problem = shape_problem(doc[key], shape, key) if key in doc else None
        if problem:
            return problem
    for task, score in (doc.get("scores") or {}).items():
        problem = shape_problem(score, {"metric": str}, f"scores['{task}']")
        if problem:
            return problem
    for task, row in (doc.get("results") or {}).items():
        problem = shape_problem(row, dict, f"results['{task}']")
        if problem:
            return problem
    return None


def read_document(path: str | Path) -> dict[str, Any]:
    """The JSON object of a results file, or a one-line :class:`UsageError` saying what is wrong with it."""
    path = Path(path)
    if path.is_dir():  # `edulm compare BASELINES_DIR CANDIDATE`: the two swapped
        raise UsageError(f"{path}: is a folder, not a results file; pass the JSON written by 'edulm eval --out' "
                         "(edulm compare takes the candidate's file first, then the baselines' folder)")
    if not path.is_file():
        raise UsageError(f"{path}: no such results file; pass the JSON written by 'edulm eval --out'")
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UsageError(f"{path}: not valid JSON ({err}); re-run the evaluation") from None
    if not isinstance(doc, dict) or ("scores" not in doc and "results" not in doc):
        raise UsageError(f"{path}: not an evaluation results file (no 'scores' or 'results'); pass edulm eval output")
    problem = document_problem(doc)
    if problem:  # a damaged or hand-edited file: say so here, not with a traceback deep in compare or the card
        raise UsageError(f"{path}: damaged results file ({problem}); re-run the evaluation that wrote it")
    return doc


def _all_metrics(doc: dict[str, Any], scores: dict[str, Any]) -> dict[str, dict[str, MetricValue]]:
    """Every metric of every task: from lm-eval's ``results`` block, else from the protocol scores alone."""
    block = doc.get("results") if isinstance(doc.get("results"), dict) else {}
    out = {task: metric_values(row) for task, row in block.items() if isinstance(row, dict)}
    for task, s in scores.items():
        if task not in out and isinstance(s, dict) and s.get("metric"):
            out[task] = {s["metric"]: MetricValue(s.get("value"), s.get("stderr"), s.get("filter") or "none")}
    return out


def read_results(path: str | Path) -> ModelScores:
    """Read a results file of ``edulm eval`` / ``edulm baselines`` (or a plain lm-eval results JSON)."""
    doc = read_document(path)
    scores = doc.get("scores") if doc.get("format") == RESULTS_FORMAT else scores_from_results(doc)
    scores = {t: s for t, s in (scores or {}).items() if isinstance(s, dict)}
    model = doc.get("model") if isinstance(doc.get("model"), dict) else {}
    config = doc.get("config") if isinstance(doc.get("config"), dict) else {}
    pretrained = _pretrained(config.get("model_args"))
    name = model.get("name") or pretrained or Path(path).stem
    numeric = {t: s for t, s in scores.items() if isinstance(s.get("value"), (int, float))}
    return ModelScores(
        name=str(name),
        file=str(path),
        scores={t: float(s["value"]) for t, s in numeric.items()},
        metrics={t: s["metric"] for t, s in scores.items()},
        higher_is_better={t: bool(s.get("higher_is_better", True)) for t, s in scores.items()},
        protocol=doc.get("protocol", {}),
        parameters=model.get("parameters") or config.get("model_num_parameters"),
        training_tokens=model.get("training_tokens"),
        stderrs={t: s.get("stderr") if isinstance(s.get("stderr"), (int, float)) else None for t, s in scores.items()},
        all_metrics=_all_metrics(doc, scores),
        model_path=model.get("path") or pretrained,
        document=doc,
    )
