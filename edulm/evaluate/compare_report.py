"""``comparison.md``: the tables and the written report of a comparison document (see :mod:`edulm.evaluate.compare`)."""

from __future__ import annotations

from typing import Any

from edulm.data.manifest import shape_problem
from edulm.evaluate.budgets import format_tokens

CLEAR_MARK = "*"
"""Marks a clear win: a margin larger than the combined standard error."""
MOVED_MARK = "†"
"""Marks a clean-subset score that differs from the full score by more than the full score's standard error."""


NUMBER_OR_NONE = (int, float, type(None))
COMPARISON_PARTS = {"tasks": [str], "metrics": dict, "scores": dict, "stderr": dict, "candidate": dict, "baselines": [dict],
                    "overall": dict, "budgets": [dict], "warnings": [str], "bits_per_byte": dict}
"""The parts of ``comparison.json`` that readers (the model card) look into, when present, and what each must be."""


def comparison_problem(doc: dict[str, Any]) -> str | None:
    """What makes a parsed ``comparison.json`` unusable (a part of the wrong shape), or None."""
    checks = [(doc[key], shape, key) for key, shape in COMPARISON_PARTS.items() if doc.get(key) is not None]
    for key in ("scores", "stderr"):  # model -> task -> number
        rows = doc.get(key) if isinstance(doc.get(key), dict) else {}
        checks += [(row, dict, f"{key}['{model}']") for model, row in rows.items()]
        checks += [(value, NUMBER_OR_NONE, f"{key}['{model}']['{task}']") for model, row in rows.items()
                   if isinstance(row, dict) for task, value in row.items()]
    for i, row in enumerate(b for b in doc.get("baselines") or [] if isinstance(b, dict)):
        checks += [(row[k], [str], f"baselines[{i}].{k}") for k in ("won_tasks", "clear_won_tasks") if row.get(k) is not None]
    bpb = doc.get("bits_per_byte") if isinstance(doc.get("bits_per_byte"), dict) else {}
    models = bpb.get("models") or {}
    checks.append((models, dict, "bits_per_byte.models"))
    if isinstance(models, dict):
        checks += [(r, dict if isinstance(r, dict) and "error" in r else {"bits_per_byte": (int, float), "tokens": int},
                    f"bits_per_byte.models['{m}']") for m, r in models.items()]
    return next(filter(None, (shape_problem(value, shape, where) for value, shape, where in checks)), None)


def pct(value: float | None) -> str:
    """``42.9%``; ``n/a`` for None."""
    return "n/a" if value is None else f"{100 * value:.1f}%"


def score_text(value: float | None, stderr: float | None = None) -> str:
    """``0.6000 ± 0.0100`` (the error left out when unknown); ``–`` for a missing score."""
    if value is None:
        return "–"
    return f"{value:.4f} ± {stderr:.4f}" if isinstance(stderr, (int, float)) else f"{value:.4f}"


