"""``edulm compare``: a candidate's scores against baselines run with the same protocol.

Each task is compared on its reference metric. A win is a strictly better score (higher, or lower
for a metric where lower is better); equal scores are ties and are shown as such, never counted as
wins. The win rate against a baseline is wins / tasks compared. The training-budget table sits next
to the scores, since a model that saw 200x more tokens is expected to score higher.

Writes ``comparison.json`` (every number, for the model card and scripts) and ``comparison.md``
(tables and a short written report).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edulm.errors import UsageError
from edulm.evaluate.budgets import Budget, format_tokens, load_budgets, lookup
from edulm.evaluate.protocol import RESULTS_FORMAT

COMPARISON_FORMAT = "edulm-comparison"
"""Value of the ``format`` key of ``comparison.json``."""


@dataclass
class ModelScores:
    """One model's reference-metric scores, read from a results file."""

    name: str
    file: str
    scores: dict[str, float]
    metrics: dict[str, str]
    higher_is_better: dict[str, bool]
    protocol: dict[str, Any]
    parameters: int | None = None
    training_tokens: int | None = None


def read_results(path: str | Path) -> ModelScores:
    """Read a results file of ``edulm eval`` (or a plain lm-eval results JSON) into :class:`ModelScores`."""
    from edulm.evaluate.harness import scores_from_results

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such results file; pass the JSON written by 'edulm eval --out'")
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UsageError(f"{path}: not valid JSON ({err}); re-run the evaluation") from None
    if not isinstance(doc, dict) or ("scores" not in doc and "results" not in doc):
        raise UsageError(f"{path}: not an evaluation results file (no 'scores' or 'results'); pass edulm eval output")
    scores = doc.get("scores") if doc.get("format") == RESULTS_FORMAT else scores_from_results(doc)
    model = doc.get("model") if isinstance(doc.get("model"), dict) else {}
    config = doc.get("config") if isinstance(doc.get("config"), dict) else {}
    name = model.get("name") or _pretrained(config.get("model_args")) or path.stem
    return ModelScores(
        name=str(name or path.stem),
        file=str(path),
        scores={t: float(s["value"]) for t, s in (scores or {}).items() if isinstance(s.get("value"), (int, float))},
        metrics={t: s["metric"] for t, s in (scores or {}).items()},
        higher_is_better={t: bool(s.get("higher_is_better", True)) for t, s in (scores or {}).items()},
        protocol=doc.get("protocol", {}),
        parameters=model.get("parameters") or config.get("model_num_parameters"),
        training_tokens=model.get("training_tokens"),
    )


def _pretrained(model_args: Any) -> str | None:
    """The ``pretrained`` model of lm-eval's ``model_args`` (a dict or a ``k=v,k=v`` string)."""
    if isinstance(model_args, dict):
        return model_args.get("pretrained")
    if isinstance(model_args, str):
        for part in model_args.split(","):
            key, _, value = part.partition("=")
            if key.strip() == "pretrained":
                return value.strip()
    return None


