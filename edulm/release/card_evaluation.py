"""The model card's sections about evaluation: scores with error bars and clean subsets, the comparison with
baselines, training budgets and the contamination audit (one function per section)."""

from __future__ import annotations

from typing import Any

from edulm.release.card_inputs import CardInputs
from edulm.release.card_sections import fmt_int, fmt_tokens, md_table
from edulm.evaluate.compare_report import CLEAR_MARK, score_text
from edulm.evaluate.protocol import shown_metrics

CONTAMINATED_MARK = "⚠"
"""Marks a task with benchmark documents found in the training text."""


def _metric_rows(inputs: CardInputs, task: str, audited: bool) -> list[list[str]]:
    """One row per metric shown for ``task`` (the protocol metric, in bold, first)."""
    score = inputs.scores[task]
    protocol = score["metric"]
    reported = inputs.results.all_metrics.get(task, {}) if inputs.results else {}
    flagged = inputs.flagged(task)
    rows = []
    for metric in shown_metrics(protocol, list(reported)):
        if metric == protocol:
            value, err = score["value"], score.get("stderr")
        else:
            value, err = reported[metric].value, reported[metric].stderr
        first = metric == protocol
        row = [f"{task} {CONTAMINATED_MARK}" if first and flagged and flagged[0] else (task if first else ""),
               f"**{metric}**" if first else metric, score_text(value, err)]
        if audited:
            joined = inputs.clean.get(task, {}).get(metric)
            if joined is None:
                clean = "–"
            else:
                clean = "no clean documents" if joined.clean is None else score_text(joined.clean, joined.clean_stderr)
            count = ("not audited" if flagged is None else f"{flagged[0]:,} of {flagged[1]:,}") if first else ""
            row += [clean, count]
        rows.append(row)
    return rows


def _contamination_effects(inputs: CardInputs) -> list[str]:
    """Sentences naming the tasks whose clean-subset score moved, or that have no clean documents at all."""
    moved, lost = [], []
    for task, score in inputs.scores.items():
        joined = inputs.clean.get(task, {}).get(score["metric"])
        if joined is None:
            continue
        if joined.clean is None and joined.documents:
            lost.append(task)
        elif joined.moved:
            moved.append(f"{task} ({score['metric']} {joined.full:.4f} on all {joined.documents:,} documents, "
                         f"{joined.clean:.4f} on the {joined.documents - joined.flagged:,} clean ones; standard error "
                         f"{joined.full_stderr:.4f})")
    sentences = []
    if moved:
        sentences.append(f"The clean-subset score differs from the full score by more than its standard error on "
                         f"{'; '.join(moved)}: the documents found in the training text may have moved "
                         f"{'this score' if len(moved) == 1 else 'these scores'}.")
    if lost:
        sentences.append(f"Every scored document of {', '.join(lost)} was found in the training text, so "
                         f"{'its score' if len(lost) == 1 else 'their scores'} cannot be checked on clean documents.")
    return sentences


def evaluation(inputs: CardInputs) -> list[str]:
    """The evaluation table (scores ± errors, clean subsets, contaminated counts) and what the marks mean."""
    lines = ["## Evaluation", ""]
    if not inputs.scores:
        return lines + ["Not run: no lm-evaluation-harness results were given (run `edulm eval MODEL --out results.json` "
                        "and pass it with `--eval`, or run `edulm release`)."]
    audited = inputs.contamination is not None
    header = ["Task", "Metric", "Score"] + (["Clean subset", "Contaminated documents"] if audited else [])
    rows = [row for task in inputs.scores for row in _metric_rows(inputs, task, audited)]
    lines += md_table(header, rows, ["---", "---", "---:"] + (["---:", "---:"] if audited else []))
    notes = ["Each score is shown ± its standard error; the protocol metric of each task is in bold, with acc and "
             "acc_norm side by side where the task reports both."]
    if audited and any((inputs.flagged(task) or (0, 0))[0] for task in inputs.scores):
        notes.append(f"{CONTAMINATED_MARK} marks a task with documents found in the training text (see Benchmark "
                     "contamination); its clean-subset score leaves them out.")
        notes += _contamination_effects(inputs)
    elif audited:
        notes.append("No scored document was found in the training text that was checked (see Benchmark contamination), "
                     "so the clean-subset scores are the full ones.")
    else:
        notes.append("No contamination audit was given, so no clean-subset scores are shown.")
    return lines + ["", " ".join(notes), "", protocol_sentence(inputs.evaluation or {})]


def protocol_sentence(results: dict[str, Any]) -> str:
    """How the scores were obtained, from the results file's records."""
    harness = results.get("harness") or {}
    protocol = results.get("protocol") or {}
    runtime = results.get("runtime") or {}
    version = harness.get("version") if isinstance(harness, dict) else None
    fewshot = protocol.get("num_fewshot", 0)
    parts = [f"Protocol: lm-evaluation-harness {version or '(version not recorded)'}, {fewshot}-shot, "
             "each task scored by its protocol metric (in bold in the Metric column)"]
    if runtime:
        batch = runtime.get("batch_size_resolved") or runtime.get("batch_size", "?")
        if isinstance(batch, list):
            batch = ", ".join(str(b) for b in dict.fromkeys(batch))
        parts.append(f"{runtime.get('dtype', '?')} on {runtime.get('device_name') or runtime.get('device', '?')}, batch size {batch}")
    seeds = protocol.get("seeds")
    if isinstance(seeds, dict):
        parts.append("seeds " + "/".join(str(v) for v in seeds.values()))
    text = "; ".join(parts) + "."
    if protocol.get("limit") is not None:
        # What was scored, not what was asked: a task smaller than the limit scores all it has.
        counts = sorted({score["n_samples"] for score in (results.get("scores") or {}).values()
                         if isinstance(score, dict) and isinstance(score.get("n_samples"), int)})
        scored = (str(counts[0]) if len(counts) == 1 else f"{counts[0]} to {counts[-1]}") if counts else \
            f"at most {protocol['limit']}"
        text += f" **Only {scored} examples per task were scored (--limit {protocol['limit']}): not the full protocol.**"
    return text