def _better(doc: dict[str, Any], task: str, a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return False
    return a > b if doc["higher_is_better"].get(task, True) else a < b


def _score_table(doc: dict[str, Any]) -> list[str]:
    """Rows task x metric, columns models; the protocol metric in bold, the best protocol score per task in bold."""
    cand = doc["candidate"]["name"]
    models = list(doc["scores"])
    table = doc.get("metric_table") or {"metrics": {t: [doc["metrics"][t]] for t in doc["tasks"]}, "values": {}}
    header = [f"**{m}** (candidate)" if m == cand else m for m in models]
    lines = ["| Task | Metric | " + " | ".join(header) + " |", "|---|---|" + "---:|" * len(models)]
    for task in doc["tasks"]:
        protocol = doc["metrics"][task]
        present = [s[task] for s in doc["scores"].values() if s.get(task) is not None]
        best = (max if doc["higher_is_better"].get(task, True) else min)(present, default=None)
        for metric in table["metrics"].get(task, [protocol]):
            cells = []
            for m in models:
                if metric == protocol:
                    value, err = doc["scores"][m].get(task), (doc.get("stderr") or {}).get(m, {}).get(task)
                    text = score_text(value, err)
                    cells.append(f"**{text}**" if value is not None and value == best else text)
                else:
                    value, err = (table["values"].get(m, {}).get(task, {}).get(metric) or [None, None])
                    cells.append(score_text(value, err))
            label = f"**{metric}**" if metric == protocol else metric
            lines.append(f"| {task if metric == protocol else ''} | {label} | " + " | ".join(cells) + " |")
    averages = " | ".join(score_text(doc["averages"].get(m)) for m in models)
    lines.append(f"| **Average** | protocol metrics | {averages} |")
    return lines


def _win_table(doc: dict[str, Any]) -> list[str]:
    lines = ["| Baseline | Wins / tasks | Win rate | Clear wins | Ties | Losses | Won tasks | Tied tasks |",
             "|---|---:|---:|---:|---:|---:|---|---|"]
    for r in doc["baselines"]:
        clear = set(r.get("clear_won_tasks", []))
        won = ", ".join(f"{t}{CLEAR_MARK if t in clear else ''}" for t in r["won_tasks"]) or "–"
        tied = ", ".join(r["tied_tasks"]) or "–"
        lines.append(f"| {r['name']} | {r['wins']} / {r['tasks']} | {pct(r['win_rate'])} | {r.get('clear_wins', 0)} "
                     f"| {r['ties']} | {r['losses']} | {won} | {tied} |")
    o = doc["overall"]
    lines.append(f"| **all baselines** | {o['wins']} / {o['comparisons']} | {pct(o['win_rate'])} | {o.get('clear_wins', 0)} "
                 f"| {o['ties']} | {o['losses']} | | |")
    return lines


def _contamination_section(doc: dict[str, Any]) -> list[str]:
    c = doc.get("contamination")
    if not c:
        return []
    lines = ["", "## Contamination-aware scores", "",
             f"The contamination audit (`{c['file']}`) flags benchmark documents found in the training text. The clean "
             f"subset leaves them out; the full score is lm-eval's. {MOVED_MARK} marks a clean-subset score that differs "
             "from the full score by more than the full score's standard error.", ""]
    rows = []
    for task in doc["tasks"]:
        metric = doc["metrics"][task]
        for model, scores in c["clean"].items():
            s = (scores.get(task) or {}).get(metric)
            if not s:
                continue
            clean = "no clean documents" if s["clean"] is None else score_text(s["clean"], s["clean_stderr"])
            rows.append(f"| {task} | {metric} | {s['flagged']:,} / {s['documents']:,} | {model} | "
                        f"{score_text(s['full'], s['full_stderr'])} | {clean}{f' {MOVED_MARK}' if s.get('moved') else ''} |")
    if not rows:
        return lines + ["No results file has per-example samples for the audited tasks, so no clean-subset score was computed."]
    return lines + ["| Task | Metric | Flagged / scored | Model | Full score | Clean subset |",
                    "|---|---|---:|---|---:|---:|"] + rows


def _bits_per_byte_section(doc: dict[str, Any]) -> list[str]:
    b = doc.get("bits_per_byte")
    if not b:
        return []
    lines = ["", "## Bits per byte", "",
             f"Summed negative log-likelihood in bits over the UTF-8 bytes of `{b['text']}` ({b['bytes']:,} bytes), "
             f"non-overlapping windows of up to {b['seq_len']:,} tokens: one scale for every tokenizer; lower is better.", "",
             "| Model | Bits per byte | Loss (nats per token) | Tokens scored | Window |", "|---|---:|---:|---:|---:|"]
    for model, r in b["models"].items():
        if "error" in r:
            lines.append(f"| {model} | not scored: {r['error']} | | | |")
        else:
            lines.append(f"| {model} | {r['bits_per_byte']:.4f} | {r['loss']:.4f} | {r['tokens']:,} | {r['seq_len']:,} |")
    return lines


def _summary(doc: dict[str, Any]) -> str:
    """The written report: overall win rate, where the candidate leads and trails, and the budget context."""
    cand = doc["candidate"]["name"]
    o = doc["overall"]
    n = len(doc["baselines"])
    parts = [
        f"{cand} wins {o['wins']} of {o['comparisons']} task comparisons against {n} baseline{'s' * (n != 1)} "
        f"(win rate {pct(o['win_rate'])}, {o['ties']} tie{'s' * (o['ties'] != 1)}; {o.get('clear_wins', 0)} of the wins "
        f"exceed the combined standard error), and scores better than {o['baselines_beaten']} of {n} baselines on a "
        "majority of tasks."
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


def render_markdown(doc: dict[str, Any]) -> str:
    """``comparison.md``: scores with standard errors, win rates, contamination-aware scores, bits per byte,
    training budgets and a written summary."""
    lines = [f"# {doc['candidate']['name']} against {len(doc['baselines'])} baselines", "", _summary(doc), "",
             "## Scores", "",
             f"Zero-shot lm-evaluation-harness ({doc['protocol'].get('num_fewshot', 0)}-shot); each score ± its standard "
             "error. Each task is compared on its protocol metric (in bold); acc and acc_norm are shown side by side for "
             "tasks that report both. The best protocol score per task is in bold.", ""]
    lines += _score_table(doc)
    lines += ["", "## Win rate", "",
              "A win is a strictly better protocol score than the baseline's on a task; equal scores are ties. A clear win "
              f"({CLEAR_MARK}) has a margin larger than the combined standard error, sqrt(se_candidate² + se_baseline²); "
              "the other wins are within the noise of the benchmark's size.", ""]
    lines += _win_table(doc)
    lines += _contamination_section(doc)
    lines += _bits_per_byte_section(doc)
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
