"""Reading a run directory's artifacts (config, training summary, metrics CSV) without the trainer.

Every reader is tolerant of a run that is unfinished or older: a missing file or key gives None
(the caller then says "not recorded"), while a file that exists but cannot be parsed is a
:class:`UsageError`, since silently ignoring it would hide a broken run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from edulm.base.errors import UsageError
from edulm.base.layout import TRAINER_STATE_FILE, RunLayout
from edulm.base.metrics import read_metrics

def read_json(path: str | Path, what: str = "file") -> dict[str, Any] | None:
    """A JSON object from ``path``; None when the file is absent."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UsageError(f"{path}: this {what} is not valid JSON ({err}); regenerate it") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: this {what} should hold a JSON object")
    return data


def run_config(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's resolved ``config.yaml`` as a plain mapping; None when absent."""
    path = RunLayout.of(run_dir).config
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        raise UsageError(f"{path}: not valid YAML; the run's config is damaged") from None
    return data if isinstance(data, dict) else None


def run_name(run_dir: str | Path) -> str | None:
    """``run.name`` from the run's config, or None."""
    cfg = run_config(run_dir) or {}
    name = (cfg.get("run") or {}).get("name")
    return str(name) if name else None


def training_summary(run_dir: str | Path) -> dict[str, Any] | None:
    """``training/training_summary.json``, or None."""
    return read_json(RunLayout.of(run_dir).summary, "training summary")


def training_tokens(run_dir: str | Path) -> int | None:
    """Tokens the run trained on, from its summary; None when not recorded."""
    summary = training_summary(run_dir) or {}
    tokens = summary.get("tokens")
    return int(tokens) if isinstance(tokens, (int, float)) and tokens > 0 else None


def metrics_rows(run_dir: str | Path) -> list[dict[str, float | None]]:
    """Rows of ``training/training_metrics.csv`` as finite numbers (empty, unreadable or non-finite cells become None)."""
    path = RunLayout.of(run_dir).metrics
    return read_metrics(path, finite_only=True) if path.is_file() else []


def last_validation(rows: list[dict[str, float | None]]) -> dict[str, float | None] | None:
    """The last row that carries a validation loss: ``{step, val_loss, val_ppl, val_bpb}``; None if there is none.

    ``val_ppl`` and ``val_bpb`` are what the row recorded (None where it recorded nothing).
    """
    for row in reversed(rows):
        if row.get("val_loss") is not None:
            return {
                "step": int(row["step"]) if row.get("step") is not None else None,  # type: ignore[dict-item]
                "val_loss": float(row["val_loss"]),  # type: ignore[arg-type]
                "val_ppl": row.get("val_ppl"),
                "val_bpb": row.get("val_bpb"),
            }
    return None


def checkpoint_tokens(checkpoint_dir: str | Path) -> int | None:
    """Tokens a checkpoint had trained on, from its trainer state; None when not recorded."""
    state = read_json(Path(checkpoint_dir) / TRAINER_STATE_FILE, "trainer state") or {}
    tokens = state.get("tokens")
    return int(tokens) if isinstance(tokens, (int, float)) and tokens > 0 else None
