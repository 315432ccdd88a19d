"""``edulm eval``: lm-evaluation-harness with the reference protocol, and one results file per model.

The numbers are lm-eval's own: the model is handed to ``lm_eval.simple_evaluate`` as a Hugging
Face folder (run dirs and checkpoints are exported once into a cache) with the harness's ``hf``
model class, so the scores equal a direct harness call with the same arguments. Around them the
results file records what a reader needs to trust and repeat them: harness version, device,
dtype, requested and resolved batch size, seeds, model path and parameter count, and each task's
reference metric. Per-example samples are written beside it as JSONL, one file per task.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edulm.base.errors import UsageError
from edulm.evaluate.protocol import NUM_FEWSHOT, RESULTS_FORMAT, SEEDS, parse_limit, parse_tasks
from edulm.evaluate.results import scores_from_results
from edulm.evaluate.tasks import load_error, load_tasks, task_manager
from edulm.base.layout import FINAL_DIR, RunLayout

DTYPE_NAMES = ("bfloat16", "float16", "float32")
"""Values accepted by ``--dtype``."""

CPU_BATCH_SIZE = 8
"""Batch size on a CPU when none is given. lm-eval's ``auto`` search runs trial batches until one fails
for lack of memory, which on a CPU takes longer than most small evaluations (45 s of a 70-request
run); 8 sequences keep the logits of a 50k-token vocabulary at a few hundred MB for contexts of 512."""


@dataclass
class EvalSettings:
    """How to run the harness (everything but the model)."""

    tasks: list[str]
    """lm-eval task names."""
    include_path: str | None = None
    """Folder of extra task YAMLs."""
    limit: int | float | None = None
    """Examples per task (count) or fraction; None for all (the protocol)."""
    batch_size: str | int = CPU_BATCH_SIZE
    """An integer, 'auto' or 'auto:N' (re-detect N times)."""
    device: str = "cpu"
    """Torch device the harness runs on."""
    dtype: str = "float32"
    """Weight dtype: bfloat16, float16 or float32."""
    apply_chat_template: bool = False
    """Wrap every prompt in the model's chat template (lm-eval's ``apply_chat_template``), as a chat model is used."""


def _parse_batch_size(text: str | int) -> str | int:
    value = str(text).strip()
    if value == "auto" or (value.startswith("auto:") and value[5:].isdigit() and int(value[5:]) > 0):
        return value
    if value.isdigit() and int(value) > 0:
        return int(value)
    raise UsageError(f"--batch-size {text!r}: use a positive integer or 'auto'")


def eval_settings(tasks: str | list[str] | None = None, include_path: str | None = None, limit: float | None = None,
                  batch_size: str | int | None = None, device: str | None = None, dtype: str | None = None,
                  apply_chat_template: bool = False) -> EvalSettings:
    """Validate the eval options into :class:`EvalSettings` (a :class:`UsageError` names a bad one).

    ``tasks`` is a list or ``a,b`` text (None: the reference six); ``batch_size`` None means ``auto``
    on CUDA and :data:`CPU_BATCH_SIZE` on a CPU; ``device`` None picks CUDA when available; ``dtype``
    None means bfloat16 on CUDA and float32 on a CPU.
    """
    from edulm.evaluate.tasks import require_lm_eval
    from edulm.base.devices import resolve_device

    require_lm_eval()
    resolved = resolve_device(device or "auto")
    dtype = dtype or ("bfloat16" if resolved.type == "cuda" else "float32")
    if dtype not in DTYPE_NAMES:
        raise UsageError(f"--dtype {dtype!r}: choose one of {', '.join(DTYPE_NAMES)}")
    if batch_size is None:
        batch_size = "auto" if resolved.type == "cuda" else CPU_BATCH_SIZE
    return EvalSettings(
        tasks=list(tasks) if isinstance(tasks, list) else parse_tasks(tasks),
        include_path=include_path,
        limit=parse_limit(limit),
        batch_size=_parse_batch_size(batch_size),
        device=str(resolved),
        dtype=dtype,
        apply_chat_template=apply_chat_template,
    )


def run_harness(pretrained: str, settings: EvalSettings, manager=None) -> dict[str, Any]:
    """Call ``lm_eval.simple_evaluate`` on an HF folder or hub id with the protocol; returns its raw results.

    The tasks' data is fetched before the model is loaded, so a missing hub fails at once. Failures
    to fetch the model or a task's data (no hub, no network) become one-line :class:`UsageError`
    messages that say how to run offline.
    """
    import lm_eval

    if settings.apply_chat_template and not has_chat_template(pretrained):
        raise UsageError(f"{pretrained}: --apply-chat-template, but its tokenizer has no chat template; evaluate it "
                         "without the flag, or export a fine-tuned model (its folder carries the template)")
    manager = manager or task_manager(settings.tasks, settings.include_path)
    tasks = load_tasks(manager, settings.tasks)
    try:
        # lm-eval prints progress notes ("bootstrapping for stddev") to stdout; keep stdout for edulm's results.
        with contextlib.redirect_stdout(sys.stderr):
            results = lm_eval.simple_evaluate(
                model="hf",
                # Explicit: a folder whose config asks to run its own Python code never gets to run it.
                model_args={"pretrained": pretrained, "dtype": settings.dtype, "trust_remote_code": False},
                tasks=tasks,
                num_fewshot=NUM_FEWSHOT,
                batch_size=settings.batch_size,
                device=settings.device,
                limit=settings.limit,
                log_samples=True,
                task_manager=manager,
                apply_chat_template=settings.apply_chat_template,
                **SEEDS,
            )
    except Exception as err:  # noqa: BLE001 - only fetch failures are translated; the rest propagate
        friendly = load_error(err, f"the model {pretrained}")
        if friendly is None:
            raise
        raise friendly from err
    if results is None:  # only non-zero ranks get None; edulm runs the harness in one process
        raise RuntimeError("lm-eval returned no results")
    return results


def has_chat_template(pretrained: str) -> bool:
    """True when the tokenizer of ``pretrained`` (an HF folder or hub id) has a chat template (in
    ``tokenizer_config.json`` or transformers 5's ``chat_template.jinja``)."""
    from transformers import AutoTokenizer

    folder = Path(pretrained)
    if folder.is_dir():
        config = folder / "tokenizer_config.json"
        if (folder / "chat_template.jinja").is_file():
            return True
        return config.is_file() and bool(json.loads(config.read_text(encoding="utf-8")).get("chat_template"))
    return bool(getattr(AutoTokenizer.from_pretrained(pretrained, trust_remote_code=False), "chat_template", None))


def _jsonable(obj: Any) -> Any:
    """Round-trip through JSON with lm-eval's own fallback for numpy scalars, dtypes and sets."""
    from lm_eval.utils import handle_non_serializable

    return json.loads(json.dumps(obj, default=handle_non_serializable))


def write_samples(out: Path, samples: dict[str, list[dict[str, Any]]]) -> dict[str, str]:
    """Write ``<out stem>_samples_<task>.jsonl`` beside ``out``, each atomically; returns ``{task: file name}``."""
    from lm_eval.utils import handle_non_serializable

    from edulm.base.files import atomic_path

    files = {}
    for task, rows in samples.items():
        path = out.with_name(f"{out.stem}_samples_{task}.jsonl")
        with atomic_path(path, f"the samples of {task}") as tmp, tmp.open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, default=handle_non_serializable, ensure_ascii=False) + "\n")
        files[task] = path.name
    return files


