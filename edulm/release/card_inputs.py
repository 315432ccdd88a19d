"""What the model card is built from: the run's artifacts, read once into :class:`CardInputs`.

Inputs: the run's ``config.yaml``, ``training/training_summary.json``, ``training/training_metrics.csv``
and plots; the results file of ``edulm eval`` (and the samples files beside it); the folder written
by ``edulm compare``; the ``contamination.json`` of ``edulm contamination``. Those last three default
to where ``edulm release`` writes them (``RUN_DIR/release/eval/results.json``,
``RUN_DIR/release/comparison/``, ``RUN_DIR/release/contamination/contamination.json``) when present.
With both an eval results file and a contamination report, every score is also recomputed without
the contaminated documents (:mod:`edulm.evaluate.clean`). Missing artifacts are None; damaged ones
are one-line errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edulm.evaluate.contamination_report import REPORT_JSON
from edulm.base.errors import UsageError
from edulm.evaluate import artifacts
from edulm.evaluate.compare import COMPARISON_JSON
from edulm.evaluate.compare_report import comparison_problem
from edulm.base.files import sha256_file
from edulm.base.layout import RunLayout

if TYPE_CHECKING:
    from edulm.evaluate.clean import CleanScore
    from edulm.evaluate.results import ModelScores

@dataclass
class CardInputs:
    """Everything the card is built from (None / empty where an artifact is missing)."""

    run_dir: Path
    """The run directory."""
    out: Path
    """Where the card is written."""
    name: str
    """The model's name on the card."""
    license: str
    """License id for the metadata."""
    config: dict[str, Any]
    """The run's resolved config, as a plain mapping."""
    summary: dict[str, Any] | None = None
    """``training/training_summary.json``."""
    validation: dict[str, Any] | None = None
    """Last validation row of the metrics CSV: step, val_loss, val_ppl, val_bpb."""
    parameters: int | None = None
    """Exact parameter count."""
    results: "ModelScores | None" = None
    """The eval results, read (every metric with its standard error)."""
    comparison: dict[str, Any] | None = None
    """``comparison.json`` of ``edulm compare``."""
    contamination: dict[str, Any] | None = None
    """``contamination.json`` of ``edulm contamination``."""
    clean: dict[str, dict[str, "CleanScore"]] = field(default_factory=dict)
    """task -> metric -> full and clean-subset score (eval results joined with the contamination flags)."""
    plots: list[str] = field(default_factory=list)
    """File names of the plots copied beside the card."""
    sources: dict[str, str] = field(default_factory=dict)
    """Artifact -> the path it was read from."""
    gguf: list[dict[str, Any]] = field(default_factory=list)
    """The GGUF files beside ``final/`` (``edulm release --gguf``): file name, type, bytes, SHA-256."""

    @property
    def evaluation(self) -> dict[str, Any] | None:
        """The eval results document (None without eval results)."""
        return self.results.document if self.results is not None else None

    @property
    def scores(self) -> dict[str, dict[str, Any]]:
        """task -> {metric, value, stderr} of the protocol metric (empty without eval results)."""
        if self.results is None:
            return {}
        return {task: {"metric": self.results.metrics[task], "value": value, "stderr": self.results.stderr(task)}
                for task, value in self.results.scores.items()}

    def flagged(self, task: str) -> tuple[int, int] | None:
        """``(contaminated, documents)`` of ``task``: among its scored documents when the scores were joined with
        the flags, else the audit's own counts; None when the task was not audited."""
        metric = self.scores.get(task, {}).get("metric")
        joined = self.clean.get(task, {}).get(metric) if metric else None
        if joined is not None:
            return joined.flagged, joined.documents
        entry = ((self.contamination or {}).get("tasks") or {}).get(task)
        if isinstance(entry, dict) and isinstance(entry.get("contaminated"), int):
            return entry["contaminated"], int(entry.get("documents") or 0)
        return None


