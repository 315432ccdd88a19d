"""Finding lm-eval tasks (built-in or from ``--include-path``) and explaining why they failed to load."""

from __future__ import annotations

import functools
import re
from pathlib import Path

from edulm.base.errors import UsageError, first_line
from edulm.base.hub_access import hub_offline, hub_reachable
from edulm.base.suggest import did_you_mean

OFFLINE_HINT = (
    "the Hugging Face Hub looks unreachable: connect to it, or pass --include-path DIR with task YAMLs "
    "whose data is local (dataset_path: json) and name them with --tasks"
)
"""What to do when a task's data cannot be fetched."""

def require_lm_eval() -> None:
    """A one-line :class:`UsageError` when lm-evaluation-harness is not installed (it is an optional extra)."""
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise UsageError("lm-evaluation-harness is not installed; pip install 'edulm[eval]' (or lm-eval)") from None


def require_hub(what: str) -> None:
    """Fail at once when ``what`` (say "the data of arc_easy") must come from the hub and the hub cannot be reached.

    Without this, ``datasets`` and ``huggingface_hub`` retry for about half a minute per file before
    failing. In offline mode nothing is probed: cached copies are used, and a missing one fails fast.
    """
    if hub_offline() or hub_reachable():
        return
    raise UsageError(
        f"the Hugging Face Hub is unreachable and {what} comes from it; connect, set HF_HUB_OFFLINE=1 "
        "HF_DATASETS_OFFLINE=1 to use copies already in the cache, or use local files (--include-path DIR with "
        "task YAMLs whose data is local, or a local model folder)"
    )


@functools.lru_cache(maxsize=4)
def _manager(include_path: str | None, include_defaults: bool):
    """Indexing the harness's task folders takes seconds; the index is only read, so one per process is enough."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=include_path, include_defaults=include_defaults)


def builtin_tasks(manager, tasks: list[str]) -> list[str]:
    """Those of ``tasks`` defined by the harness's own YAMLs (whose data lives on the hub)."""
    import lm_eval.tasks

    root = Path(lm_eval.tasks.__file__).resolve().parent
    out = []
    for name in tasks:
        entry = manager.task_index.get(name)
        path = getattr(entry, "yaml_path", None)
        if path is not None and Path(path).resolve().is_relative_to(root):
            out.append(name)
    return out


def _is_task_file(spec: str) -> bool:
    return spec.endswith((".yaml", ".yml")) and Path(spec).is_file()


def task_manager(tasks: list[str], include_path: str | None = None):
    """An lm-eval ``TaskManager`` that knows every name in ``tasks``, or a :class:`UsageError` naming the unknown one.

    Indexing the harness's built-in tasks takes seconds, so when ``include_path`` alone defines
    every requested task the built-in index is skipped (the result is the same: an include path
    takes precedence over built-in tasks of the same name).
    """
    require_lm_eval()
    if include_path is not None:
        folder = Path(include_path)
        if not folder.is_dir():
            raise UsageError(f"--include-path {include_path}: no such folder; pass a folder of lm-eval task YAMLs")
        include_path = str(folder.resolve())
        local = _manager(include_path, False)
        if all(t in local.all_tasks or _is_task_file(t) for t in tasks):
            return local
    manager = _manager(include_path, True)
    for name in tasks:
        if name not in manager.all_tasks and not _is_task_file(name):
            where = " or in --include-path" if include_path else "; for a local task pass --include-path DIR"
            raise UsageError(
                f"unknown lm-eval task '{name}'{did_you_mean(name, manager.all_tasks)}: it is not a built-in task{where}"
            )
    needing_hub = builtin_tasks(manager, tasks)
    if needing_hub:
        require_hub(f"the data of {', '.join(needing_hub)}")
    return manager


def load_error(err: BaseException, what: str) -> UsageError | None:
    """A one-line :class:`UsageError` for a failure to fetch ``what`` (a model or task data), or None if ``err`` is something else."""
    from datasets.exceptions import DatasetsError

    try:
        from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled
    except ImportError:  # older huggingface_hub
        HfHubHTTPError = OfflineModeIsEnabled = ConnectionError  # type: ignore[misc,assignment]
    fetch_errors = (ConnectionError, OSError, DatasetsError, HfHubHTTPError, OfflineModeIsEnabled, TimeoutError)
    if not isinstance(err, fetch_errors):
        return None
    line = first_line(err)
    missing = _missing_local_file(err, line)
    if missing is not None:  # a task YAML names a data file that is not there: nothing to do with the hub
        return UsageError(f"could not load {what}: the data file {missing} does not exist; "
                          "correct the data_files path in the task's YAML (--include-path)")
    return UsageError(f"could not load {what} ({line[:300]}); {OFFLINE_HINT}")


def _missing_local_file(err: BaseException, message: str) -> str | None:
    """The local path a ``FileNotFoundError`` of ``datasets`` names (``Unable to find '/x/y.jsonl'``) when that
    file really is absent, else None."""
    match = re.search(r"Unable to find '([^']+)'", message) if isinstance(err, FileNotFoundError) else None
    if match is None or "://" in match.group(1) or Path(match.group(1)).exists():
        return None
    return match.group(1)


def load_task_dict(manager, tasks: list[str]) -> dict:
    """``manager.load(tasks)`` (fetching their data), with fetch failures turned into one-line UsageErrors."""
    try:
        return manager.load(list(tasks))
    except Exception as err:  # noqa: BLE001 - only fetch failures are translated; the rest propagate
        friendly = load_error(err, "the benchmark data")
        if friendly is None:
            raise
        raise friendly from err


def load_tasks(manager, tasks: list[str]) -> list:
    """Load ``tasks`` (fetching their data) and return what to hand to ``simple_evaluate``.

    Loading first means a task whose data cannot be fetched fails before any model is loaded. When
    no group was asked for, the loaded task objects are returned, so the data is read only once;
    groups are returned by name so that the harness builds them (and their aggregate rows) itself.
    """
    loaded = load_task_dict(manager, tasks)
    if loaded["groups"]:
        return list(tasks)
    return list(loaded["tasks"].values())
