"""``edulm baselines``: the public reference models, evaluated with exactly the candidate's protocol.

One results file per model (``<safe-name>.json``, the same format as ``edulm eval``) in the output
folder. A model is a hub id or a local folder, optionally named: ``NAME=PATH`` (the name is then the
model's name in every table and the results file's name). A model whose file is already complete for
the requested tasks and settings is skipped, so an interrupted run picks up where it stopped; a
model that fails is reported and the others still run. The output folder is locked while it is
written (:func:`edulm.base.lock.folder_lock`), so two processes never write the same results file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edulm.base.errors import UsageError
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


@dataclass(frozen=True)
class Baseline:
    """One model to evaluate: what to load, and the name it goes by."""

    model: str
    """Hub id or local folder (HF folder, run dir or checkpoint dir)."""
    name: str | None = None
    """Given by ``NAME=PATH``; None: named by the model itself (run name, folder name or hub id)."""

    @property
    def file_name(self) -> str:
        """The results file's name in the output folder."""
        return f"{safe_name(self.name or self.model)}.json"

    def __str__(self) -> str:
        return f"{self.name}={self.model}" if self.name else self.model


def parse_baseline(spec: str) -> Baseline:
    """``PATH``, ``HUB_ID`` or ``NAME=PATH`` (an existing path that contains ``=`` is taken as a path)."""
    spec = spec.strip()
    name, sep, model = spec.partition("=")
    if not sep or Path(spec).exists():
        return Baseline(spec)
    if not name.strip() or not model.strip():
        raise UsageError(f"--models {spec!r}: write NAME=PATH with both parts, e.g. my-run=runs/my-run")
    return Baseline(model.strip(), name.strip())


def parse_models(text: str | list[str] | None) -> list[Baseline]:
    """``--models a,NAME=b`` (or a list of such specs) as :class:`Baseline` entries (default: :data:`DEFAULT_BASELINES`).

    Two models that would share a results file (two local folders with the same base name) are refused,
    with the advice to name them.
    """
    if text is None:
        return [Baseline(m) for m in DEFAULT_BASELINES]
    specs = text.split(",") if isinstance(text, str) else list(text)
    models = [parse_baseline(m) for m in specs if m.strip()]
    if not models:
        raise UsageError("--models is empty; name hub ids or local folders, e.g. --models gpt2,EleutherAI/pythia-160m")
    by_file: dict[str, Baseline] = {}
    for model in models:
        other = by_file.setdefault(model.file_name, model)
        if other is model:
            continue
        if other.model == model.model and other.name == model.name:
            raise UsageError(f"--models: {model} is listed twice; list each model once")
        raise UsageError(
            f"--models: {other} and {model} would share the results file {model.file_name}; "
            f"name them, e.g. --models a={other.model},b={model.model}"
        )
    return models


def is_complete(path: Path, settings, model: str) -> bool:
    """True when ``path`` holds ``model``'s results for every requested task, run with the same limit, dtype and
    include path."""
    from edulm.evaluate.results import read_document

    if not path.is_file():
        return False
    try:
        doc = read_document(path)
    except UsageError:
        return False  # a damaged file (cut short, of the wrong shape) is simply redone
    if doc.get("format") != RESULTS_FORMAT:
        return False
    protocol = doc.get("protocol", {})
    include = str(Path(settings.include_path).resolve()) if settings.include_path else None
    same = (
        protocol.get("limit") == settings.limit
        and protocol.get("include_path") == include
        and doc.get("runtime", {}).get("dtype") == settings.dtype
    )
    if (doc.get("model") or {}).get("source") != str(model):
        return False
    scores = doc.get("scores", {})
    return same and all(scores.get(task, {}).get("value") is not None for task in settings.tasks)


def run_baselines(models: list[Baseline], out_dir: str | Path, settings) -> dict[str, dict[str, Any]]:
    """Evaluate each model not already done, holding ``out_dir``'s lock.

    Returns ``{spec: {"status": done|skipped|failed, "file", "error"}}``.
    """
    from edulm.base.lock import folder_lock

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir}: is a file; pass a folder for the results files")
    report: dict[str, dict[str, Any]] = {}
    with folder_lock(out_dir, "edulm baselines"):
        created = not out_dir.exists()
        out_dir.mkdir(parents=True, exist_ok=True)
        try:
            _evaluate_each(models, out_dir, settings, report)
        finally:
            if created and not any(out_dir.iterdir()):  # every model failed: no empty folder left behind
                out_dir.rmdir()
    return report


def _evaluate_each(models: list[Baseline], out_dir: Path, settings, report: dict[str, dict[str, Any]]) -> None:
    """The loop of :func:`run_baselines`: evaluate or skip each model, recording its status in ``report``."""
    from edulm.evaluate.harness import evaluate_model, format_scores
    from edulm.evaluate.tasks import task_manager

    manager = None
    for i, baseline in enumerate(models, 1):
        path = out_dir / baseline.file_name
        if is_complete(path, settings, baseline.model):
            print(f"[{i}/{len(models)}] {baseline}: already done ({path})", flush=True)
            report[str(baseline)] = {"status": "skipped", "file": str(path)}
            continue
        print(f"[{i}/{len(models)}] {baseline}: evaluating", flush=True)
        manager = manager or task_manager(settings.tasks, settings.include_path)  # once, on first need
        try:
            document = evaluate_model(baseline.model, path, settings, manager, name=baseline.name)
        except UsageError as err:  # e.g. the model cannot be fetched: report it and go on with the others
            print(f"[{i}/{len(models)}] {baseline}: failed: {err}", flush=True)
            report[str(baseline)] = {"status": "failed", "file": None, "error": str(err)}
            continue
        print(format_scores(document), flush=True)
        report[str(baseline)] = {"status": "done", "file": str(path)}


def failure_summary(report: dict[str, dict[str, Any]]) -> str | None:
    """One line naming the baselines that failed and the first error; None when none failed."""
    failed = {m: r["error"] for m, r in report.items() if r["status"] == "failed"}
    if not failed:
        return None
    first = next(iter(failed.values()))
    return f"{len(failed)} of {len(report)} baselines failed ({', '.join(failed)}); first error: {first}"


def baselines_command(out: str | Path, models: str | list[str] | None, settings) -> dict[str, dict[str, Any]]:
    """``edulm baselines --out DIR [--models a,NAME=b]``: evaluate, say how many have results, fail if any failed."""
    baselines = parse_models(models)
    report = run_baselines(baselines, out, settings)
    done = sum(1 for r in report.values() if r["status"] != "failed")
    print(f"{done} of {len(baselines)} baselines have results in {out}")
    failed = failure_summary(report)
    if failed:
        raise UsageError(failed)
    return report
