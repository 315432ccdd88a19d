"""The markdown body of the model card, one function per section (:mod:`edulm.card_inputs` gathers the inputs).

Every number is read from the run's artifacts; a section whose artifact is missing says so.
"""

from __future__ import annotations

from typing import Any

import yaml

from edulm.card_inputs import CardInputs
from edulm.evaluate.budgets import format_tokens
from edulm.evaluate.compare_report import CLEAR_MARK, score_text
from edulm.evaluate.protocol import shown_metrics

NOT_RECORDED = "not recorded"

CONTAMINATED_MARK = "⚠"
"""Marks a task with benchmark documents found in the training text."""


def _int(value: Any) -> str:
    return f"{round(value):,}" if isinstance(value, (int, float)) else NOT_RECORDED


def _num(value: Any, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else NOT_RECORDED


def _tokens(value: Any) -> str:
    """``10,000,000,000 (10B)``: exact, with the short form compare uses."""
    if not isinstance(value, (int, float)) or value <= 0:
        return NOT_RECORDED
    short = format_tokens(int(value))
    return f"{int(value):,}" if short == str(int(value)) else f"{int(value):,} ({short})"


def _table(header: list[str], rows: list[list[str]], align: list[str] | None = None) -> list[str]:
    align = align or ["---"] * len(header)
    return ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"] + ["| " + " | ".join(r) + " |" for r in rows]


def _section(cfg: dict[str, Any], name: str) -> dict[str, Any]:
    section = cfg.get(name)
    return section if isinstance(section, dict) else {}


# ---------------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------------


def overview(inputs: CardInputs) -> list[str]:
    summary = inputs.summary or {}
    source = _section(inputs.config, "data").get("source", NOT_RECORDED)
    tokens = summary.get("tokens")
    trained = f"trained from scratch on {_tokens(tokens)} tokens" if tokens else "trained from scratch"
    status = summary.get("status")
    lines = [
        f"# {inputs.name}",
        "",
        f"{inputs.name} is a {_int(inputs.parameters)}-parameter Llama-style causal language model {trained} "
        f"of `{source}` with edulm on {_device_phrase(summary)}.",
    ]
    if status and status != "completed":
        lines += ["", f"**Training status: {status}.** The numbers below describe the run as it stood when its summary was written."]
    return lines


def _device_phrase(summary: dict[str, Any]) -> str:
    device = summary.get("device") or {}
    if not device:
        return "hardware that was not recorded"
    count = (summary.get("batch") or {}).get("world_size") or 1
    return f"{count} × {device.get('name', device.get('type', 'unknown device'))}"


def model_details(inputs: CardInputs) -> list[str]:
    m = _section(inputs.config, "model")
    summary = inputs.summary or {}
    rows = [
        ["Parameters", _int(inputs.parameters)],
        ["Architecture", "Llama (RMSNorm, rotary position embeddings, SwiGLU MLP, grouped-query attention)"],
        ["Layers", _int(m.get("n_layers"))],
        ["Hidden size (d_model)", _int(m.get("d_model"))],
        ["MLP inner size (d_ff)", _int(m.get("d_ff"))],
        ["Attention heads / key-value heads", f"{_int(m.get('n_heads'))} / {_int(m.get('n_kv_heads'))}"],
        ["Context length", _int(m.get("max_seq_len"))],
        ["RoPE theta", str(m.get("rope_theta", NOT_RECORDED))],
        ["Vocabulary", _int(m.get("vocab_size"))],
        ["Tied input/output embeddings", str(m.get("tie_embeddings", NOT_RECORDED)).lower()],
        ["Tokenizer", f"`{_section(inputs.config, 'tokenizer').get('name', NOT_RECORDED)}`"],
        ["Training FLOPs per token", _int(summary.get("flops_per_token"))],
    ]
    return ["## Model details", ""] + _table(["", ""], rows)


def training_recipe(inputs: CardInputs) -> list[str]:
    t, d, run = _section(inputs.config, "train"), _section(inputs.config, "data"), _section(inputs.config, "run")
    summary = inputs.summary or {}
    batch = summary.get("batch") or {}
    per_step = summary.get("tokens_per_step")
    rows = [
        ["Data", f"`{d.get('source', NOT_RECORDED)}` (held out for validation: {_int(d.get('val_tokens'))} tokens)"],
        ["Tokens seen", _tokens(summary.get("tokens"))],
        ["Optimizer steps", f"{_int(summary.get('steps'))} of {_int(summary.get('total_steps'))}" if summary else NOT_RECORDED],
        ["Sequence length", _int(t.get("seq_len"))],
        ["Batch", f"{batch.get('micro_batch_size', t.get('micro_batch_size', '?'))} sequences × {batch.get('grad_accum_steps', t.get('grad_accum_steps', '?'))} "
                  f"accumulation steps × {batch.get('world_size', 1)} process(es) = {_int(per_step)} tokens per step"],
        ["Optimizer", f"AdamW (β1 {t.get('beta1', '?')}, β2 {t.get('beta2', '?')}, ε {t.get('eps', '?')}, weight decay {t.get('weight_decay', '?')} on matrices), "
                      f"gradient clipping {t.get('grad_clip', '?')}"],
        ["Learning rate", f"peak {t.get('lr', '?')}, {_int(t.get('warmup_steps'))} warmup steps, cosine decay to {t.get('min_lr_ratio', '?')} × peak"],
        ["Precision", str(summary.get("precision") or t.get("precision", NOT_RECORDED))],
        ["Seed", str(run.get("seed", NOT_RECORDED))],
        ["Steps skipped (non-finite loss)", _int(summary.get("skipped_steps"))],
    ]
    lines = ["## Training recipe", ""] + _table(["", ""], rows)
    lines += ["", "<details><summary>Full training config (config.yaml)</summary>", "", "```yaml",
              yaml.safe_dump(inputs.config, sort_keys=False).rstrip(), "```", "", "</details>"]
    return lines


def runtime_and_cost(inputs: CardInputs) -> list[str]:
    s = inputs.summary
    if not s:
        return ["## Runtime and cost", "", "Not recorded: the run has no `training/training_summary.json`."]
    device = s.get("device") or {}
    mfu = s.get("mfu_after_warmup")
    rows = [
        ["Device", f"{_device_phrase(s)} ({_num(device.get('total_memory_gb'), 1)} GiB each)" if device else NOT_RECORDED],
        ["Mean throughput", f"{_int(s.get('mean_tokens_per_s'))} tokens/s"],
        ["Throughput after warmup", f"{_int(s.get('mean_tokens_per_s_after_warmup'))} tokens/s"],
        ["Model FLOPs utilisation after warmup", f"{mfu:.1%}" if isinstance(mfu, (int, float)) else "not measured (device peak unknown, CPU, or fp32)"],
        ["Peak memory", f"{_num(s.get('peak_memory_gb'), 2)} GiB"],
        ["Wall time", f"{_num(s.get('wall_time_h'), 2)} h ({_int(s.get('wall_time_s'))} s)"],
        ["GPU-hours", _num(s.get("gpu_hours"), 2)],
    ]
    if isinstance(s.get("cost"), (int, float)):
        cost = f"{s['cost']:,.2f} at {s.get('gpu_hourly_rate')} per GPU-hour"
        formula = s.get("formula") or "cost = GPU-hours × price per GPU-hour"
    else:
        cost = "no price per GPU-hour was given"
        formula = "cost = wall_time_s / 3600 × n_gpus × price per GPU-hour (pass `--gpu-hourly-rate` to `edulm train`)"
    rows.append(["Cost", cost])
    return ["## Runtime and cost", ""] + _table(["", ""], rows) + ["", f"Cost formula: `{formula}`."]


def validation(inputs: CardInputs) -> list[str]:
    s = inputs.summary or {}
    loss, ppl, bpb, where = s.get("final_val_loss"), s.get("final_val_ppl"), s.get("final_val_bpb"), "training summary"
    if not isinstance(loss, (int, float)) and inputs.validation:
        v = inputs.validation
        loss, ppl, bpb, where = v["val_loss"], v.get("val_ppl"), v.get("val_bpb"), f"metrics CSV, step {v['step']}"
    lines = ["## Validation", ""]
    if not isinstance(loss, (int, float)):
        return lines + ["Not recorded: the run logged no validation loss."]
    figures = [f"perplexity **{ppl:.2f}**" if isinstance(ppl, (int, float)) else "perplexity not recorded"]
    if isinstance(bpb, (int, float)):
        figures.append(f"**{bpb:.4f}** bits per byte")
    return lines + [f"Final validation loss **{loss:.4f}** ({', '.join(figures)}) on the held-out split ({where}); "
                    f"final training loss {_num(s.get('final_train_loss'))}."]


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
    lines = ["## Evaluation", ""]
    if not inputs.scores:
        return lines + ["Not run: no lm-evaluation-harness results were given (run `edulm eval MODEL --out results.json` "
                        "and pass it with `--eval`, or run `edulm release`)."]
    audited = inputs.contamination is not None
    header = ["Task", "Metric", "Score"] + (["Clean subset", "Contaminated documents"] if audited else [])
    rows = [row for task in inputs.scores for row in _metric_rows(inputs, task, audited)]
    lines += _table(header, rows, ["---", "---", "---:"] + (["---:", "---:"] if audited else []))
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
        text += f" **Only {protocol['limit']} examples per task were scored (--limit): not the full protocol.**"
    return text


def _bits_per_byte_rows(c: dict[str, Any]) -> list[str]:
    b = c.get("bits_per_byte")
    if not b:
        return []
    rows = [[str(m), "not scored" if "error" in r else f"{r['bits_per_byte']:.4f}",
             "" if "error" in r else f"{r['tokens']:,}"] for m, r in (b.get("models") or {}).items()]
    return ["", f"Bits per byte on the same text (`{b.get('text')}`, {b.get('bytes', 0):,} bytes, windows of up to "
                f"{b.get('seq_len')} tokens): the loss on one scale for every tokenizer; lower is better.", ""] + _table(
        ["Model", "Bits per byte", "Tokens scored"], rows, ["---", "---:", "---:"])


def comparison(inputs: CardInputs) -> list[str]:
    c = inputs.comparison
    lines = ["## Comparison with public baselines", ""]
    if not c:
        return lines + ["Not run: no comparison was given (run `edulm baselines` and `edulm compare`, and pass `--comparison`)."]
    tasks, metrics, scores = c.get("tasks") or [], c.get("metrics") or {}, c.get("scores") or {}
    stderr = c.get("stderr") or {}
    candidate = (c.get("candidate") or {}).get("name", inputs.name)
    models = [candidate] + [m for m in scores if m != candidate]
    rows = [[t, str(metrics.get(t, ""))] + [score_text((scores.get(m) or {}).get(t), (stderr.get(m) or {}).get(t))
                                           for m in models] for t in tasks]
    lines += ["Protocol metric of each task, ± its standard error:", ""]
    lines += _table(["Task", "Metric"] + models, rows, ["---", "---"] + ["---:"] * len(models))
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
        lines += _table(["Baseline", "Wins / tasks", "Clear wins", "Ties", "Win rate", "Won tasks"], wins,
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
    lines = ["## Training-budget context", ""]
    rows = [[str(b.get("model")), _tokens(b.get("tokens")) if b.get("tokens") else "unknown", str(b.get("note") or ""),
             str(b.get("source") or "")] for b in (inputs.comparison or {}).get("budgets") or []]
    if not rows:
        return lines + [f"{inputs.name} saw {_tokens((inputs.summary or {}).get('tokens'))} training tokens. "
                        "No baseline budgets were given (they come with `edulm compare`)."]
    return lines + ["Tokens each model saw in training; scores mean more next to them:", ""] + _table(
        ["Model", "Training tokens", "Note", "Source"], rows, ["---", "---:", "---", "---"])


def contamination(inputs: CardInputs) -> list[str]:
    report = inputs.contamination
    lines = ["## Benchmark contamination", ""]
    if not report:
        return lines + ["Not run: no n-gram overlap audit between the evaluation benchmarks and the training data was made "
                        "(run `edulm sample-text` and `edulm contamination`, or `edulm release`). Scores may be inflated if "
                        "benchmark text is in the training data."]
    from edulm.contamination_report import coverage_sentence, method_sentence

    rows = [[task, f"{t['contaminated']:,} / {t['documents']:,}", f"{t['fraction']:.2%}" if t.get("fraction") is not None else "n/a",
             _int(t.get("matched_whole")), _int(t.get("too_short"))] for task, t in report.get("tasks", {}).items()]
    lines += [f"{method_sentence(report)} {coverage_sentence(report)}", ""]
    return lines + _table(["Task", "Contaminated documents", "Fraction", "Matched whole (short)", "Too short to check"], rows,
                          ["---", "---:", "---:", "---:", "---:"])


def intended_use_and_limitations(inputs: CardInputs) -> list[str]:
    return [
        "## Intended use",
        "",
        "A small base (pretrained, not instruction-tuned) English language model for research and teaching: studying "
        "pretraining, scaling and evaluation, and as a starting point for fine-tuning. It is not a product and not an assistant.",
        "",
        "## Limitations",
        "",
        f"- With {_int(inputs.parameters)} parameters it knows little and reasons poorly; its text is often wrong, repetitive or incoherent.",
        "- It continues text; it does not follow instructions or refuse harmful requests, and it was not aligned or safety-tuned.",
        "- It reflects its web training data, including its biases, errors and English-only focus.",
        "- Zero-shot benchmark scores of models this size sit near chance on several tasks; compare them only under the same protocol.",
    ]


def usage(inputs: CardInputs) -> list[str]:
    return [
        "## Usage",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        f'model_id = "{inputs.name}"  # this folder, or the repository id it is published under',
        "tokenizer = AutoTokenizer.from_pretrained(model_id)",
        "model = AutoModelForCausalLM.from_pretrained(model_id)",
        'inputs = tokenizer("Photosynthesis is the process", return_tensors="pt")',
        "out = model.generate(**inputs, max_new_tokens=50, do_sample=True, temperature=0.8, top_p=0.95)",
        "print(tokenizer.decode(out[0], skip_special_tokens=True))",
        "```",
        "",
        f'Or with edulm: `edulm generate {inputs.name} "Photosynthesis is the process"`.',
    ]


def plots(inputs: CardInputs) -> list[str]:
    lines = ["## Training curves", ""]
    if not inputs.plots:
        return lines + ["Not available: the run has no plots in `training/`."]
    for name in inputs.plots:
        lines += [f"![{name.removesuffix('.png').replace('_', ' ')}]({name})", ""]
    return lines[:-1]


SECTIONS = (overview, model_details, training_recipe, runtime_and_cost, validation, evaluation, comparison,
            budgets, contamination, intended_use_and_limitations, usage, plots)
"""The card's sections, in order."""


def body(inputs: CardInputs) -> str:
    """The markdown body (everything after the metadata)."""
    lines: list[str] = []
    for section in SECTIONS:
        lines += section(inputs) + [""]
    return "\n".join(lines)