def _bits_per_byte_rows(c: dict[str, Any]) -> list[str]:
    b = c.get("bits_per_byte")
    if not b:
        return []
    rows = [[str(m), "not scored" if "error" in r else f"{r['bits_per_byte']:.4f}",
             "" if "error" in r else f"{r['tokens']:,}"] for m, r in (b.get("models") or {}).items()]
    return ["", f"Bits per byte on the same text (`{b.get('text')}`, {b.get('bytes', 0):,} bytes, windows of up to "
                f"{b.get('seq_len')} tokens): the loss on one scale for every tokenizer; lower is better.", ""] + md_table(
        ["Model", "Bits per byte", "Tokens scored"], rows, ["---", "---:", "---:"])


def comparison(inputs: CardInputs) -> list[str]:
    """The baselines' scores ± errors, win rates with clear wins, and bits per byte when compared."""
    c = inputs.comparison
    lines = ["## Comparison with baselines", ""]
    if not c:
        return lines + ["Not run: no comparison was given (run `edulm baselines` and `edulm compare`, and pass `--comparison`)."]
    tasks, metrics, scores = c.get("tasks") or [], c.get("metrics") or {}, c.get("scores") or {}
    stderr = c.get("stderr") or {}
    candidate = (c.get("candidate") or {}).get("name", inputs.name)
    models = [candidate] + [m for m in scores if m != candidate]
    rows = [[t, str(metrics.get(t, ""))] + [score_text((scores.get(m) or {}).get(t), (stderr.get(m) or {}).get(t))
                                           for m in models] for t in tasks]
    lines += ["Protocol metric of each task, ± its standard error:", ""]
    lines += md_table(["Task", "Metric"] + models, rows, ["---", "---"] + ["---:"] * len(models))
    wins = []
    for b in c.get("baselines") or []:
        clear = set(b.get("clear_won_tasks") or [])
        won = ", ".join(f"{t}{CLEAR_MARK if t in clear else ''}" for t in b.get("won_tasks") or []) or "–"
        rate = f"{b['win_rate']:.0%}" if isinstance(b.get("win_rate"), (int, float)) else "n/a"
        wins.append([str(b.get("name")), f"{b.get('wins', 0)}/{b.get('tasks', 0)}", str(b.get("clear_wins", 0)),
                     str(b.get("ties", 0)), rate, won])
    if wins:
        lines += ["", f"Win rate of {candidate} against each baseline (a win is a strictly higher score on a task; a clear "
                      f"win, {CLEAR_MARK}, has a margin larger than the combined standard error of the two scores):", ""]
        lines += md_table(["Baseline", "Wins / tasks", "Clear wins", "Ties", "Win rate", "Won tasks"], wins,
                        ["---", "---:", "---:", "---:", "---:", "---"])
    overall = c.get("overall") or {}
    if isinstance(overall.get("win_rate"), (int, float)):
        lines += ["", f"Overall: {overall.get('wins')} wins ({overall.get('clear_wins', 0)} clear) and {overall.get('ties')} "
                      f"ties in {overall.get('comparisons')} task comparisons, a win rate of {overall['win_rate']:.0%}."]
    lines += _bits_per_byte_rows(c)
    for warning in c.get("warnings") or []:
        lines += ["", f"Note: {warning}."]
    return lines


def budgets(inputs: CardInputs) -> list[str]:
    """Training tokens of every compared model, with their sources."""
    lines = ["## Training-budget context", ""]
    rows = [[str(b.get("model")), fmt_tokens(b.get("tokens")) if b.get("tokens") else "unknown", str(b.get("note") or ""),
             str(b.get("source") or "")] for b in (inputs.comparison or {}).get("budgets") or []]
    if not rows:
        return lines + [f"{inputs.name} saw {fmt_tokens((inputs.summary or {}).get('tokens'))} training tokens. "
                        "No baseline budgets were given (they come with `edulm compare`)."]
    return lines + ["Tokens each model saw in training; scores mean more next to them:", ""] + md_table(
        ["Model", "Training tokens", "Note", "Source"], rows, ["---", "---:", "---", "---"])


def contamination(inputs: CardInputs) -> list[str]:
    """The contamination audit: method, coverage and per-task counts."""
    report = inputs.contamination
    lines = ["## Benchmark contamination", ""]
    if not report:
        return lines + ["Not run: no n-gram overlap audit between the evaluation benchmarks and the training data was made "
                        "(run `edulm sample-text` and `edulm contamination`, or `edulm release`). Scores may be inflated if "
                        "benchmark text is in the training data."]
    from edulm.evaluate.contamination_report import coverage_sentence, method_sentence

    rows = [[task, f"{t['contaminated']:,} / {t['documents']:,}", f"{t['fraction']:.2%}" if t.get("fraction") is not None else "n/a",
             fmt_int(t.get("matched_whole")), fmt_int(t.get("too_short"))] for task, t in report.get("tasks", {}).items()]
    lines += [f"{method_sentence(report)} {coverage_sentence(report)}", ""]
    return lines + md_table(["Task", "Contaminated documents", "Fraction", "Matched whole (short)", "Too short to check"], rows,
                          ["---", "---:", "---:", "---:", "---:"])
