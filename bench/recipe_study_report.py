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


T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
"""Two-sided 95% quantiles of Student's t for 1 ... 30 degrees of freedom (seeds - 1)."""


def interval(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and the half-width of its 95% Student-t interval (None for one value; beyond 31 values the normal 1.96)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, None
    t = T_975[len(values) - 2] if len(values) - 1 <= len(T_975) else 1.96
    return mean, t * statistics.stdev(values) / math.sqrt(len(values))


def fmt_interval(values: Sequence[float | None], digits: int = 4) -> str:
    """``mean +- half-width`` of the 95% interval, or ``-`` when a value is missing."""
    if not values or any(v is None for v in values):
        return "-"
    mean, half = interval(values)
    return f"{mean:.{digits}f}" if half is None else f"{mean:.{digits}f} +- {half:.{digits}f}"


def fractions(arm: dict) -> list[float | None]:
    """Each seed's fraction of (a)'s tokens (None where only a bound was measured)."""
    return [s["crossing"]["fraction"] for s in arm["seeds"]]


def trend_table(widths: dict[str, dict]) -> str:
    """The headline: one row per width and arm (its rate chosen on the mean over seeds)."""
    lines = [
        "| width | parameters | tokens | arm | lr | final val loss | next-word acc | tokens to reach (a)'s loss, "
        "each seed | fraction, mean |",
        "|---|---:|---:|---|---:|---:|---:|---|---:|",
    ]
    for name, arms in widths.items():
        for key, arm in arms.items():
            seeds = arm["seeds"]
            edge = " (edge)" if arm["lr_at_edge"] else ""
            each = ", ".join(s["crossing"]["text"] for s in seeds)
            lines.append(
                f"| {name} | {seeds[0]['parameters']:,} | {seeds[0]['tokens']:,} | ({key}) {arm['title']} "
                f"| {arm['lr']:.1e}{edge} | {fmt_interval([s['val_loss'] for s in seeds])} "
                f"| {fmt_interval([s['next_word_acc'] for s in seeds], 3)} | {each} | {fmt_interval(fractions(arm), 2)} |")
    return "\n".join(lines)


def sweep_table(widths: dict[str, dict]) -> str:
    """Mean final validation loss over the seeds of every swept lr, per width and arm; the chosen one in bold."""
    lrs = sorted({lr for arms in widths.values() for arm in arms.values() for lr in arm["sweep"]})
    lines = ["| width, arm | " + " | ".join(f"{lr:.1e}" for lr in lrs) + " |", "|---|" + "---:|" * len(lrs)]
    for name, arms in widths.items():
        for key, arm in arms.items():
            means = {lr: statistics.fmean(v) for lr, v in arm["sweep"].items()}
            cells = [("**%.4f**" if lr == arm["lr"] else "%.4f") % means[lr] if lr in means else "" for lr in lrs]
            lines.append(f"| {name} ({key}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def branch_table(widths: dict[str, dict]) -> str:
    """The decayed loss of every budget of the WSD arms (each width and seed), against each seed's target."""
    budgets = sorted({b for arms in widths.values() for arm in arms.values() for s in arm["seeds"]
                      for b, _ in s.get("branches", [])})
    if not budgets:
        return ""
    lines = ["| width, arm, seed | target ((a)'s loss) | " + " | ".join(f"{b:.1f}" for b in budgets) + " | reached at |",
             "|---|---:|" + "---:|" * len(budgets) + "---:|"]
    for name, arms in widths.items():
        for key, arm in arms.items():
            for s in arm["seeds"]:
                if not s.get("branches"):
                    continue
                by_budget = dict(s["branches"])
                cells = [f"{by_budget[b]:.4f}" if b in by_budget else "" for b in budgets]
                lines.append(f"| {name} ({key}) seed {s['seed']} | {s['target']:.4f} | " + " | ".join(cells)
                             + f" | {s['crossing']['text']} |")
    return "\n".join(lines)


def embedding_table(embedding: dict) -> str:
    """Muon's arm with its AdamW part (embedding, norms) at other rates than its matrices; each against the shared
    rate (factor 1) seed for seed."""
    rows = {float(f): row for f, row in embedding["factors"].items()}
    shared = rows[1.0]["val_loss"]
    lines = ["| AdamW part's lr (x Muon's) | AdamW part's lr | final val loss | minus the shared rate's, seed for seed "
             "| next-word acc |", "|---:|---:|---:|---:|---:|"]
    for factor, row in sorted(rows.items()):
        gap = "" if factor == 1.0 else fmt_interval([x - y for x, y in zip(row["val_loss"], shared)])
        lines.append(f"| {factor:g} | {row['adamw_lr']:.1e} | {fmt_interval(row['val_loss'])} | {gap} "
                     f"| {fmt_interval(row['next_word_acc'], 3)} |")
    return "\n".join(lines)


def paired_gap(arms: dict[str, dict], a: str, b: str) -> tuple[float, float | None]:
    """(a)'s final loss minus ``b``'s, seed by seed (the same seed: the same initialisation and data order), as a
    mean and 95% interval."""
    return interval([x["val_loss"] - y["val_loss"] for x, y in zip(arms[a]["seeds"], arms[b]["seeds"])])


def winner_of(arms: dict[str, dict]) -> str:
    """The arm that needed the fewest of (a)'s tokens (mean over seeds; a bound counts as its bound, 'not
    reached' as twice the largest budget); ties go to the lower mean loss."""

    def key(arm: str) -> tuple[float, float]:
        seeds = arms[arm]["seeds"]
        values = [s["crossing"]["fraction"] or s["crossing"]["below"] or 2 * (s["crossing"]["above"] or 1) for s in seeds]
        return statistics.fmean(values), statistics.fmean(s["val_loss"] for s in seeds)

    return min(arms, key=key)


def plot_study(path: Path, widths: dict[str, dict], title: str) -> None:
    """Left: each WSD arm's fraction of (a)'s tokens against parameters (95% intervals); middle: validation loss
    against tokens at the largest width (seed 1, decayed branch end-points marked); right: the lr sweeps."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    from edulm.base.files import atomic_path

    fig = Figure(figsize=(14, 4.2))
    FigureCanvasAgg(fig)
    ax_trend, ax, ax_lr = fig.subplots(1, 3, gridspec_kw={"width_ratios": [2, 3, 2]})
    colors = {"a": "tab:blue", "b": "tab:orange", "c": "tab:green"}
    styles = ["o:", "s--", "^-", "v-."]
    for key in ("b", "c"):
        xs, ys, errs = [], [], []
        for arms in widths.values():
            params = arms[key]["seeds"][0]["parameters"]
            for s in arms[key]["seeds"]:  # every seed: a measured fraction as a dot, a bound as a triangle
                c = s["crossing"]
                if c["fraction"] is not None:
                    ax_trend.plot(params, c["fraction"], ".", color=colors[key], alpha=0.5)
                elif c["below"] is not None:
                    ax_trend.plot(params, c["below"], "v", color=colors[key], alpha=0.5)
                else:
                    ax_trend.plot(params, c["above"], "^", color=colors[key], alpha=0.5)
            values = fractions(arms[key])
            if all(v is not None for v in values):
                mean, half = interval(values)
                xs.append(params)
                ys.append(mean)
                errs.append(half or 0.0)
        if xs:
            ax_trend.errorbar(xs, ys, yerr=errs, fmt="o-", capsize=4, color=colors[key],
                              label=f"({key}) mean, 95% interval (dots: seeds; triangles: bounds)")
    ax_trend.axhline(1.0, color="tab:blue", ls="--", lw=0.8, label="(a) = 1")
    ax_trend.set_xscale("log")
    ax_trend.set(xlabel="parameters", ylabel="fraction of (a)'s tokens", title="tokens to reach (a)'s loss")
    ax_trend.legend(fontsize=7)
    largest = list(widths)[-1]
    ends = []
    for key, arm in widths[largest].items():
        first = arm["seeds"][0]
        tokens, losses = zip(*first["curve"])
        ax.plot([t / 1e6 for t in tokens], losses, "-", lw=1.4, color=colors.get(key),
                label=f"({key}) {arm['title']}, lr {arm['lr']:.0e}")
        if first.get("branch_points"):
            bt, bl = zip(*first["branch_points"])
            ax.plot([t / 1e6 for t in bt], bl, "x", ms=7, mew=1.8, color=colors.get(key),
                    label=f"({key}) decayed at shorter budgets")
            ends += list(bl)
        ends.append(first["val_loss"])
        if key == "a":
            ax.axhline(first["val_loss"], color="gray", ls="--", lw=0.8, label=f"(a)'s final val loss {first['val_loss']:.3f}")
    span = max(ends) - min(ends) or 0.5  # the end-points with a margin, not the first steps' losses
    ax.set_ylim(min(ends) - 0.1 * span, max(ends) + 0.25 * span)
    ax.set(xlabel="training tokens (millions)", ylabel="validation loss", title=f"{largest}, seed 1")
    ax.legend(fontsize=7)
    for (name, arms), style in zip(widths.items(), styles):
        for key, arm in arms.items():
            lrs = sorted(arm["sweep"])
            ax_lr.plot(lrs, [statistics.fmean(arm["sweep"][lr]) for lr in lrs], style, color=colors.get(key),
                       label=f"{name} ({key})", ms=4)
    ax_lr.set_xscale("log")
    ax_lr.xaxis.set_minor_formatter(NullFormatter())  # the grids' factor-2 points crowd a log axis' minor labels
    ax_lr.set(xlabel="peak learning rate", ylabel="final val loss, mean over seeds", title="learning-rate sweeps")
    ax_lr.legend(fontsize=6, ncol=2)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path, "the study's plot") as tmp:
        fig.savefig(tmp, dpi=90, format="png")


def write_outputs(out: Path, header: str, results: dict, runs: list[dict], extra: dict, plot_title: str) -> str:
    """``recipe_study.md`` (the tables), ``recipe_study.json`` (every run, the widths' arms, ``extra``) and
    ``recipe_study.png`` in ``out``; returns the markdown."""
    from edulm.base.files import write_json, write_text

    widths = results["widths"]
    verdicts = []
    for name, arms in widths.items():
        win = winner_of(arms)
        if win == "a":
            verdicts.append(f"- {name}: (a) itself needed the fewest tokens.")
            continue
        gap, half = paired_gap(arms, "a", win)
        sure = "" if half is None else (" (the interval excludes 0)" if abs(gap) > half else " (the interval includes 0)")
        needed = fmt_interval(fractions(arms[win]), 2)
        if needed == "-":  # a bound for some seed: each seed's as measured
            needed = ", ".join(s["crossing"]["text"] for s in arms[win]["seeds"])
        verdicts.append(f"- {name}: ({win}) {arms[win]['title']} needed {needed} of (a)'s "
                        f"tokens; at the full budget its loss is {gap:.4f}" + ("" if half is None else f" +- {half:.4f}")
                        + f" below (a)'s, seed for seed{sure}.")
    lines = [
        header, "",
        "Figures over seeds: mean +- the half-width of the 95% Student-t interval. Each arm's rate and each width's "
        "winner are chosen on these same seeds, which flatters them a little; the seeds pair the arms (the same "
        "initialisation and data order), so differences are taken seed for seed.", "",
        trend_table(widths), "",
        "Winner per width (fewest of (a)'s tokens, mean over seeds):", "", *verdicts, "",
        "Learning-rate sweeps (final validation loss, mean over seeds; the chosen rate in bold):", "",
        sweep_table(widths), "",
        "Decayed loss at each budget (fraction of (a)'s tokens; each a WSD run branched from the stable phase):", "",
        branch_table(widths),
    ]
    if results.get("embedding"):
        emb = results["embedding"]
        lines += ["", f"{emb['width']}, (c) Muon + WSD with Muon's matrices at {emb['muon_lr']:.1e} and the AdamW part "
                  "(embedding, norms) at another rate:", "", embedding_table(emb)]
    text = "\n".join(lines) + "\n"
    write_text(out / "recipe_study.md", text)
    write_json(out / "recipe_study.json", {**extra, "widths": widths, "embedding": results.get("embedding"), "runs": runs})
    plot_study(out / "recipe_study.png", widths, plot_title)
    return text
