"""``edulm baselines``: the public reference models, evaluated with exactly the candidate's protocol.

One results file per model (``<safe-name>.json``, the same format as ``edulm eval``) in the output
folder. A model whose file is already complete for the requested tasks and settings is skipped, so
an interrupted run picks up where it stopped; a model that fails is reported and the others still
run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from edulm.errors import UsageError
from edulm.evaluate.protocol import RESULTS_FORMAT, safe_name

DEFAULT_BASELINES: list[str] = [
    "gpt2",
    "facebook/opt-125m",
    "EleutherAI/gpt-neo-125m",
    "cerebras/Cerebras-GPT-111M",
    "EleutherAI/pythia-160m",
    "HuggingFaceTB/SmolLM-135M",
    "HuggingFaceTB/SmolLM2-135M",
]
"""The seven public models of about the reference model's size that it is compared with."""


def parse_models(text: str | None) -> list[str]:
    """``--models a,b`` as a list (default: :data:`DEFAULT_BASELINES`); duplicates and empty lists are errors."""
    if text is None:
        return list(DEFAULT_BASELINES)
    models = [m.strip() for m in text.split(",") if m.strip()]
    if not models:
        raise UsageError("--models is empty; name hub ids or local folders, e.g. --models gpt2,EleutherAI/pythia-160m")
    names = [safe_name(m) for m in models]
    for name in names:
        if names.count(name) > 1:
            raise UsageError(f"--models: two models would share the results file {name}.json; list each model once")
    return models


def is_complete(path: Path, settings) -> bool:
    """True when ``path`` holds results for every requested task, run with the same limit, dtype and include path."""
    if not path.is_file():
        return False
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return False  # a damaged file is simply redone
    if not isinstance(doc, dict) or doc.get("format") != RESULTS_FORMAT:
        return False
    protocol = doc.get("protocol", {})
    include = str(Path(settings.include_path).resolve()) if settings.include_path else None
    same = (
        protocol.get("limit") == settings.limit
        and protocol.get("include_path") == include
        and doc.get("runtime", {}).get("dtype") == settings.dtype
    )
    scores = doc.get("scores", {})
    return same and all(scores.get(task, {}).get("value") is not None for task in settings.tasks)


def run_baselines(models: list[str], out_dir: str | Path, settings) -> dict[str, dict[str, Any]]:
    """Evaluate each model not already done; returns ``{model: {"status": done|skipped|failed, "file", "error"}}``."""
    from edulm.evaluate.harness import evaluate_model, format_scores
    from edulm.evaluate.tasks import task_manager

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir}: is a file; pass a folder for the results files")
    out_dir.mkdir(parents=True, exist_ok=True)
    manager = None
    report: dict[str, dict[str, Any]] = {}
    for i, model in enumerate(models, 1):
        path = out_dir / f"{safe_name(model)}.json"
        if is_complete(path, settings):
            print(f"[{i}/{len(models)}] {model}: already done ({path})", flush=True)
            report[model] = {"status": "skipped", "file": str(path)}
            continue
        print(f"[{i}/{len(models)}] {model}: evaluating", flush=True)
        manager = manager or task_manager(settings.tasks, settings.include_path)  # once, on first need
        try:
            document = evaluate_model(model, path, settings, manager)
        except UsageError as err:  # e.g. the model cannot be fetched: report it and go on with the others
            print(f"[{i}/{len(models)}] {model}: failed: {err}", file=sys.stderr, flush=True)
            report[model] = {"status": "failed", "file": None, "error": str(err)}
            continue
        print(format_scores(document), flush=True)
        report[model] = {"status": "done", "file": str(path)}
    return report


def baselines_command(args: argparse.Namespace) -> None:
    """``edulm baselines --out DIR [--models a,b] [eval options]``."""
    from edulm.evaluate.harness import settings_from_args

    settings = settings_from_args(args)
    models = parse_models(args.models)
    report = run_baselines(models, args.out, settings)
    failed = {m: r["error"] for m, r in report.items() if r["status"] == "failed"}
    done = len(report) - len(failed)
    print(f"{done} of {len(models)} baselines have results in {args.out}")
    if failed:
        first = next(iter(failed.values()))
        raise UsageError(f"{len(failed)} of {len(models)} baselines failed ({', '.join(failed)}); first error: {first}")
