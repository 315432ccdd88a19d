"""The model card's sections about the model and its training, one function per section, and the formatting
helpers every section uses (the evaluation sections are in :mod:`edulm.release.card_evaluation`).

Every number is read from the run's artifacts (:mod:`edulm.release.card_inputs`); a section whose artifact is
missing says so.
"""

from __future__ import annotations

from typing import Any

import yaml

from edulm.release.card_inputs import CardInputs
from edulm.evaluate.budgets import format_tokens

NOT_RECORDED = "not recorded"


def fmt_int(value: Any) -> str:
    """``1,234`` for a number; ``not recorded`` otherwise."""
    return f"{round(value):,}" if isinstance(value, (int, float)) else NOT_RECORDED


def fmt_num(value: Any, digits: int = 4) -> str:
    """A number with ``digits`` decimals; ``not recorded`` otherwise."""
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else NOT_RECORDED


def fmt_tokens(value: Any) -> str:
    """``10,000,000,000 (10B)``: exact, with the short form compare uses."""
    if not isinstance(value, (int, float)) or value <= 0:
        return NOT_RECORDED
    short = format_tokens(int(value))
    return f"{int(value):,}" if short == str(int(value)) else f"{int(value):,} ({short})"


def md_table(header: list[str], rows: list[list[str]], align: list[str] | None = None) -> list[str]:
    """A markdown table's lines."""
    align = align or ["---"] * len(header)
    return ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"] + ["| " + " | ".join(r) + " |" for r in rows]


def _section(cfg: dict[str, Any], name: str) -> dict[str, Any]:
    section = cfg.get(name)
    return section if isinstance(section, dict) else {}


# ---------------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------------


def overview(inputs: CardInputs) -> list[str]:
    """The title and one sentence on what the model is, how big, trained on what and where."""
    summary = inputs.summary or {}
    tokens = summary.get("tokens")
    start = f"continued from `{base}` and trained" if (base := _init_from(inputs)) else "trained from scratch"
    trained = f"{start} on {fmt_tokens(tokens)} tokens" if tokens else start
    status = summary.get("status")
    lines = [
        f"# {inputs.name}",
        "",
        f"{inputs.name} is a {fmt_int(inputs.parameters)}-parameter Llama-style causal language model {trained} "
        f"of {_data_phrase(_section(inputs.config, 'data'))} with edulm on {_device_phrase(summary)}.",
    ]
    if status and status != "completed":
        lines += ["", f"**Training status: {status}.** The numbers below describe the run as it stood when its summary was written."]
    return lines


def _data_phrase(data: dict[str, Any]) -> str:
    """One source in backticks, or ``a mixture of N sources`` for a list (the card's mixture table names them)."""
    source = data.get("source", NOT_RECORDED)
    if isinstance(source, list):
        return f"a mixture of {len(source)} sources"
    return f"`{source}`"


def _init_from(inputs: CardInputs) -> str | None:
    """The model the run continued from (``model.init_from``), or None for a model trained from scratch."""
    return _section(inputs.config, "model").get("init_from") or None


def _started_from(inputs: CardInputs) -> str:
    """The "Started from" row: random initialisation, or the model continued from with its weights' checksum;
    then the checkpoints of other run dirs it was resumed from (its earlier steps were trained there)."""
    base = _init_from(inputs)
    if not base:
        text = f"random initialisation (seed {_section(inputs.config, 'run').get('seed', NOT_RECORDED)})"
    else:
        record = (inputs.summary or {}).get("init_from") or {}
        sha = record.get("weights_sha256")
        revision = f", revision {record['revision']}" if record.get("revision") else ""
        text = (f"continued from `{base}` ({record.get('kind', 'model')}{revision}"
                + (f", weights sha256 {sha}" if sha else "") + ")")
    for branch in (inputs.summary or {}).get("branched_from") or []:
        text += f"; steps up to {fmt_int(branch.get('step'))} trained in another run, resumed from `{branch.get('checkpoint')}`"
    return text


def _device_phrase(summary: dict[str, Any]) -> str:
    device = summary.get("device") or {}
    if not device:
        return "hardware that was not recorded"
    count = (summary.get("batch") or {}).get("world_size") or 1
    return f"{count} × {device.get('name', device.get('type', 'unknown device'))}"