def _cached_on_hub(repo_id: str) -> bool:
    """True when the hub model ``repo_id`` has a ``config.json`` in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except ValueError:  # not a valid repo id
        return False


def describe_model(model: str) -> dict[str, Any]:
    """Name, kind and evaluated folder of a MODEL argument (a local model or a hub id)."""
    from edulm.evaluate.artifacts import checkpoint_tokens, run_name, training_tokens

    path = Path(model)
    if not path.exists():
        from edulm.hf.source import is_hub_id

        if not is_hub_id(model):
            raise UsageError(f"{model}: no such folder; pass an HF folder, a run dir, a checkpoint dir or a hub id")
        from edulm.evaluate.tasks import require_hub
        from edulm.base.hub_access import hub_offline

        if hub_offline() and not _cached_on_hub(model):
            raise UsageError(
                f"{model}: no such folder, and no cached copy of a hub model of that name (offline mode is on); "
                "pass an HF folder, a run dir or a checkpoint dir, or connect and unset HF_HUB_OFFLINE"
            )
        require_hub(f"the model {model}")
        return {"name": model, "source": model, "kind": "hub", "path": model, "training_tokens": None}
    from edulm.hf import ensure_hf_folder, resolve_model

    resolved = resolve_model(path)
    folder = ensure_hf_folder(path)
    run_dir = path if resolved.kind == "run" else (path.parent.parent if resolved.kind == "checkpoint" else None)
    if resolved.kind == "hf" and path.resolve().name == FINAL_DIR and RunLayout.of(path.resolve().parent).config.is_file():
        run_dir = path.resolve().parent  # the exported final folder of a run
    name = run_name(run_dir) if run_dir is not None else None
    if resolved.kind == "checkpoint":
        name = f"{name or path.resolve().parent.parent.name}@{path.resolve().name}"
    # A checkpoint saw the tokens of its own step (its trainer state), not those of the whole run.
    tokens = checkpoint_tokens(path) if resolved.kind == "checkpoint" else training_tokens(run_dir) if run_dir is not None else None
    return {
        "name": name or path.resolve().name,
        "source": str(model),
        "kind": resolved.kind,
        "path": str(Path(folder).resolve()),
        "training_tokens": tokens,
    }


def evaluate_model(model: str, out: str | Path, settings: EvalSettings, manager=None, name: str | None = None) -> dict[str, Any]:
    """Run the protocol on ``model`` (local MODEL or hub id), write ``out`` and the samples; returns the results document."""
    from edulm.base.files import remove_stale_temps
    from edulm.base.lock import folder_lock

    out = Path(out)
    info = describe_model(model)
    if name:
        info["name"] = name
    # Created before the harness runs, so an --out that cannot be written fails before hours of work...
    missing = [folder for folder in (out.parent, *out.parent.parents) if not folder.exists()]
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"{out}: cannot create its folder ({err}); choose another --out") from None
    started = time.time()
    try:
        # One writer per results file: a second eval into the same --out is refused (the samples of one and the
        # results of the other would not match); held until both are written.
        with folder_lock(out, "edulm eval"):
            remove_stale_temps(out.parent)  # what an evaluation killed while writing left behind
            raw = run_harness(info["path"], settings, manager)
            return _write_results(out, info, settings, raw, started)
    except BaseException:
        for folder in missing:  # ...and removed again when it fails (a misspelt task): nothing half-written
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def _write_results(out: Path, info: dict[str, Any], settings: EvalSettings, raw: dict[str, Any], started: float) -> dict[str, Any]:
    """Write the samples, then the results document that names them; returns the document."""
    import lm_eval
    import torch
    import transformers

    from edulm.base.files import remove_path, write_json

    duration = time.time() - started
    samples = raw.pop("samples", {}) or {}
    config = raw.get("config", {})
    info["parameters"] = config.get("model_num_parameters")
    scores = scores_from_results(raw)
    on_cuda = settings.device.startswith("cuda")
    document = {
        "format": RESULTS_FORMAT,
        "format_version": 1,
        "model": info,
        "harness": {"name": "lm-evaluation-harness", "version": lm_eval.__version__},
        "protocol": {
            "tasks": list(settings.tasks),
            "num_fewshot": NUM_FEWSHOT,
            "reference_metrics": {task: s["metric"] for task, s in scores.items()},
            "seeds": dict(SEEDS),
            "limit": settings.limit,
            "include_path": str(Path(settings.include_path).resolve()) if settings.include_path else None,
            "apply_chat_template": settings.apply_chat_template,
            "bootstrap_iters": config.get("bootstrap_iters"),
        },
        "runtime": {
            "device": settings.device,
            "device_name": torch.cuda.get_device_name(torch.device(settings.device)) if on_cuda else "cpu",
            "dtype": settings.dtype,
            "batch_size": settings.batch_size,
            "batch_size_resolved": config.get("batch_sizes") or settings.batch_size,
            "duration_s": round(duration, 2),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        "scores": scores,
        "results": raw.get("results", {}),
        "groups": raw.get("groups", {}),
        "lm_eval": {k: raw.get(k) for k in ("versions", "n-shot", "higher_is_better", "n-samples", "configs", "config")},
    }
    # The old results go first: a process killed between the samples and the results leaves no results file
    # (redone by the next run) rather than old results beside new samples, which compare would read as one.
    remove_path(out)
    document["samples_files"] = write_samples(out, samples)
    document = _jsonable(document)
    write_json(out, document)
    return document


def format_scores(document: dict[str, Any]) -> str:
    """The scores as aligned text lines: task, metric, value, stderr."""
    lines = []
    for task, s in document["scores"].items():
        value = "n/a" if s["value"] is None else f"{s['value']:.4f}"
        err = f" ± {s['stderr']:.4f}" if isinstance(s["stderr"], (int, float)) else ""
        lines.append(f"{task:<24} {s['metric']:<10} {value}{err}")
    return "\n".join(lines)


def _is_results_file(path: Path) -> bool:
    """True when ``path`` holds a results document of ``edulm eval`` / ``edulm baselines`` (which a new one may replace)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and doc.get("format") == RESULTS_FORMAT


def eval_command(model: str, out: str | Path, settings: EvalSettings) -> dict[str, Any]:
    """``edulm eval MODEL --out FILE``: evaluate, print the scores and where they are; returns the results document."""
    out = Path(out)
    if out.suffix.lower() != ".json":
        raise UsageError(f"--out {out}: the results file must end in .json (samples are written beside it)")
    if out.exists() and not _is_results_file(out):  # a slip such as --out RUN/final/config.json must not replace it
        raise UsageError(f"--out {out}: exists and is not an edulm eval results file; choose another file name")
    document = evaluate_model(model, out, settings)
    print(format_scores(document))
    runtime = document["runtime"]
    params = document["model"]["parameters"]
    print(
        f"model {document['model']['name']} ({f'{params:,}' if params else 'unknown number of'} parameters), "
        f"{runtime['device']} {runtime['dtype']}, batch size {runtime['batch_size_resolved']}, "
        f"lm-eval {document['harness']['version']}"
    )
    print(f"results: {out}")
    return document
