"""``edulm compare --runs RUN_DIR RUN_DIR ...``: training runs side by side, the recipe question answered.

Did Muon or a WSD schedule buy benchmark points, or only loss? Each run's metrics CSV holds its held-out loss
and, with ``train.downstream``, its benchmark scores during training (``downstream/TASK/METRIC`` and their
standard errors). This reads them back and writes, into the output folder:

- ``runs_comparison.png``: held-out loss against training tokens, and one panel per downstream task and metric
  the runs share, every run a line (bars: one standard error), the task's chance level dashed;
- ``runs_comparison.md`` and ``.json``: each run's recipe, tokens, final loss and final scores (with their
  standard errors and the tokens after which each stood above chance by two of them), and every later run's
  final score against the first run's: the difference, and whether it exceeds the combined standard error
  ``sqrt(se_1^2 + se_2^2)`` (as ``edulm compare`` judges a win against a baseline).

Runs with different tasks or subset sizes are compared on what they share; a run without downstream columns
still shows its loss.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from edulm.base.errors import UsageError
from edulm.base.layout import RunLayout
from edulm.evaluate.in_loop import COLUMN_PREFIX, tokens_above_chance

RUNS_JSON = "runs_comparison.json"
RUNS_MD = "runs_comparison.md"
RUNS_PLOT = "runs_comparison.png"


def read_run(run_dir: str | Path) -> dict[str, Any]:
    """One run's name, recipe, loss curve, downstream curves and last figures, from its metrics CSV (what was
    logged, also of a run still going or stopped) and its summary (the recipe and the tasks' chance levels)."""
    from edulm.evaluate.artifacts import last_validation, metrics_rows, run_name, training_summary

    if not RunLayout.of(run_dir).metrics.is_file():
        raise UsageError(f"{run_dir}: no training metrics in it; pass the run dir of an edulm train run")
    summary = training_summary(run_dir) or {}
    rows = metrics_rows(run_dir)
    tasks = (summary.get("downstream") or {}).get("tasks") or []
    chance = {t["task"]: t.get("chance") for t in tasks}
    names = sorted({k for r in rows for k, v in r.items() if k.startswith(COLUMN_PREFIX) and not k.endswith("_stderr")
                    and v is not None})
    downstream = {}
    for name in names:
        points = [(r["tokens"], r[name], r.get(f"{name}_stderr")) for r in rows if r.get(name) is not None]
        task = name.split("/")[1]
        examples = next((t.get("examples") for t in tasks if t["task"] == task), None)
        downstream[name] = {"curve": points, "final": points[-1][1], "final_stderr": points[-1][2],
                            "final_tokens": points[-1][0], "examples": examples,
                            "above_chance_after_tokens": tokens_above_chance(points, chance.get(task))}
    last = last_validation(rows)
    return {
        "run_dir": str(run_dir),
        "name": run_name(run_dir) or summary.get("run") or Path(run_dir).resolve().name,
        "status": summary.get("status"),
        "optimizer": summary.get("optimizer"),  # the names: the descriptions fill the summary, too long for a table
        "schedule": summary.get("schedule"),
        "tokens": int(rows[-1]["tokens"]) if rows and rows[-1].get("tokens") is not None else None,
        "final_val_loss": last["val_loss"] if last else None,
        "val_curve": [(r["tokens"], r["val_loss"]) for r in rows if r.get("val_loss") is not None],
        "chance": chance,
        "downstream": downstream,
    }


def differences(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every later run's last score on each shared downstream metric against the first run's.

    ``beyond_stderr`` is None (unknown) where a standard error is missing or 0 (a subset scored all right or all
    wrong), and where the two scores were taken at different training tokens or on subsets of different sizes,
    which ``comparable`` says.
    """
    from edulm.evaluate.compare import combined_stderr

    first, out = runs[0], []
    for other in runs[1:]:
        for name in sorted(set(first["downstream"]) & set(other["downstream"])):
            a, b = first["downstream"][name], other["downstream"][name]
            noise = combined_stderr(a["final_stderr"], b["final_stderr"])
            comparable = a["final_tokens"] == b["final_tokens"] and a["examples"] == b["examples"]
            diff = b["final"] - a["final"]
            out.append({"run": other["name"], "against": first["name"], "metric": name, "difference": diff,
                        "combined_stderr": noise, "comparable": comparable,
                        "beyond_stderr": abs(diff) > noise if noise and comparable else None})
    return out


def render_markdown(doc: dict[str, Any]) -> str:
    """The tables of ``runs_comparison.md``."""
    runs = doc["runs"]
    names = sorted({n for r in runs for n in r["downstream"]})
    header = "| run | optimizer | schedule | tokens | final val loss | " + " | ".join(n[len(COLUMN_PREFIX):] for n in names) + " |"
    lines = ["# Runs compared", "", header, "|---|---|---|---:|---:|" + "---:|" * len(names)]
    for r in runs:
        cells = []
        for n in names:
            d = r["downstream"].get(n)
            cells.append("" if d is None else f"{d['final']:.4f}" + (f" +- {d['final_stderr']:.4f}" if d["final_stderr"] else ""))
        loss = f"{r['final_val_loss']:.4f}" if r["final_val_loss"] is not None else "-"
        tokens = f"{r['tokens']:,}" if r["tokens"] is not None else "-"
        lines.append(f"| {r['name']} | {r['optimizer'] or '-'} | {r['schedule'] or '-'} | {tokens} | {loss} | " + " | ".join(cells) + " |")
    lines += ["", "Scores are the last scoring's, +- one standard error."]
    if doc["differences"]:
        lines += ["", f"Against {runs[0]['name']} (beyond noise: the difference exceeds the combined standard error):", "",
                  "| run | metric | difference | combined standard error | beyond noise |", "|---|---|---:|---:|---|"]
        for d in doc["differences"]:
            noise = f"{d['combined_stderr']:.4f}" if d["combined_stderr"] is not None else "-"
            beyond = {True: "yes", False: "no", None: "unknown"}[d["beyond_stderr"]]
            if not d["comparable"]:
                beyond += " (scored at other tokens or on another subset size)"
            lines.append(f"| {d['run']} | {d['metric'][len(COLUMN_PREFIX):]} | {d['difference']:+.4f} | {noise} "
                         f"| {beyond} |")
        lines += ["", "Two runs scored on the same examples are paired, so the combined error overstates the noise "
                      "of their difference: 'no' is cautious, 'yes' is safe."]
    above = [(r, n, d) for r in runs for n, d in r["downstream"].items()]
    if above:
        lines += ["", "Above chance by two standard errors after (training tokens):", ""]
        for r, n, d in above:
            if r["chance"].get(n.split("/")[1]) is None:
                when = "no chance level (not a multiple-choice task, or the run's summary is missing)"
            else:
                when = f"{int(d['above_chance_after_tokens']):,}" if d["above_chance_after_tokens"] is not None else "not yet"
            lines.append(f"- {r['name']}, {n[len(COLUMN_PREFIX):]}: {when}")
    return "\n".join(lines) + "\n"


def plot_runs(runs: list[dict[str, Any]], path: Path) -> None:
    """``runs_comparison.png``: the loss panel, then one panel per downstream metric, a line per run."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from edulm.base.files import atomic_path

    names = sorted({n for r in runs for n in r["downstream"]})
    panels = 1 + len(names)
    cols = min(panels, 3)
    fig = Figure(figsize=(5.5 * cols, 4 * ((panels + cols - 1) // cols)))
    FigureCanvasAgg(fig)
    axes = fig.subplots((panels + cols - 1) // cols, cols, squeeze=False).flatten()
    for r in runs:
        if r["val_curve"]:
            tokens, losses = zip(*r["val_curve"])
            axes[0].plot(tokens, losses, "-", label=r["name"])
    axes[0].set(xlabel="training tokens", ylabel="held-out loss", title="held-out loss")
    for ax, name in zip(axes[1:], names):
        task = name.split("/")[1]
        for r in runs:
            d = r["downstream"].get(name)
            if d:
                ax.errorbar([p[0] for p in d["curve"]], [p[1] for p in d["curve"]], yerr=[p[2] or 0.0 for p in d["curve"]],
                            fmt="o-", ms=3, capsize=2, label=r["name"])
        chance = next((r["chance"].get(task) for r in runs if r["chance"].get(task) is not None), None)
        if chance is not None:
            ax.axhline(chance, ls="--", color="grey", label=f"chance {chance:.3f}")
        ax.set(xlabel="training tokens", ylabel="score", title=name[len(COLUMN_PREFIX):])
    for ax in axes[:panels]:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes[panels:]:
        ax.set_visible(False)
    fig.tight_layout()
    with atomic_path(path, "the runs comparison plot") as tmp:
        fig.savefig(tmp, dpi=90, format="png")


def compare_runs_command(run_dirs: list[str], out: str | Path | None = None) -> dict[str, Any]:
    """Read the runs, write the plot and tables into ``out`` (default ``runs_comparison`` in the current folder),
    print the final scores and where the files are."""
    from edulm.base.files import write_json, write_text
    from edulm.base.lock import folder_lock

    if len(run_dirs) < 2:
        raise UsageError(f"--runs takes two or more run dirs, got {len(run_dirs)}")
    folders = [Path(d).resolve() for d in run_dirs]
    if len(set(folders)) < len(folders):
        raise UsageError("--runs names the same run dir twice; pass each run once")
    runs = [read_run(d) for d in run_dirs]  # every run read before anything is written
    if len({r["name"] for r in runs}) < len(runs):  # the same run.name twice: each is told apart by its folder
        common = Path(os.path.commonpath(folders))
        for r, folder in zip(runs, folders):
            r["name"] = str(folder.relative_to(common))
    out_dir = Path(out) if out is not None else Path("runs_comparison")
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir}: is a file; pass a folder")
    doc = {"format": "edulm-runs-comparison", "runs": runs, "differences": differences(runs)}
    with folder_lock(out_dir, "edulm compare --runs"):
        write_json(out_dir / RUNS_JSON, doc)
        write_text(out_dir / RUNS_MD, render_markdown(doc))
        plot_runs(runs, out_dir / RUNS_PLOT)
    for r in runs:
        scores = ", ".join(f"{n[len(COLUMN_PREFIX):]} {d['final']:.4f}" for n, d in r["downstream"].items())
        loss = f"{r['final_val_loss']:.4f}" if r["final_val_loss"] is not None else "-"
        print(f"{r['name']:<32} val loss {loss}" + (f"; {scores}" if scores else ""))
    print(f"wrote {out_dir / RUNS_MD}, {RUNS_JSON} and {RUNS_PLOT}")
    return doc
