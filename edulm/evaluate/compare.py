"""``edulm compare``: a candidate's scores against baselines run with the same protocol.

Each task is compared on its protocol metric. A win is a strictly better score (higher, or lower
for a metric where lower is better); equal scores are ties and are shown as such, never counted as
wins. The win rate against a baseline is wins / tasks compared. A win whose margin exceeds the
combined standard error, ``sqrt(se_candidate^2 + se_baseline^2)``, is a *clear* win; the others
are within the noise of the benchmark's size. Every score carries its standard error; for tasks
that report both, acc and acc_norm are shown side by side. The training-budget table sits next to
the scores, since a model that saw 200x more tokens is expected to score higher.

Optional figures: with a contamination report, every model's score recomputed without the flagged
documents (:mod:`edulm.evaluate.clean`); with ``--bpb-text FILE``, every model's bits per byte on that
text (:mod:`edulm.evaluate.bits_per_byte`), the one figure that does not depend on the tokenizer.

Writes ``comparison.json`` (every number, for the model card and scripts) and ``comparison.md``
(tables and a short written report, :mod:`edulm.evaluate.compare_report`).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

from edulm.base.errors import UsageError
from edulm.evaluate.budgets import Budget, format_tokens, load_budgets, lookup
from edulm.evaluate.protocol import shown_metrics
from edulm.evaluate.results import ModelScores, read_results
from edulm.base.layout import COMPARISON_NAME, CONTAMINATION_NAME, EVAL_NAME

COMPARISON_FORMAT = "edulm-comparison"
"""Value of the ``format`` key of ``comparison.json``."""
COMPARISON_JSON = "comparison.json"
COMPARISON_MD = "comparison.md"

BPB_SEQ_LEN = 1024
"""Default window for ``--bpb-text`` (capped at each model's context): one window length for every model."""


def read_baselines(folder: str | Path, candidate_file: str | Path) -> list[ModelScores]:
    """Every results file in ``folder`` (sorted by name) except the candidate's; other JSON files are skipped."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"{folder}: no such folder; pass the --out folder of 'edulm baselines'")
    candidate = Path(candidate_file).resolve()
    baselines = []
    for path in sorted(folder.glob("*.json")):
        if path.resolve() == candidate or path.name == COMPARISON_JSON:
            continue
        try:
            baselines.append(read_results(path))
        except UsageError as err:
            print(f"skipping {path.name}: {err}", file=sys.stderr)
    if not baselines:
        raise UsageError(f"{folder}: holds no baseline results files; run 'edulm baselines --out {folder}' first")
    return baselines


def combined_stderr(a: float | None, b: float | None) -> float | None:
    """``sqrt(a^2 + b^2)``: the standard error of a difference of two independent scores; None if one is unknown."""
    return math.sqrt(a * a + b * b) if a is not None and b is not None else None


def head_to_head(candidate: ModelScores, baseline: ModelScores, tasks: list[str]) -> dict[str, Any]:
    """Wins (clear ones apart), ties and losses of ``candidate`` against ``baseline`` on the tasks both report."""
    won, clear, tied, lost, missing = [], [], [], [], []
    for task in tasks:
        if task not in baseline.scores or baseline.metrics.get(task) != candidate.metrics.get(task):
            missing.append(task)
            continue
        a, b = candidate.scores[task], baseline.scores[task]
        if a == b:
            tied.append(task)
        elif (a > b) == candidate.higher_is_better.get(task, True):
            won.append(task)
            noise = combined_stderr(candidate.stderr(task), baseline.stderr(task))
            if noise is not None and abs(a - b) > noise:
                clear.append(task)
        else:
            lost.append(task)
    compared = len(won) + len(tied) + len(lost)
    return {
        "name": baseline.name,
        "file": baseline.file,
        "wins": len(won),
        "clear_wins": len(clear),
        "ties": len(tied),
        "losses": len(lost),
        "tasks": compared,
        "win_rate": len(won) / compared if compared else None,
        "won_tasks": won,
        "clear_won_tasks": clear,
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


def _metric_table(models: list[ModelScores], candidate: ModelScores, tasks: list[str]) -> dict[str, Any]:
    """Per task the metrics shown (protocol metric first), and every model's ``[value, stderr]`` of each."""
    shown = {t: shown_metrics(candidate.metrics[t], list(candidate.all_metrics.get(t, {}))) for t in tasks}
    values: dict[str, dict[str, dict[str, list[float | None]]]] = {}
    for m in models:
        values[m.name] = {}
        for t in tasks:
            row = {}
            for metric in shown[t]:
                if metric == m.metrics.get(t) and t in m.scores:
                    row[metric] = [m.scores[t], m.stderr(t)]
                elif metric in m.all_metrics.get(t, {}):
                    mv = m.all_metrics[t][metric]
                    row[metric] = [mv.value, mv.stderr]
            values[m.name][t] = row
    return {"metrics": shown, "values": values}


def _contamination(models: list[ModelScores], flags: dict[str, set[int]], source: str) -> dict[str, Any]:
    """Every model's clean-subset scores (models without samples files are left out) and the report's flag counts."""
    from edulm.evaluate.clean import clean_scores

    clean = {}
    for m in models:
        scores = clean_scores(m, flags)
        if scores:
            clean[m.name] = {task: {metric: s.as_dict() for metric, s in by_metric.items()} for task, by_metric in scores.items()}
    return {"file": source, "flagged_in_report": {t: len(ids) for t, ids in flags.items()}, "clean": clean}


def compare(candidate: ModelScores, baselines: list[ModelScores], budgets: dict[str, Budget],
            flags: dict[str, set[int]] | None = None, flags_source: str | None = None,
            bits_per_byte: dict[str, Any] | None = None) -> dict[str, Any]:
    """The comparison document: scores with standard errors, averages, head-to-head results, overall win rate,
    budgets, warnings, and (when given) contamination-aware scores and bits per byte."""
    tasks = [t for t in candidate.metrics if t in candidate.scores]
    if not tasks:
        raise UsageError(f"{candidate.file}: the candidate has no scores to compare")
    rows = [head_to_head(candidate, b, tasks) for b in baselines]
    models = [candidate, *baselines]
    wins = sum(r["wins"] for r in rows)
    ties = sum(r["ties"] for r in rows)
    compared = sum(r["tasks"] for r in rows)

    def budget_row(m: ModelScores) -> dict[str, Any]:
        """Training tokens of ``m``: its own records first, else the budget table."""
        entry = lookup(budgets, m.name)
        tokens = m.training_tokens if m.training_tokens is not None else (entry.tokens if entry else None)
        source = "the run's training records" if m.training_tokens is not None else (entry.source if entry else "unknown")
        return {"model": m.name, "tokens": tokens, "tokens_text": format_tokens(tokens),
                "note": entry.note if entry else "", "source": source,
                "parameters": m.parameters, "tokens_per_parameter": tokens / m.parameters if tokens and m.parameters else None}

    doc = {
        "format": COMPARISON_FORMAT,
        "format_version": 2,
        "candidate": {"name": candidate.name, "file": candidate.file, "parameters": candidate.parameters,
                      "training_tokens": budget_row(candidate)["tokens"]},
        "protocol": {k: candidate.protocol.get(k) for k in ("num_fewshot", "limit", "seeds")},
        "tasks": tasks,
        "metrics": {t: candidate.metrics[t] for t in tasks},
        "higher_is_better": {t: candidate.higher_is_better.get(t, True) for t in tasks},
        "scores": {m.name: {t: m.scores.get(t) for t in tasks} for m in models},
        "stderr": {m.name: {t: m.stderr(t) if t in m.scores else None for t in tasks} for m in models},
        "metric_table": _metric_table(models, candidate, tasks),
        "averages": {m.name: _average(m, tasks) for m in models},
        "baselines": rows,
        "overall": {"wins": wins, "clear_wins": sum(r["clear_wins"] for r in rows), "ties": ties,
                    "losses": compared - wins - ties, "comparisons": compared,
                    "win_rate": wins / compared if compared else None,
                    "baselines_beaten": sum(1 for r in rows if r["tasks"] and r["wins"] > r["losses"])},
        "budgets": [budget_row(m) for m in models],
        "warnings": _protocol_warnings(candidate, baselines),
    }
    if flags is not None:
        doc["contamination"] = _contamination(models, flags, flags_source or "")
    if bits_per_byte is not None:
        doc["bits_per_byte"] = bits_per_byte
    return doc


def _average(model: ModelScores, tasks: list[str]) -> float | None:
    """Mean protocol score over ``tasks`` (None unless the model has every one)."""
    values = [model.scores.get(t) for t in tasks]
    return sum(values) / len(values) if values and all(v is not None for v in values) else None  # type: ignore[arg-type]


def score_bits_per_byte(models: list[ModelScores], text_file: str | Path, seq_len: int = BPB_SEQ_LEN,
                        device: str = "auto") -> dict[str, Any]:
    """Every model's bits per byte on one text (each loaded with transformers from the folder it was evaluated from).

    A model that cannot be loaded here (a hub model not in the local cache, say) is recorded with its
    error and the others are still scored.
    """
    from edulm.evaluate.perplexity import model_bits_per_byte, read_text
    from edulm.base.devices import resolve_device

    if seq_len < 2:
        raise UsageError(f"--bpb-seq-len {seq_len}: a window needs at least 2 tokens")
    text = read_text(text_file)
    where = str(resolve_device(device))
    scored: dict[str, Any] = {}
    for i, m in enumerate(models, 1):
        print(f"[{i}/{len(models)}] bits per byte: {m.name}", file=sys.stderr, flush=True)
        if not m.model_path:
            scored[m.name] = {"error": "the results file does not record which model was evaluated"}
            continue
        try:
            scored[m.name] = model_bits_per_byte(m.model_path, text, seq_len, device=where)
        except UsageError as err:
            print(f"  {m.name}: {err}", file=sys.stderr, flush=True)
            scored[m.name] = {"error": str(err)}
    return {"text": str(Path(text_file).resolve()), "bytes": len(text.encode("utf-8")), "seq_len": seq_len, "models": scored}


def write_comparison(doc: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``comparison.json`` and ``comparison.md`` atomically into ``out_dir``."""
    from edulm.evaluate.compare_report import render_markdown
    from edulm.base.files import write_json, write_text

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir}: is a file; pass a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / COMPARISON_JSON, out_dir / COMPARISON_MD
    write_json(json_path, doc)
    write_text(md_path, render_markdown(doc))
    return json_path, md_path


def default_out(candidate: str | Path) -> Path:
    """``X/comparison`` for a candidate results file ``X/eval/results.json`` (the layout ``edulm release`` writes)."""
    path = Path(candidate)
    if path.parent.name != EVAL_NAME:
        raise UsageError(f"{candidate}: pass --out DIR (the default, X/{COMPARISON_NAME}, needs the candidate at "
                         f"X/{EVAL_NAME}/results.json)")
    return path.parent.parent / COMPARISON_NAME


def default_contamination(candidate: str | Path) -> Path | None:
    """``X/contamination/contamination.json`` beside a candidate at ``X/eval/results.json``, when it exists."""
    from edulm.evaluate.contamination_report import REPORT_JSON

    path = Path(candidate)
    found = path.parent.parent / CONTAMINATION_NAME / REPORT_JSON
    return found if path.parent.name == EVAL_NAME and found.is_file() else None


def run_compare(candidate: str | Path, baselines_dir: str | Path, out: str | Path | None = None,
                budgets: str | Path | None = None, contamination: str | Path | None = None,
                bpb_text: str | Path | None = None, bpb_seq_len: int = BPB_SEQ_LEN, device: str = "auto") -> tuple[dict[str, Any], Path]:
    """Read, compare and write (holding the output folder's lock); returns the document and the output folder.

    ``out`` None: :func:`default_out`; ``contamination`` None: :func:`default_contamination` when present.
    """
    from edulm.evaluate.clean import read_flags
    from edulm.base.lock import folder_lock

    cand = read_results(candidate)  # first: a wrong candidate is the error to report, not the --out it implies
    out_dir = Path(out) if out is not None else default_out(candidate)
    table = load_budgets(budgets)
    baselines = read_baselines(baselines_dir, candidate)
    report = Path(contamination) if contamination is not None else default_contamination(candidate)
    flags = read_flags(report) if report is not None else None
    with folder_lock(out_dir, "edulm compare"):
        bpb = score_bits_per_byte([cand, *baselines], bpb_text, bpb_seq_len, device) if bpb_text is not None else None
        doc = compare(cand, baselines, table, flags, str(report) if report else None, bpb)
        write_comparison(doc, out_dir)
    return doc, out_dir


def compare_command(candidate: str | Path, baselines_dir: str | Path, out: str | Path | None = None,
                    budgets: str | Path | None = None, contamination: str | Path | None = None,
                    bpb_text: str | Path | None = None, bpb_seq_len: int = BPB_SEQ_LEN, device: str = "auto") -> dict[str, Any]:
    """``edulm compare CANDIDATE BASELINES_DIR [--out DIR]``: compare, print the win rates, say where the report is."""
    from edulm.evaluate.compare_report import pct

    doc, out_dir = run_compare(candidate, baselines_dir, out, budgets, contamination, bpb_text, bpb_seq_len, device)
    for r in doc["baselines"]:
        print(f"{r['name']:<32} wins {r['wins']}/{r['tasks']} ({pct(r['win_rate'])}; {r['clear_wins']} clear), ties {r['ties']}")
    o = doc["overall"]
    print(f"overall: {o['wins']}/{o['comparisons']} ({pct(o['win_rate'])}); {o['clear_wins']} beyond the combined standard error")
    if "contamination" in doc:
        print(f"contamination-aware scores from {doc['contamination']['file']}")
    print(f"wrote {out_dir / COMPARISON_JSON} and {out_dir / COMPARISON_MD}")
    return doc