def model_details(inputs: CardInputs) -> list[str]:
    """Architecture table: parameters, shape, context, vocabulary, tokenizer, FLOPs per token."""
    m = _section(inputs.config, "model")
    summary = inputs.summary or {}
    rows = [
        ["Parameters", fmt_int(inputs.parameters)],
        ["Architecture", "Llama (RMSNorm, rotary position embeddings, SwiGLU MLP, grouped-query attention)"],
        ["Layers", fmt_int(m.get("n_layers"))],
        ["Hidden size (d_model)", fmt_int(m.get("d_model"))],
        ["MLP inner size (d_ff)", fmt_int(m.get("d_ff"))],
        ["Attention heads / key-value heads", f"{fmt_int(m.get('n_heads'))} / {fmt_int(m.get('n_kv_heads'))}"],
        ["Context length", fmt_int(m.get("max_seq_len"))],
        ["RoPE theta", str(m.get("rope_theta", NOT_RECORDED))],
        ["Vocabulary", fmt_int(m.get("vocab_size"))],
        ["Tied input/output embeddings", str(m.get("tie_embeddings", NOT_RECORDED)).lower()],
        ["Tokenizer", f"`{_section(inputs.config, 'tokenizer').get('name', NOT_RECORDED)}`"],
        ["Training FLOPs per token", fmt_int(summary.get("flops_per_token"))],
    ]
    return ["## Model details", ""] + md_table(["", ""], rows)


def training_recipe(inputs: CardInputs) -> list[str]:
    """Data (realised mixture and the held-out split as really held out), tokens, steps, batch, optimizer,
    schedule, precision and seed, from the summary first and the config where it has nothing; the full
    config folded away."""
    t, d, run = _section(inputs.config, "train"), _section(inputs.config, "data"), _section(inputs.config, "run")
    summary = inputs.summary or {}
    data = summary.get("data") if isinstance(summary.get("data"), dict) else {}
    rows = [
        ["Started from", _started_from(inputs)],
        ["Data", f"{_data_phrase(d)} (held out for validation: {_held_out(data, d)})"],
        ["Tokens seen", fmt_tokens(summary.get("tokens"))],
        ["Optimizer steps", f"{fmt_int(summary.get('steps'))} of {fmt_int(summary.get('total_steps'))}" if summary else NOT_RECORDED],
        ["Sequence length", fmt_int((summary.get("batch") or {}).get("seq_len", t.get("seq_len")))],
        ["Batch", _batch(summary, t)],
        ["Optimizer", f"{_optimizer(summary, t)}, gradient clipping {t.get('grad_clip', '?')}"],
        ["Learning rate", _schedule(summary, t)],
        ["Precision", str(summary.get("precision") or t.get("precision", NOT_RECORDED))],
        ["Seed", str(run.get("seed", NOT_RECORDED))],
        ["Steps skipped (non-finite loss)", fmt_int(summary.get("skipped_steps"))],
    ]
    if isinstance(data.get("chat"), dict):
        rows.insert(2, ["Fine-tuning", _fine_tuning(data["chat"])])
    if isinstance(summary.get("downstream"), dict):
        rows.append(["Benchmarks during training", _downstream(summary["downstream"])])
    lines = ["## Training recipe", ""] + md_table(["", ""], rows)
    lines += _mixture(data.get("mixture"))
    lines += ["", "<details><summary>Full training config (config.yaml)</summary>", "", "```yaml",
              yaml.safe_dump(inputs.config, sort_keys=False).rstrip(), "```", "", "</details>"]
    return lines


def _downstream(report: dict[str, Any]) -> str:
    """What the in-loop scores (the summary's ``downstream``) say: per task and metric, after how many tokens it
    stood above chance by two standard errors, or that it did not; the scoring's share of the run's time."""
    above = report.get("above_chance_after_tokens") or {}
    tasks = {t.get("task"): t for t in report.get("tasks") or [] if isinstance(t, dict)}
    parts = []
    for name, tokens in above.items():
        task, metric = name.split("/")[1:3]
        if (tasks.get(task) or {}).get("chance") is None:
            continue
        examples = fmt_int(tasks[task].get("examples"))
        parts.append(f"{task} {metric} rose above chance after {fmt_tokens(tokens)} tokens ({examples} examples)"
                     if tokens is not None else f"{task} {metric} stayed within two standard errors of chance "
                                                f"({examples} examples)")
    share = report.get("time_share")
    cost = f"scoring took {share:.2%} of the run's time" if isinstance(share, (int, float)) else ""
    return "; ".join(p for p in [*parts, cost] if p) or NOT_RECORDED