def read_baselines(folder: str | Path, candidate_file: str | Path) -> list[ModelScores]:
    """Every results file in ``folder`` (sorted by name) except the candidate's; other JSON files are skipped."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"{folder}: no such folder; pass the --out folder of 'edulm baselines'")
    candidate = Path(candidate_file).resolve()
    baselines = []
    for path in sorted(folder.glob("*.json")):
        if path.resolve() == candidate or path.name == "comparison.json":
            continue
        try:
            baselines.append(read_results(path))
        except UsageError as err:
            print(f"skipping {path.name}: {err}", file=sys.stderr)
    if not baselines:
        raise UsageError(f"{folder}: holds no baseline results files; run 'edulm baselines --out {folder}' first")
    return baselines


def head_to_head(candidate: ModelScores, baseline: ModelScores, tasks: list[str]) -> dict[str, Any]:
    """Wins, ties and losses of ``candidate`` against ``baseline`` on the tasks both report with the same metric."""
    won, tied, lost, missing = [], [], [], []
    for task in tasks:
        if task not in baseline.scores or baseline.metrics.get(task) != candidate.metrics.get(task):
            missing.append(task)
            continue
        a, b = candidate.scores[task], baseline.scores[task]
        if a == b:
            tied.append(task)
        elif (a > b) == candidate.higher_is_better.get(task, True):
            won.append(task)
        else:
            lost.append(task)
    compared = len(won) + len(tied) + len(lost)
    return {
        "name": baseline.name,
        "file": baseline.file,
        "wins": len(won),
        "ties": len(tied),
        "losses": len(lost),
        "tasks": compared,
        "win_rate": len(won) / compared if compared else None,
        "won_tasks": won,
        "tied_tasks": tied,
        "lost_tasks": lost,
        "missing_tasks": missing,
    }


def _protocol_warnings(candidate: ModelScores, baselines: list[ModelScores]) -> list[str]:
    warnings = []
    for key in ("num_fewshot", "limit"):
        mine = candidate.protocol.get(key)
        for b in baselines:
            if b.protocol and b.protocol.get(key) != mine:
                warnings.append(f"{b.name} was run with {key}={b.protocol.get(key)}, the candidate with {key}={mine}")
    if candidate.protocol.get("limit") is not None:
        warnings.append(f"the candidate was run with limit={candidate.protocol['limit']} (a subset of each task): "
                        "the scores are not comparable with published ones")
    return warnings


def compare(candidate: ModelScores, baselines: list[ModelScores], budgets: dict[str, Budget]) -> dict[str, Any]:
    """The comparison document: scores, averages, head-to-head results, overall win rate, budgets, warnings."""
    tasks = [t for t in candidate.metrics if t in candidate.scores]
    if not tasks:
        raise UsageError(f"{candidate.file}: the candidate has no scores to compare")
    rows = [head_to_head(candidate, b, tasks) for b in baselines]
    models = [candidate, *baselines]
    wins = sum(r["wins"] for r in rows)
    ties = sum(r["ties"] for r in rows)
    compared = sum(r["tasks"] for r in rows)

    def budget_row(m: ModelScores) -> dict[str, Any]:
        entry = lookup(budgets, m.name)
        tokens = m.training_tokens if m.training_tokens is not None else (entry.tokens if entry else None)
        source = "the run's training summary" if m.training_tokens is not None else (entry.source if entry else "unknown")
        return {"model": m.name, "tokens": tokens, "tokens_text": format_tokens(tokens),
                "note": entry.note if entry else "", "source": source,
                "parameters": m.parameters, "tokens_per_parameter": tokens / m.parameters if tokens and m.parameters else None}

    return {
        "format": COMPARISON_FORMAT,
        "format_version": 1,
        "candidate": {"name": candidate.name, "file": candidate.file, "parameters": candidate.parameters,
                      "training_tokens": budget_row(candidate)["tokens"]},
        "protocol": {k: candidate.protocol.get(k) for k in ("num_fewshot", "limit", "seeds")},
        "tasks": tasks,
        "metrics": {t: candidate.metrics[t] for t in tasks},
        "higher_is_better": {t: candidate.higher_is_better.get(t, True) for t in tasks},
        "scores": {m.name: {t: m.scores.get(t) for t in tasks} for m in models},
        "averages": {m.name: _average(m, tasks) for m in models},
        "baselines": rows,
        "overall": {"wins": wins, "ties": ties, "losses": compared - wins - ties, "comparisons": compared,
                    "win_rate": wins / compared if compared else None,
                    "baselines_beaten": sum(1 for r in rows if r["tasks"] and r["wins"] > r["losses"])},
        "budgets": [budget_row(m) for m in models],
        "warnings": _protocol_warnings(candidate, baselines),
    }


def _average(model: ModelScores, tasks: list[str]) -> float | None:
    """Mean reference score over ``tasks`` (None unless the model has every one)."""
    values = [model.scores.get(t) for t in tasks]
    return sum(values) / len(values) if values and all(v is not None for v in values) else None  # type: ignore[arg-type]


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _score(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def render_markdown(doc: dict[str, Any]) -> str:
    """``comparison.md``: the score table, the win-rate table, the budget table and a written summary."""
    cand = doc["candidate"]["name"]
    tasks = doc["tasks"]
    best = {t: (max if doc["higher_is_better"].get(t, True) else min)(
        (s[t] for s in doc["scores"].values() if s.get(t) is not None), default=None) for t in tasks}
    lines = [f"# {cand} against {len(doc['baselines'])} baselines", ""]
    lines += [_summary(doc), ""]
    lines += ["## Scores", "",
              f"Zero-shot lm-evaluation-harness, each task's reference metric ({doc['protocol'].get('num_fewshot', 0)}-shot); "
              "the best score per task is in bold.", ""]
    lines.append("| Model | " + " | ".join(f"{t} ({doc['metrics'][t]})" for t in tasks) + " | Average |")
    lines.append("|---" * (len(tasks) + 2) + "|")
    for name, scores in doc["scores"].items():
        cells = []
        for t in tasks:
            text = _score(scores.get(t))
            cells.append(f"**{text}**" if scores.get(t) is not None and scores.get(t) == best[t] else text)
        label = f"**{name}** (candidate)" if name == cand else name
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {_score(doc['averages'].get(name))} |")
    lines += ["", "## Win rate", "",
              "A win is a strictly better score than the baseline on a task; equal scores are ties.", "",
              "| Baseline | Wins / tasks | Win rate | Ties | Losses | Tied tasks |", "|---|---|---|---|---|---|"]
    for r in doc["baselines"]:
        tied = ", ".join(r["tied_tasks"]) or "–"
        lines.append(f"| {r['name']} | {r['wins']} / {r['tasks']} | {_pct(r['win_rate'])} | {r['ties']} | {r['losses']} | {tied} |")
    o = doc["overall"]
    lines.append(f"| **all baselines** | {o['wins']} / {o['comparisons']} | {_pct(o['win_rate'])} | {o['ties']} | {o['losses']} | |")
    lines += ["", "## Training budgets", "",
              "| Model | Training tokens | Tokens per parameter | Source |", "|---|---|---|---|"]
    for b in doc["budgets"]:
        tpp = b["tokens_per_parameter"]
        tpp = "–" if not tpp else f"{tpp:,.0f}" if tpp >= 10 else f"{tpp:.2g}"
        note = f" ({b['note']})" if b["note"] else ""
        lines.append(f"| {b['model']} | {b['tokens_text']}{note} | {tpp} | {b['source']} |")
    if doc["warnings"]:
        lines += ["", "## Caveats", ""] + [f"- {w}" for w in doc["warnings"]]
    return "\n".join(lines) + "\n"


def _summary(doc: dict[str, Any]) -> str:
    """The written report: overall win rate, where the candidate leads and trails, and the budget context."""
    cand = doc["candidate"]["name"]
    o = doc["overall"]
    n = len(doc["baselines"])
    parts = [
        f"{cand} wins {o['wins']} of {o['comparisons']} task comparisons against {n} baseline{'s' * (n != 1)} "
        f"(win rate {_pct(o['win_rate'])}, {o['ties']} tie{'s' * (o['ties'] != 1)}), and scores better than "
        f"{o['baselines_beaten']} of {n} baselines on a majority of tasks."
    ]
    scores = doc["scores"]
    others = [name for name in scores if name != cand]
    lead = [t for t in doc["tasks"] if all(scores[o_].get(t) is None or _better(doc, t, scores[cand][t], scores[o_][t]) for o_ in others)]
    trail = [t for t in doc["tasks"] if all(scores[o_].get(t) is None or _better(doc, t, scores[o_][t], scores[cand][t]) for o_ in others)]
    if lead:
        parts.append(f"It leads every baseline on {', '.join(lead)}.")
    if trail:
        parts.append(f"It trails every baseline on {', '.join(trail)}.")
    rows = sorted(doc["baselines"], key=lambda r: (r["win_rate"] is None, -(r["win_rate"] or 0)))
    if rows:
        parts.append(f"Against {rows[0]['name']} it wins {rows[0]['wins']} of {rows[0]['tasks']}; against "
                     f"{rows[-1]['name']} {rows[-1]['wins']} of {rows[-1]['tasks']}.")
    mine = doc["candidate"]["training_tokens"]
    budgets = {b["model"]: b["tokens"] for b in doc["budgets"]}
    if mine:
        more = [name for name in others if budgets.get(name) and budgets[name] > mine]
        if more:
            ratio = max(budgets[name] for name in more) / mine
            parts.append(f"{cand} trained on {format_tokens(mine)} tokens; {len(more)} of the baselines saw more "
                         f"(up to {ratio:.0f}x as many), so wins against them come from a smaller budget.")
    else:
        parts.append("The candidate's training tokens are not recorded; pass --budgets to add them.")
    return " ".join(parts)


def _better(doc: dict[str, Any], task: str, a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return False
    return a > b if doc["higher_is_better"].get(task, True) else a < b


def write_comparison(doc: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``comparison.json`` and ``comparison.md`` atomically into ``out_dir``."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir}: is a file; pass a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = (out_dir / "comparison.json", out_dir / "comparison.md")
    for path, text in zip(paths, (json.dumps(doc, indent=2) + "\n", render_markdown(doc))):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return paths


def compare_command(args: argparse.Namespace) -> None:
    """``edulm compare CANDIDATE BASELINES_DIR --out DIR [--budgets FILE]``."""
    budgets = load_budgets(args.budgets)
    candidate = read_results(args.candidate)
    baselines = read_baselines(args.baselines_dir, args.candidate)
    doc = compare(candidate, baselines, budgets)
    json_path, md_path = write_comparison(doc, args.out)
    for r in doc["baselines"]:
        print(f"{r['name']:<32} wins {r['wins']}/{r['tasks']} ({_pct(r['win_rate'])}), ties {r['ties']}")
    o = doc["overall"]
    print(f"overall: {o['wins']}/{o['comparisons']} ({_pct(o['win_rate'])})")
    print(f"wrote {json_path} and {md_path}")
