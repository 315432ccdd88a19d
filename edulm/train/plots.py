"""Training plots from ``training_metrics.csv``: ``training_curves.png``, ``loss_curve_zoom.png`` and, for a run with
``train.downstream``, ``downstream_curves.png``.

Drawn with matplotlib's object API on the Agg canvas (no pyplot, no global state, no display needed).
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from edulm.base.files import atomic_path
from edulm.base.layout import CURVES_FILE, DOWNSTREAM_PLOT_FILE, ZOOM_FILE
from edulm.base.metrics import read_metrics


def _series(rows: list[dict], key: str, min_step: float = -1) -> tuple[list[float], list[float]]:
    pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None and r["step"] > min_step]
    return [p[0] for p in pts], [p[1] for p in pts]


def _save(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    with atomic_path(path, f"the plot {path.name}") as tmp:
        fig.savefig(tmp, dpi=120, format="png")


def plot_training(csv_path: str | Path, out_dir: str | Path, warmup_steps: int = 0, title: str = "") -> list[Path]:
    """Draw both figures from the metrics CSV into ``out_dir``; returns the written paths."""
    rows = read_metrics(csv_path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    fig = Figure(figsize=(12, 8))
    (ax_loss, ax_val), (ax_lr, ax_tps) = fig.subplots(2, 2)
    ax_loss.plot(*_series(rows, "loss"), lw=1, label="train loss")
    ax_loss.plot(*_series(rows, "val_loss"), "o-", ms=3, label="val loss")
    ax_loss.set(xlabel="step", ylabel="loss", title="loss")
    ax_loss.legend()
    ax_val.plot(*_series(rows, "val_loss"), "o-", ms=3, color="tab:orange")
    ax_val.set(xlabel="step", ylabel="val loss", title="held-out loss")
    ax_lr.plot(*_series(rows, "lr"), color="tab:green")
    ax_lr.set(xlabel="step", ylabel="learning rate", title="learning rate")
    ax_tps.plot(*_series(rows, "tokens_per_s"), color="tab:red")
    ax_tps.set(xlabel="step", ylabel="tokens / s", title="throughput")
    for ax in (ax_loss, ax_val, ax_lr, ax_tps):
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    curves = out_dir / CURVES_FILE
    _save(fig, curves)

    fig = Figure(figsize=(8, 5))
    ax = fig.subplots()
    steps, losses = _series(rows, "loss", min_step=warmup_steps)
    if not steps:  # a run shorter than its warmup: show what there is
        steps, losses = _series(rows, "loss")
    ax.plot(steps, losses, lw=1, label="train loss")
    ax.plot(*_series(rows, "val_loss", min_step=warmup_steps), "o-", ms=3, label="val loss")
    finite = [v for v in losses if v == v and abs(v) != float("inf")]
    if finite:
        low, high = min(finite), max(finite)
        pad = 0.05 * (high - low or 1.0)
        ax.set_ylim(low - pad, high + pad)
    ax.set(xlabel="step", ylabel="loss", title=f"loss after warmup (step > {warmup_steps})")
    ax.grid(alpha=0.3)
    ax.legend()
    zoom = out_dir / ZOOM_FILE
    _save(fig, zoom)
    return [curves, zoom]


def plot_downstream(csv_path: str | Path, out_dir: str | Path, tasks: list[dict], title: str = "") -> Path | None:
    """``downstream_curves.png``: one panel per task of ``train.downstream``, acc and acc_norm against training tokens
    (bars: one standard error), the chance level dashed (``tasks``: the summary's subsets). None when no row has a
    downstream score."""
    rows = read_metrics(csv_path)
    drawn = [t for t in tasks if any(r.get(f"downstream/{t['task']}/acc") is not None for r in rows)]
    if not drawn:
        return None
    fig = Figure(figsize=(6 * min(len(drawn), 3), 4 * ((len(drawn) + 2) // 3)))
    axes = fig.subplots((len(drawn) + 2) // 3, min(len(drawn), 3), squeeze=False).flatten()
    for ax, task in zip(axes, drawn):
        for metric in ("acc", "acc_norm"):
            key = f"downstream/{task['task']}/{metric}"
            pts = [(r["tokens"], r[key], r.get(f"{key}_stderr") or 0.0) for r in rows if r.get(key) is not None]
            if pts:
                ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], fmt="o-", ms=3,
                            capsize=2, label=metric)
        if task.get("chance") is not None:
            ax.axhline(task["chance"], ls="--", color="grey", label=f"chance {task['chance']:.3f}")
        ax.set(xlabel="training tokens", ylabel="score", title=f"{task['task']} ({task['examples']} examples)")
        ax.grid(alpha=0.3)
        ax.legend()
    for ax in axes[len(drawn):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    path = Path(out_dir) / DOWNSTREAM_PLOT_FILE
    _save(fig, path)
    return path