def _fine_tuning(chat: dict[str, Any]) -> str:
    """A fine-tuning run's chat rows (the summary's ``data.chat``): conversations, held out, cut, trained share."""
    share = chat.get("trained_token_share")
    return (f"supervised, loss on the assistant replies only: {fmt_int(chat.get('conversations'))} conversations "
            f"({fmt_int(chat.get('held_out'))} held out), {fmt_int(chat.get('truncated'))} truncated to "
            f"{fmt_int((chat.get('seq_len') or 0) + 1)} tokens, {fmt_int(chat.get('no_reply'))} left out with no reply "
            f"to learn; {fmt_int(chat.get('rows_trained'))} rows trained, "
            + (f"{share:.1%} of their positions trained targets" if isinstance(share, float) else "no row trained yet"))


def _held_out(data: dict[str, Any], d: dict[str, Any]) -> str:
    """What was really held out (the summary's record of the shards manifest), else what was asked."""
    held = data.get("held_out")
    if not isinstance(held, dict) or not isinstance(held.get("tokens"), int):
        return f"{fmt_int(d.get('val_tokens'))} tokens asked (data.val_tokens)"
    text = f"{held['tokens']:,} tokens in {fmt_int(held.get('documents'))} documents"
    if held.get("short"):
        text += f", fewer than the {fmt_int(held.get('requested_tokens'))} asked: the data ran out of held-out candidates"
    return text


def _batch(summary: dict[str, Any], t: dict[str, Any]) -> str:
    """The batch as the run resolved it (the summary's ``batch``); the config's when there is no summary."""
    b = summary.get("batch") or {}
    micro = b.get("micro_batch_size", t.get("micro_batch_size", "?"))
    accum = b.get("grad_accum_steps", t.get("grad_accum_steps", "?"))
    world = b.get("world_size", 1)
    sequences = b.get("global_batch_size")
    per_step = f"{fmt_int(sequences)} sequences, " if isinstance(sequences, int) else ""
    return (f"{micro} sequences × {accum} accumulation steps × {world} process(es) = {per_step}"
            f"{fmt_int(summary.get('tokens_per_step'))} tokens per step")


def _optimizer(summary: dict[str, Any], t: dict[str, Any]) -> str:
    """The optimizer the run used, in its own words as the run recorded them (else its name), with the AdamW
    settings every built-in optimizer shares."""
    name = summary.get("optimizer") or t.get("optimizer") or "adamw"  # runs from before the key trained with AdamW
    words = summary.get("optimizer_description") or f"`{name}`"
    return f"{words} (AdamW β1 {t.get('beta1', '?')}, β2 {t.get('beta2', '?')}, ε {t.get('eps', '?')})"


def _schedule(summary: dict[str, Any], t: dict[str, Any]) -> str:
    """The learning-rate schedule the run used (the summary's, else the config's ``train.schedule``)."""
    name = summary.get("schedule") or t.get("schedule") or "cosine"
    # The schedule's own words, which the run recorded (edulm.train.schedule.ScheduleKind.describe).
    shape = summary.get("schedule_description") or f"then the `{name}` schedule"
    text = f"peak {t.get('lr', '?')}, {fmt_int(t.get('warmup_steps'))} warmup steps, {shape}"
    changes = summary.get("schedule_changes") or []
    if changes:
        text += "; schedule changed on resume at step " + ", ".join(fmt_int(c.get("step")) for c in changes)
    return text


def _mixture(mixture: Any) -> list[str]:
    """The realised data mixture (the summary's record): tokens, share and epochs of each source."""
    if not isinstance(mixture, list) or not mixture:
        return []
    rows = [[f"`{m.get('source')}`", f"{m.get('weight')} ({m.get('target_share', 0):.1%})", fmt_tokens(m.get("tokens")),
             f"{m.get('share', 0):.1%}", fmt_num(m.get("epochs"), 2)] for m in mixture]
    return ["", "Data mixture, as drawn (tokens trained on from each source):", ""] + md_table(
        ["Source", "Weight (target share)", "Tokens", "Share", "Epochs"], rows, ["---", "---:", "---:", "---:", "---:"])


