"""Finding lm-eval tasks (built-in or from ``--include-path``) and explaining why they failed to load."""

from __future__ import annotations

from pathlib import Path

from edulm.errors import UsageError
from edulm.evaluate.protocol import did_you_mean

OFFLINE_HINT = (
    "the Hugging Face Hub looks unreachable: connect to it, or pass --include-path DIR with task YAMLs "
    "whose data is local (dataset_path: json) and name them with --tasks"
)
"""What to do when a task's data cannot be fetched."""


def _is_task_file(spec: str) -> bool:
    return spec.endswith((".yaml", ".yml")) and Path(spec).is_file()


def task_manager(tasks: list[str], include_path: str | None = None):
    """An lm-eval ``TaskManager`` that knows every name in ``tasks``, or a :class:`UsageError` naming the unknown one.

    Indexing the harness's built-in tasks takes seconds, so when ``include_path`` alone defines
    every requested task the built-in index is skipped (the result is the same: an include path
    takes precedence over built-in tasks of the same name).
    """
    from lm_eval.tasks import TaskManager

    if include_path is not None:
        folder = Path(include_path)
        if not folder.is_dir():
            raise UsageError(f"--include-path {include_path}: no such folder; pass a folder of lm-eval task YAMLs")
        local = TaskManager(include_path=str(folder), include_defaults=False)
        if all(t in local.all_tasks or _is_task_file(t) for t in tasks):
            return local
    manager = TaskManager(include_path=include_path)
    for name in tasks:
        if name not in manager.all_tasks and not _is_task_file(name):
            where = " or in --include-path" if include_path else "; for a local task pass --include-path DIR"
            raise UsageError(
                f"unknown lm-eval task '{name}'{did_you_mean(name, manager.all_tasks)}: it is not a built-in task{where}"
            )
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
    first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return UsageError(f"could not load {what} ({first_line[:300]}); {OFFLINE_HINT}")


def load_tasks(manager, tasks: list[str]) -> list:
    """Load ``tasks`` (fetching their data) and return what to hand to ``simple_evaluate``.

    Loading first means a task whose data cannot be fetched fails before any model is loaded. When
    no group was asked for, the loaded task objects are returned, so the data is read only once;
    groups are returned by name so that the harness builds them (and their aggregate rows) itself.
    """
    try:
        loaded = manager.load(list(tasks))
    except Exception as err:  # noqa: BLE001 - only fetch failures are translated; the rest propagate
        friendly = load_error(err, "the benchmark data")
        if friendly is None:
            raise
        raise friendly from err
    if loaded["groups"]:
        return list(tasks)
    return list(loaded["tasks"].values())