def _parameters(config: dict[str, Any], summary: dict[str, Any] | None, evaluation: dict[str, Any] | None) -> int | None:
    """Exact parameter count: the training summary's, else computed from the run's model config."""
    if summary and isinstance(summary.get("parameters"), int):
        return summary["parameters"]
    import dataclasses

    from edulm.config import ModelConfig
    from edulm.model.llama import count_parameters

    # Only the model section matters here, so a config that no longer validates still gives its count.
    section = config.get("model") if isinstance(config.get("model"), dict) else {}
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    try:
        return count_parameters(ModelConfig(**{k: v for k, v in section.items() if k in known}))
    except (TypeError, ValueError, ZeroDivisionError):
        model = (evaluation or {}).get("model") or {}
        return model.get("parameters") if isinstance(model, dict) else None


def _optional(path: str | Path | None, default: Path, what: str) -> Path | None:
    """The artifact path given, else the default one when it exists; a given path must exist."""
    if path is not None:
        if not Path(path).exists():
            raise UsageError(f"{path}: no such {what}; check the path or leave the option out")
        return Path(path)
    return default if default.exists() else None


def _read_evaluation(inputs: CardInputs, eval_file: Path) -> None:
    from edulm.evaluate.results import read_results

    inputs.results = read_results(eval_file)
    inputs.sources["evaluation"] = str(eval_file)


def _join_contamination(inputs: CardInputs) -> None:
    """Clean-subset scores of the eval results, when both they and the contamination flags are there."""
    from edulm.evaluate.contamination_report import flagged_documents
    from edulm.evaluate.clean import clean_scores

    if inputs.results is None or inputs.contamination is None:
        return
    inputs.clean = clean_scores(inputs.results, flagged_documents(inputs.contamination, inputs.sources["contamination"]))


def gather(run_dir: str | Path, out: str | Path, *, eval_path: str | Path | None = None, comparison: str | Path | None = None,
           contamination: str | Path | None = None, name: str | None = None, license: str = "apache-2.0",
           evaluation: bool = True) -> CardInputs:
    """Read every artifact the card uses (tolerant of missing ones, strict about damaged ones).

    ``evaluation=False`` reads the training artifacts only: no eval results, comparison or
    contamination report, not even the default ones (the card written at the end of training, when
    any ``release/`` outputs describe earlier weights).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UsageError(f"{run_dir}: no such run directory; pass the run.out_dir of a training run")
    config = artifacts.run_config(run_dir)
    if config is None:
        raise UsageError(f"{run_dir}: has no config.yaml, so it is not a run directory; pass the run.out_dir of a training run")
    summary = artifacts.training_summary(run_dir)
    inputs = CardInputs(run_dir, Path(out), name or (config.get("run") or {}).get("name") or run_dir.name, license,
                        config, summary, artifacts.last_validation(artifacts.metrics_rows(run_dir)))
    if summary is not None:
        inputs.sources["training summary"] = str(RunLayout.of(run_dir).summary)
    if not evaluation:
        inputs.parameters = _parameters(config, summary, None)
        return inputs

    for path in RunLayout.of(run_dir).gguf_files():
        inputs.gguf.append({"file": path.name, "dtype": path.stem.rpartition("-")[2], "bytes": path.stat().st_size,
                            "sha256": sha256_file(path)})
    eval_file = _optional(eval_path, RunLayout.of(run_dir).eval_results, "eval results file")
    if eval_file is not None:
        _read_evaluation(inputs, eval_file)
    comparison_dir = _optional(comparison, RunLayout.of(run_dir).comparison, "comparison folder")
    if comparison_dir is not None:
        comparison_file = comparison_dir / COMPARISON_JSON if comparison_dir.is_dir() else comparison_dir
        inputs.comparison = artifacts.read_json(comparison_file, "comparison file")
        if inputs.comparison is None:
            raise UsageError(f"{comparison_dir}: holds no {COMPARISON_JSON}; pass the --out folder of edulm compare")
        problem = comparison_problem(inputs.comparison)
        if problem:
            raise UsageError(f"{comparison_file}: damaged comparison file ({problem}); run 'edulm compare' again")
        inputs.sources["comparison"] = str(comparison_file)
    contamination_file = _optional(contamination, RunLayout.of(run_dir).contamination / REPORT_JSON,
                                   "contamination report")
    if contamination_file is not None:
        inputs.contamination = artifacts.read_json(contamination_file, "contamination report")
        inputs.sources["contamination"] = str(contamination_file)
    _join_contamination(inputs)
    inputs.parameters = _parameters(config, summary, inputs.evaluation)
    return inputs
