"""``edulm card RUN_DIR --out README.md``: the model card, built only from the run's artifacts.

Inputs: the run's ``config.yaml``, ``training/training_summary.json``, ``training/training_metrics.csv``
and plots; the results file of ``edulm eval``; the folder written by ``edulm compare``; the
``contamination.json`` of ``edulm contamination``. Those last three default to ``RUN_DIR/eval/results.json``,
``RUN_DIR/comparison/`` and ``RUN_DIR/contamination/contamination.json`` when present. Whatever is
missing is stated as not run or not recorded; no number on the card comes from anywhere else.

The card opens with Hugging Face metadata (license, library_name, datasets, pipeline_tag, tags and a
``model-index`` with the evaluation results) written by ``huggingface_hub.ModelCardData``, so the hub
and ``huggingface_hub.ModelCard`` read it back. The markdown body is in :mod:`edulm.card_sections`.
"""

from __future__ import annotations

import argparse
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edulm.errors import UsageError

DEFAULT_EVAL = Path("eval") / "results.json"
DEFAULT_COMPARISON = Path("comparison")
DEFAULT_CONTAMINATION = Path("contamination") / "contamination.json"
COMPARISON_FILE = "comparison.json"

TASK_DATASETS: dict[str, dict[str, str | None]] = {
    # Where each reference task's documents come from (the task YAMLs of lm-evaluation-harness 0.4).
    "arc_challenge": {"name": "ARC-Challenge", "type": "allenai/ai2_arc", "config": "ARC-Challenge", "split": "test"},
    "arc_easy": {"name": "ARC-Easy", "type": "allenai/ai2_arc", "config": "ARC-Easy", "split": "test"},
    "hellaswag": {"name": "HellaSwag", "type": "Rowan/hellaswag", "config": None, "split": "validation"},
    "lambada_openai": {"name": "LAMBADA (OpenAI)", "type": "EleutherAI/lambada_openai", "config": "default", "split": "test"},
    "piqa": {"name": "PIQA", "type": "baber/piqa", "config": None, "split": "validation"},
    "winogrande": {"name": "WinoGrande", "type": "allenai/winogrande", "config": "winogrande_xl", "split": "validation"},
}
"""Dataset fields of the ``model-index`` entries of the reference tasks."""

BASE_TAGS = ["llama", "text-generation", "pretraining", "edulm"]

HARNESS_URL = "https://github.com/EleutherAI/lm-evaluation-harness"
"""Where the evaluation results come from (the hub asks for a source URL with a source name)."""


@dataclass
class CardInputs:
    """Everything the card is built from (None / empty where an artifact is missing)."""

    run_dir: Path
    out: Path
    name: str
    license: str
    config: dict[str, Any]
    summary: dict[str, Any] | None = None
    validation: dict[str, Any] | None = None
    """Last validation row of the metrics CSV: step, val_loss, val_ppl."""
    parameters: int | None = None
    evaluation: dict[str, Any] | None = None
    scores: dict[str, dict[str, Any]] = field(default_factory=dict)
    """task -> {metric, value, stderr} from the eval results."""
    comparison: dict[str, Any] | None = None
    contamination: dict[str, Any] | None = None
    plots: list[str] = field(default_factory=list)
    """File names of the plots copied beside the card."""
    sources: dict[str, str] = field(default_factory=dict)
    """Artifact -> the path it was read from."""


