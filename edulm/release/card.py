"""``edulm card RUN_DIR --out README.md``: the model card, built only from the run's artifacts.

What it reads is gathered by :mod:`edulm.release.card_inputs`; whatever is missing is stated as not run or
not recorded, and no number on the card comes from anywhere else. The card opens with Hugging Face
metadata (license, library_name, datasets, pipeline_tag, tags and a ``model-index`` with the
evaluation results, each contaminated task marked in its name) written by
``huggingface_hub.ModelCardData``, so the hub and ``huggingface_hub.ModelCard`` read it back. The
markdown body's sections are in :mod:`edulm.release.card_sections` (the model and its training) and
:mod:`edulm.release.card_evaluation` (scores, baselines, contamination).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from edulm.release.card_evaluation import budgets, comparison, contamination, evaluation
from edulm.release.card_inputs import CardInputs, gather
from edulm.release.card_sections import (intended_use_and_limitations, model_details, overview, plots, run_locally,
                                 runtime_and_cost, training_recipe, usage, validation)
from edulm.base.errors import UsageError

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

SECTIONS = (overview, model_details, training_recipe, runtime_and_cost, validation, evaluation, comparison,
            budgets, contamination, intended_use_and_limitations, usage, run_locally, plots)
"""The card's sections, in order."""


def body(inputs: CardInputs) -> str:
    """The markdown body (everything after the metadata)."""
    lines: list[str] = []
    for section in SECTIONS:
        text = section(inputs)
        if text:  # a section with nothing to say (no GGUF file) leaves no gap
            lines += text + [""]
    return "\n".join(lines)


def training_datasets(config: dict[str, Any]) -> list[str]:
    """Hub dataset ids the run trained on (``hf://OWNER/NAME/...`` sources, every one of a mixture); local data names none."""
    source = (config.get("data") or {}).get("source") or ""
    entries = source if isinstance(source, list) else [source]
    datasets: list[str] = []
    for entry in entries:
        text = str(entry.get("source") or "") if isinstance(entry, dict) else str(entry)
        parts = text.removeprefix("hf://").split("@")[0].split("/")
        if text.startswith("hf://") and len(parts) >= 2 and "/".join(parts[:2]) not in datasets:
            datasets.append("/".join(parts[:2]))
    return datasets


def contamination_note(inputs: CardInputs, task: str) -> str | None:
    """``contaminated: 3 of 8 documents found in the training text`` for an audited task with flags; else None."""
    flagged = inputs.flagged(task)
    if not flagged or not flagged[0]:
        return None
    return f"contaminated: {flagged[0]:,} of {flagged[1]:,} documents found in the training text"


def metadata(inputs: CardInputs):
    """The card's Hugging Face metadata (``huggingface_hub.ModelCardData``); contaminated tasks say so in their name."""
    from huggingface_hub import EvalResult, ModelCardData

    results = []
    for task, score in inputs.scores.items():
        dataset = TASK_DATASETS.get(task) or _dataset_from_config(task, inputs.results.task_config(task))
        note = contamination_note(inputs, task)
        results.append(EvalResult(
            task_type="text-generation", task_name="Text Generation",
            dataset_type=dataset["type"], dataset_name=dataset["name"], dataset_config=dataset.get("config"),
            dataset_split=dataset.get("split"), metric_type=score["metric"],
            metric_name=f"{task} ({score['metric']}, 0-shot{'; ' + note if note else ''})",
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
    from edulm.base.files import atomic_path
    from edulm.base.layout import PLOT_FILES, RunLayout

    names = []
    for name in PLOT_FILES:
        source = RunLayout.of(inputs.run_dir).training / name
        if source.is_file():
            target = inputs.out.parent / name
            if source.resolve() != target.resolve():
                with atomic_path(target, f"the plot {name}") as tmp:
                    shutil.copy2(source, tmp)
            names.append(name)
    return names


def render_card(inputs: CardInputs) -> str:
    """The whole README: metadata front matter, then the body."""
    from huggingface_hub import ModelCard

    return str(ModelCard(f"---\n{metadata(inputs).to_yaml()}\n---\n\n{body(inputs)}"))


def write_card(run_dir: str | Path, out: str | Path, **options: Any) -> CardInputs:
    """Gather, copy the plots beside ``out`` and write the card there atomically (options: see :func:`gather`)."""
    from edulm.base.files import write_text

    out = Path(out)
    if out.is_dir():
        raise UsageError(f"--out {out}: is a folder; pass a file name such as {out / 'README.md'}")
    if out.suffix.lower() != ".md":  # also keeps a slip of the shell (--out RUN/final/config.json) from overwriting it
        raise UsageError(f"--out {out}: the card is Markdown, so the file must end in .md, such as {out.parent / 'README.md'}")
    inputs = gather(run_dir, out, **options)
    out.parent.mkdir(parents=True, exist_ok=True)
    inputs.plots = copy_plots(inputs)
    write_text(out, render_card(inputs), "the model card")
    return inputs


def card_command(run_dir: str | Path, out: str | Path, eval_path: str | Path | None = None,
                 comparison: str | Path | None = None, contamination: str | Path | None = None,
                 name: str | None = None, license: str = "apache-2.0") -> CardInputs:
    """``edulm card RUN_DIR --out FILE``: write the card and say what it was built from."""
    inputs = write_card(run_dir, out, eval_path=eval_path, comparison=comparison, contamination=contamination,
                        name=name, license=license)
    print(f"model card: {out}")
    for what in ("training summary", "evaluation", "comparison", "contamination"):
        print(f"  {what:<17} {inputs.sources.get(what, 'not available: stated as not run / not recorded')}")
    return inputs