def runtime_and_cost(inputs: CardInputs) -> list[str]:
    """Device, throughput, MFU, memory, wall time, GPU-hours and the cost with its formula."""
    s = inputs.summary
    if not s:
        return ["## Runtime and cost", "", "Not recorded: the run has no `training/training_summary.json`."]
    device = s.get("device") or {}
    mfu = s.get("mfu_after_warmup")
    rows = [
        ["Device", f"{_device_phrase(s)} ({fmt_num(device.get('total_memory_gb'), 1)} GiB each)" if device else NOT_RECORDED],
        ["Mean throughput", f"{fmt_int(s.get('mean_tokens_per_s'))} tokens/s"],
        ["Throughput after warmup", f"{fmt_int(s.get('mean_tokens_per_s_after_warmup'))} tokens/s"],
        ["Model FLOPs utilisation after warmup", f"{mfu:.1%}" if isinstance(mfu, (int, float)) else "not measured (device peak unknown, CPU, or fp32)"],
        ["Peak memory", f"{fmt_num(s.get('peak_memory_gb'), 2)} GiB"],
        ["Wall time", f"{fmt_num(s.get('wall_time_h'), 2)} h ({fmt_int(s.get('wall_time_s'))} s)"],
        ["GPU-hours", fmt_num(s.get("gpu_hours"), 2)],
    ]
    if isinstance(s.get("cost"), (int, float)):
        cost = f"{s['cost']:,.2f} at {s.get('gpu_hourly_rate')} per GPU-hour"
        formula, advice = s.get("formula") or "cost = GPU-hours × price per GPU-hour", ""
    else:
        cost = "no price per GPU-hour was given"
        formula = "cost = wall_time_s / 3600 × n_gpus × price per GPU-hour"
        advice = " (pass `--gpu-hourly-rate` to `edulm train`)"  # outside the code span: backticks do not nest
    rows.append(["Cost", cost])
    return ["## Runtime and cost", ""] + md_table(["", ""], rows) + ["", f"Cost formula: `{formula}`{advice}."]


def validation(inputs: CardInputs) -> list[str]:
    """Final validation loss, perplexity and (when recorded) bits per byte."""
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
                    f"final training loss {fmt_num(s.get('final_train_loss'))}."]


def intended_use_and_limitations(inputs: CardInputs) -> list[str]:
    """What the model is for and what it cannot do."""
    return [
        "## Intended use",
        "",
        "A small base (pretrained, not instruction-tuned) English language model for research and teaching: studying "
        "pretraining, scaling and evaluation, and as a starting point for fine-tuning. It is not a product and not an assistant.",
        "",
        "## Limitations",
        "",
        f"- With {fmt_int(inputs.parameters)} parameters it knows little and reasons poorly; its text is often wrong, repetitive or incoherent.",
        "- It continues text; it does not follow instructions or refuse harmful requests, and it was not aligned or safety-tuned.",
        f"- It reflects its training data ({_data_phrase(inputs.config.get('data') or {})}), including that data's "
        "biases, errors and gaps.",
        "- Zero-shot benchmark scores of models this size sit near chance on several tasks; compare them only under the same protocol.",
    ]


def usage(inputs: CardInputs) -> list[str]:
    """How to load and sample it with transformers and with edulm."""
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


def run_locally(inputs: CardInputs) -> list[str]:
    """The GGUF files for llama.cpp, Ollama and LM Studio, with the commands that run them (when there are any)."""
    if not inputs.gguf:
        return []
    lines = ["## Run it locally", "", "For llama.cpp, Ollama and LM Studio (`edulm export --format gguf`):", ""]
    lines += md_table(["File", "Type", "Size", "SHA-256"],
                      [[f"`{g['file']}`", g["dtype"], f"{g['bytes']:,} bytes", f"`{g['sha256']}`"] for g in inputs.gguf],
                      ["---", "---", "---:", "---"])
    first = inputs.gguf[0]["file"]
    return lines + ["", "```bash", f'llama-cli -m {first} -p "Photosynthesis is the process" -n 64',
                    f"printf 'FROM ./{first}\\n' > Modelfile && ollama create {inputs.name} -f Modelfile && "
                    f"ollama run {inputs.name}", "```"]


def plots(inputs: CardInputs) -> list[str]:
    """The training curves copied beside the card."""
    lines = ["## Training curves", ""]
    if not inputs.plots:
        return lines + ["Not available: the run has no plots in `training/`."]
    for name in inputs.plots:
        lines += [f"![{name.removesuffix('.png').replace('_', ' ')}]({name})", ""]
    return lines[:-1]