def eval_scores(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{task: {metric, value, stderr}}`` from an ``edulm eval`` results file (or a raw lm-eval results file)."""
    from edulm.evaluate.harness import scores_from_results

    # lm-eval's own output has no "scores": pick each task's reference metric as edulm eval does.
    found = results["scores"] if isinstance(results.get("scores"), dict) else scores_from_results(results)
    scores = {}
    for task, s in found.items():
        if isinstance(s, dict) and isinstance(s.get("value"), (int, float)):
            scores[task] = {"metric": s.get("metric"), "value": s["value"], "stderr": s.get("stderr")}
    return scores


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


def _optional(path: str | None, default: Path, what: str) -> Path | None:
    """The artifact path given, else the default one when it exists; a given path must exist."""
    if path is not None:
        if not Path(path).exists():
            raise UsageError(f"{path}: no such {what}; check the path or leave the option out")
        return Path(path)
    return default if default.exists() else None


def gather(run_dir: str | Path, out: str | Path, *, eval_path: str | None = None, comparison: str | None = None,
           contamination: str | None = None, name: str | None = None, license: str = "apache-2.0") -> CardInputs:
    """Read every artifact the card uses (tolerant of missing ones, strict about damaged ones)."""
    from edulm.evaluate.artifacts import last_validation, metrics_rows, read_json, run_config, training_summary
    from edulm.layout import RunLayout

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UsageError(f"{run_dir}: no such run directory; pass the run.out_dir of a training run")
    config = run_config(run_dir)
    if config is None:
        raise UsageError(f"{run_dir}: has no config.yaml, so it is not a run directory; pass the run.out_dir of a training run")
    summary = training_summary(run_dir)
    inputs = CardInputs(run_dir, Path(out), name or (config.get("run") or {}).get("name") or run_dir.name, license,
                        config, summary, last_validation(metrics_rows(run_dir)))
    if summary is not None:
        inputs.sources["training summary"] = str(RunLayout.of(run_dir).summary)

    eval_file = _optional(eval_path, run_dir / DEFAULT_EVAL, "eval results file")
    if eval_file is not None:
        inputs.evaluation = read_json(eval_file, "eval results file")
        inputs.scores = eval_scores(inputs.evaluation or {})
        inputs.sources["evaluation"] = str(eval_file)
    comparison_dir = _optional(comparison, run_dir / DEFAULT_COMPARISON, "comparison folder")
    if comparison_dir is not None:
        comparison_file = comparison_dir / COMPARISON_FILE if comparison_dir.is_dir() else comparison_dir
        inputs.comparison = read_json(comparison_file, "comparison file")
        if inputs.comparison is None:
            raise UsageError(f"{comparison_dir}: holds no {COMPARISON_FILE}; pass the --out folder of edulm compare")
        inputs.sources["comparison"] = str(comparison_file)
    contamination_file = _optional(contamination, run_dir / DEFAULT_CONTAMINATION, "contamination report")
    if contamination_file is not None:
        inputs.contamination = read_json(contamination_file, "contamination report")
        inputs.sources["contamination"] = str(contamination_file)
    inputs.parameters = _parameters(config, summary, inputs.evaluation)
    return inputs


def training_datasets(config: dict[str, Any]) -> list[str]:
    """Hub dataset ids the run trained on (``hf://OWNER/NAME/...`` sources); local data names none."""
    source = str((config.get("data") or {}).get("source") or "")
    if not source.startswith("hf://"):
        return []
    parts = source.removeprefix("hf://").split("@")[0].split("/")
    return ["/".join(parts[:2])] if len(parts) >= 2 else []


def metadata(inputs: CardInputs):
    """The card's Hugging Face metadata (``huggingface_hub.ModelCardData``)."""
    from huggingface_hub import EvalResult, ModelCardData

    results = []
    evaluation = inputs.evaluation or {}
    # Task configs: under "lm_eval" in edulm's results file, at the top level in lm-eval's own output.
    raw_configs = (evaluation.get("lm_eval") or {}).get("configs") or evaluation.get("configs") or {}
    for task, score in inputs.scores.items():
        dataset = TASK_DATASETS.get(task) or _dataset_from_config(task, raw_configs.get(task) or {})
        results.append(EvalResult(
            task_type="text-generation", task_name="Text Generation",
            dataset_type=dataset["type"], dataset_name=dataset["name"], dataset_config=dataset.get("config"),
            dataset_split=dataset.get("split"), metric_type=score["metric"], metric_name=f"{task} ({score['metric']}, 0-shot)",
            metric_value=score["value"], source_name="lm-evaluation-harness (edulm eval)", source_url=HARNESS_URL,
        ))
    datasets = training_datasets(inputs.config)
    return ModelCardData(
        license=inputs.license,
        library_name="transformers",
        pipeline_tag="text-generation",
        language=["en"],
        datasets=datasets or None,
        tags=BASE_TAGS + (["fineweb-edu"] if any("fineweb-edu" in d for d in datasets) else []),
        model_name=inputs.name,
        eval_results=results or None,
    )


def _dataset_from_config(task: str, cfg: dict[str, Any]) -> dict[str, str | None]:
    """model-index dataset fields of a task outside the reference six, from the harness's task config."""
    split = cfg.get("test_split") or cfg.get("validation_split")
    path = cfg.get("dataset_path")
    local = not path or path in ("json", "csv", "parquet", "text")
    return {"name": task, "type": task if local else path, "config": cfg.get("dataset_name"), "split": split}


def copy_plots(inputs: CardInputs) -> list[str]:
    """Copy the run's plots beside the card (so the folder is self-contained); returns their file names."""
    from edulm.layout import PLOT_FILES, RunLayout

    names = []
    for name in PLOT_FILES:
        source = RunLayout.of(inputs.run_dir).training / name
        if source.is_file():
            target = inputs.out.parent / name
            if source.resolve() != target.resolve():
                shutil.copy2(source, target)
            names.append(name)
    return names


def render_card(inputs: CardInputs) -> str:
    """The whole README: metadata front matter, then the body."""
    from huggingface_hub import ModelCard

    from edulm.card_sections import body

    return str(ModelCard(f"---\n{metadata(inputs).to_yaml()}\n---\n\n{body(inputs)}"))


def write_card(run_dir: str | Path, out: str | Path, **options: Any) -> CardInputs:
    """Gather, copy the plots beside ``out`` and write the card there (through a temporary file)."""
    out = Path(out)
    if out.is_dir():
        raise UsageError(f"--out {out}: is a folder; pass a file name such as {out / 'README.md'}")
    inputs = gather(run_dir, out, **options)
    out.parent.mkdir(parents=True, exist_ok=True)
    inputs.plots = copy_plots(inputs)
    text = render_card(inputs)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out)
    return inputs


def card_command(args: argparse.Namespace) -> None:
    """``edulm card RUN_DIR --out FILE``: write the card and say what it was built from."""
    inputs = write_card(args.run_dir, args.out, eval_path=args.eval, comparison=args.comparison,
                        contamination=args.contamination, name=args.model_name, license=args.license)
    print(f"model card: {args.out}")
    for what in ("training summary", "evaluation", "comparison", "contamination"):
        print(f"  {what:<17} {inputs.sources.get(what, 'not available: stated as not run / not recorded')}")
