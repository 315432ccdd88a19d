"""``edulm info``: what a config or a saved model is — architecture, exact size, training cost per token."""

from __future__ import annotations

import dataclasses
import math
import typing
from pathlib import Path

from edulm.config import Config, ModelConfig, dump_config, explain, field_docs, load_config
from edulm.config.schema import default_of, type_name
from edulm.base.errors import UsageError
from edulm.model.llama import count_parameters, flops_per_token


def architecture_lines(m: ModelConfig, seq_len: int) -> list[str]:
    """The architecture, the exact parameter count and the training FLOPs per token at ``seq_len``."""
    n = count_parameters(m)
    embedding = m.vocab_size * m.d_model * (1 if m.tie_embeddings else 2)
    return [
        f"architecture: Llama decoder, {m.n_layers} layers, d_model {m.d_model}, FFN {m.d_ff} (SwiGLU), "
        f"{m.n_heads} query / {m.n_kv_heads} key-value heads of width {m.head_dim}",
        f"vocabulary: {m.vocab_size:,}; context: {m.max_seq_len:,}; RoPE theta {m.rope_theta:g}; "
        f"RMSNorm eps {m.norm_eps:g}; embeddings {'tied' if m.tie_embeddings else 'untied'}",
        f"parameters: {n:,}",
        f"non-embedding parameters: {n - embedding:,}",
        f"training FLOPs/token: {flops_per_token(m, seq_len):,} (6N + 12·L·d·T with T = {seq_len:,})",
    ]


def _budget_lines(cfg: Config) -> list[str]:
    """Tokens per optimizer step and the number of steps, as the trainer will derive them.

    ``train.global_batch_size`` counts every process, so it fixes the step whatever the number of
    processes; otherwise a step is ``micro_batch_size x grad_accum_steps`` per process.
    """
    t = cfg.train
    if t.global_batch_size > 0:
        sequences, how = t.global_batch_size, f"{t.global_batch_size} sequences (train.global_batch_size, all processes)"
    elif t.micro_batch_size == "auto":
        return [f"tokens per step: set at start (micro_batch_size auto) x {t.grad_accum_steps} x {t.seq_len:,} per process"]
    else:
        sequences, how = t.micro_batch_size * t.grad_accum_steps, f"{t.micro_batch_size} x {t.grad_accum_steps} sequences"
    per_step = sequences * t.seq_len
    # With an 'auto' micro-batch the global batch is met within 1% once the micro-batch is known.
    about = "about " if t.micro_batch_size == "auto" else ""
    processes = "" if t.global_batch_size > 0 else ", one process"
    lines = [f"tokens per step: {about}{per_step:,} ({how} x {t.seq_len:,} tokens{processes})"]
    if t.max_steps:
        lines.append(f"steps: {t.max_steps:,} (train.max_steps) = {t.max_steps * per_step:,} tokens")
    elif t.token_budget:
        lines.append(f"steps: {math.ceil(t.token_budget / per_step):,} (ceil of the {t.token_budget:,}-token budget / tokens per step)")
    return lines


def describe(target: str | None, overrides: list[str], explain: bool = False) -> str:
    """Text for ``edulm info TARGET``: a YAML config (with overrides) or a MODEL folder."""
    if target is None:
        if explain:
            return _explain_text()
        raise UsageError("info needs a config or model path (or --explain to list every config key)")
    path = Path(target)
    if not path.exists():
        raise UsageError(f"{target}: no such file or folder; pass a YAML config or a model folder")
    if path.is_file():
        cfg = load_config(path, overrides)
        from edulm.train.trainer import check_recipe

        check_recipe(cfg.train)  # the optimizer and schedule named exist and accept their settings, as train checks
        lines = [f"config: {path}"]
        if cfg.model.init_from:
            cfg, shape_known = _continued_shape(cfg, lines)
        else:
            shape_known = True
        if shape_known:
            lines += architecture_lines(cfg.model, cfg.train.seq_len)
        lines += [*_budget_lines(cfg), "", "resolved config:", dump_config(cfg).rstrip()]
    else:
        if overrides:
            raise UsageError("key=value overrides apply to configs, not to model folders")
        from edulm.hf import resolve_model

        resolved = resolve_model(path)
        m = resolved.model_config
        lines = [f"model: {resolved.path} ({resolved.kind})", *architecture_lines(m, m.max_seq_len)]
        lines.append(f"weights: {resolved.weights}")
        lines.append(f"tokenizer: {resolved.tokenizer_name or 'none recorded'}")
    if explain:
        lines += ["", _explain_text()]
    return "\n".join(lines)


def _continued_shape(cfg: Config, lines: list[str]) -> tuple[Config, bool]:
    """A config with ``model.init_from``: its shape read from a local MODEL (as training reads it, keys checked),
    or a note for a hub id (nothing is downloaded to answer ``info``). Returns the config and whether the shape is known."""
    from edulm.hf.source import is_hub_id
    from edulm.train.init_from import start_config

    if is_hub_id(cfg.model.init_from):
        lines.append(f"continues: {cfg.model.init_from} (a hub id; its shape is read when training starts)")
        return cfg, False
    cfg, source = start_config(cfg)
    lines.append(f"continues: {source.given} ({source.kind}: {source.resolved.weights})")
    return cfg, True


def _explain_text() -> str:
    from edulm.train.optim import OPTIMIZERS
    from edulm.train.schedule import SCHEDULES

    lines = ["config keys (section.key, type, default, meaning):", explain()]
    for key, kinds in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES)):
        for name, kind in kinds.items():
            if kind.Settings is not None:
                lines += [f"train.{key}_settings of train.{key}={name}:", explain_settings(kind.Settings)]
    return "\n".join(lines)


def explain_settings(settings: type) -> str:
    """The keys of an optimizer's or schedule's settings dataclass with their type, default and documentation."""
    docs, hints = field_docs(settings), typing.get_type_hints(settings)
    return "\n".join(f"  {f.name} ({type_name(hints[f.name])}, default {default_of(f)!r})\n      {docs.get(f.name, '')}"
                     for f in dataclasses.fields(settings))
