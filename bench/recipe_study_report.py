"""The recipe study's arithmetic and output: tokens to reach a target loss, the markdown tables, the plot.

Pure functions of the runs' results (no training here), so they can be tested on numbers alone;
:mod:`recipe_study` (beside this file) trains the runs and calls them.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence


@dataclass(frozen=True)
class Crossing:
    """Where a curve of decayed losses against budgets first reaches a target loss.

    ``fraction``: the interpolated budget (a fraction of the baseline's tokens), or None when the
    target is reached before the smallest budget measured (``below`` is that budget) or not at all
    (``above`` is the largest budget measured).
    """

    fraction: float | None
    below: float | None = None
    above: float | None = None

    def describe(self) -> str:
        """The fraction as a table cell: ``0.52``, ``<= 0.10`` or ``> 1.00 (not reached)``."""
        if self.fraction is not None:
            return f"{self.fraction:.2f}"
        if self.below is not None:
            return f"<= {self.below:.2f}"
        return f"> {self.above:.2f} (not reached)"


def budget_to_reach(points: Sequence[tuple[float, float]], target: float) -> Crossing:
    """The smallest budget at which ``points`` (budget, final loss of a run of that budget) reach ``target``.

    Between two measured budgets the loss is taken as linear in the logarithm of the budget (a loss
    curve against tokens is close to a straight line on a log axis over a short span): the first
    pair ``(b0, l0), (b1, l1)`` in budget order with ``l0 > target >= l1`` gives
    ``log b = log b0 + (l0 - target) / (l0 - l1) * (log b1 - log b0)``. Nothing is extrapolated:
    a target already reached at the smallest budget, or never, is reported as a bound.
    """
    if not points:
        raise ValueError("no budgets measured")
    pts = sorted(points)
    if pts[0][1] <= target:
        return Crossing(None, below=pts[0][0])
    for (b0, l0), (b1, l1) in zip(pts, pts[1:]):
        if l1 <= target:
            t = (l0 - target) / (l0 - l1)
            return Crossing(math.exp(math.log(b0) + t * (math.log(b1) - math.log(b0))))
    return Crossing(None, above=pts[-1][0])


def best_lr(losses: dict[float, float]) -> tuple[float, bool]:
    """The learning rate of the lowest loss, and whether it lies at an edge of the grid (then the grid must grow)."""
    lr = min(losses, key=losses.get)
    grid = sorted(losses)
    return lr, len(grid) < 3 or lr in (grid[0], grid[-1])


def neighbour_lr(grid: Sequence[float], edge: float) -> float:
    """The next grid point beyond ``edge`` (the lowest or highest lr), one grid step further (a factor of 2 for a 2-point grid)."""
    grid = sorted(grid)
    if len(grid) < 2:
        beyond = edge * 2
    elif edge == grid[0]:
        beyond = grid[0] * grid[0] / grid[1]
    else:
        beyond = grid[-1] * grid[-1] / grid[-2]
    return float(f"{beyond:.3g}")  # 0.016, not 0.016000000000000004: the same lr as another arm's 1.6e-2


def mean_spread(values: Sequence[float]) -> tuple[float, float]:
    """Mean and spread (half the range: with two seeds, each seed lies at mean +- spread)."""
    return statistics.fmean(values), (max(values) - min(values)) / 2


def _fmt_seeds(values: Sequence[float], digits: int = 4) -> str:
    if len(values) < 2:
        return f"{values[0]:.{digits}f}" if values else "-"
    mean, spread = mean_spread(values)
    return f"{mean:.{digits}f} +- {spread:.{digits}f} ({len(values)} seeds)"


def arm_table(arms: dict[str, dict]) -> str:
    """The headline table: one row per arm (its best lr)."""
    lines = [
        "| arm | recipe | best lr | final val loss (seed 1) | val loss over seeds | bits per byte (seed 1) "
        "| tokens to reach (a)'s loss, fraction of (a)'s (seed 1) | fraction over seeds |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key, arm in arms.items():
        seeds = arm["seeds"]
        first = seeds[0]
        fractions = [s["crossing"]["fraction"] for s in seeds]
        over = _fmt_seeds(fractions, 2) if all(f is not None for f in fractions) else \
            ", ".join(s["crossing"]["text"] for s in seeds)
        edge = " (grid edge)" if arm["lr_at_edge"] else ""
        lines.append(
            f"| ({key}) | {arm['title']} | {arm['lr']:.1e}{edge} | {first['val_loss']:.4f} "
            f"| {_fmt_seeds([s['val_loss'] for s in seeds])} | {first['val_bpb']:.4f} "
            f"| {first['crossing']['text']} | {over} |"
        )
    return "\n".join(lines)


def sweep_table(sweeps: dict[str, dict[float, float]], titles: dict[str, str]) -> str:
    """Final validation loss of every swept lr (seed 1), best in bold."""
    lrs = sorted({lr for losses in sweeps.values() for lr in losses})
    lines = ["| arm | " + " | ".join(f"lr {lr:.1e}" for lr in lrs) + " |", "|---|" + "---:|" * len(lrs)]
    for key, losses in sweeps.items():
        best = min(losses, key=losses.get)
        cells = [("**%.4f**" if lr == best else "%.4f") % losses[lr] if lr in losses else "" for lr in lrs]
        lines.append(f"| ({key}) {titles[key]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def branch_table(arms: dict[str, dict]) -> str:
    """The decayed loss of every budget of the WSD arms (each seed), against each seed's target."""
    budgets = sorted({b for arm in arms.values() for s in arm["seeds"] for b, _ in s.get("branches", [])})
    if not budgets:
        return ""
    lines = ["| arm, seed | target ((a)'s loss) | " + " | ".join(f"{b:.1f}" for b in budgets) + " | reached at |",
             "|---|---:|" + "---:|" * len(budgets) + "---:|"]
    for key, arm in arms.items():
        for s in arm["seeds"]:
            if not s.get("branches"):
                continue
            by_budget = dict(s["branches"])
            cells = [f"{by_budget[b]:.4f}" if b in by_budget else "" for b in budgets]
            lines.append(f"| ({key}) seed {s['seed']} | {s['target']:.4f} | " + " | ".join(cells)
                         + f" | {s['crossing']['text']} |")
    return "\n".join(lines)


def plot_study(path: Path, arms: dict[str, dict], sweeps: dict[str, dict[float, float]], title: str) -> None:
    """Validation loss against tokens (each arm's best run, seed 1; decayed branch end-points marked) and the lr sweeps."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from edulm.base.files import atomic_path

    fig = Figure(figsize=(11, 4.2))
    FigureCanvasAgg(fig)
    ax, ax_lr = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    colors = {"a": "tab:blue", "b": "tab:orange", "c": "tab:green"}
    target = None
    for key, arm in arms.items():
        first = arm["seeds"][0]
        color = colors.get(key)
        tokens, losses = zip(*first["curve"])
        ax.plot([t / 1e6 for t in tokens], losses, "-", lw=1.4, color=color, label=f"({key}) {arm['title']}, lr {arm['lr']:.0e}")
        if first.get("branch_points"):
            bt, bl = zip(*first["branch_points"])
            ax.plot([t / 1e6 for t in bt], bl, "x", ms=7, mew=1.8, color=color,
                    label=f"({key}) decayed at shorter budgets")
        if key == "a":
            target = first["val_loss"]
        ax_lr.plot(sorted(sweeps[key]), [sweeps[key][lr] for lr in sorted(sweeps[key])], "o-", color=color, label=f"({key})")
    if target is not None:
        ax.axhline(target, color="gray", ls="--", lw=0.8, label=f"(a)'s final val loss {target:.3f}")
    # The interesting range: every end-point (branches included) with a margin, not the first steps' losses.
    ends = [loss for arm in arms.values() for _, loss in arm["seeds"][0].get("branch_points", [])]
    ends += [arm["seeds"][0]["val_loss"] for arm in arms.values()]
    span = max(ends) - min(ends) or 0.5
    ax.set_ylim(min(ends) - 0.1 * span, max(ends) + 0.25 * span)
    ax.set(xlabel="training tokens (millions)", ylabel="validation loss", title=title)
    ax.legend(fontsize=7)
    ax_lr.set_xscale("log")
    ax_lr.set(xlabel="peak learning rate", ylabel="final validation loss (seed 1)", title="learning-rate sweeps")
    ax_lr.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path, "the study's plot") as tmp:
        fig.savefig(tmp, dpi=90, format="png")


def winner_of(arms: dict[str, dict]) -> str:
    """The arm that needed the fewest of (a)'s tokens (mean over seeds; a bound counts as its bound, 'not
    reached' as twice the largest budget); ties go to the lower mean loss."""

    def key(arm: str) -> tuple[float, float]:
        seeds = arms[arm]["seeds"]
        fractions = [s["crossing"]["fraction"] or s["crossing"]["below"] or 2 * (s["crossing"]["above"] or 1) for s in seeds]
        return statistics.fmean(fractions), statistics.fmean(s["val_loss"] for s in seeds)

    return min(arms, key=key)


def write_outputs(out: Path, header: str, arms: dict[str, dict], sweeps: dict[str, dict[float, float]],
                  runs: list[dict], extra: dict, plot_title: str) -> str:
    """``recipe_study.md`` (the tables), ``recipe_study.json`` (every run, the arms, ``extra``) and
    ``recipe_study.png`` in ``out``; returns the markdown."""
    from edulm.base.files import write_json, write_text

    win = winner_of(arms)
    (a_mean, a_spread), (w_mean, w_spread) = (mean_spread([s["val_loss"] for s in arms[k]["seeds"]]) for k in ("a", win))
    gap = a_mean - w_mean
    verdict = "exceeds" if abs(gap) > a_spread + w_spread else "does not exceed"
    lines = [
        header,
        "",
        arm_table(arms),
        "",
        f"Winner: ({win}) {arms[win]['title']}. Final val loss of (a) {a_mean:.4f} +- {a_spread:.4f}, of ({win}) "
        f"{w_mean:.4f} +- {w_spread:.4f}: the gap {gap:.4f} {verdict} the seed spread.",
        "",
        "Learning-rate sweeps (final validation loss, seed 1; best in bold):",
        "",
        sweep_table(sweeps, {k: v["title"] for k, v in arms.items()}),
        "",
        "Decayed loss at each budget (fraction of (a)'s tokens; each a WSD run branched from the stable phase):",
        "",
        branch_table(arms),
    ]
    text = "\n".join(lines) + "\n"
    write_text(out / "recipe_study.md", text)
    write_json(out / "recipe_study.json", {**extra, "winner": win, "arms": arms, "runs": runs})
    plot_study(out / "recipe_study.png", arms, sweeps, plot_title)
    return text
