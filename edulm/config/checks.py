"""Validating a config, one section at a time: sizes positive, numbers finite, shapes that fit together.

:func:`validate` is the one place that calls the per-section checks; :func:`validate_model` also
serves configs read from Hugging Face folders (:mod:`edulm.hf.mapping`).
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

from edulm.config.schema import Config, DataConfig, ModelConfig, RunConfig, TokenizerConfig, TrainConfig
from edulm.base.errors import UsageError


def _validate_sources(d: DataConfig, where: str) -> None:
    """data.source: a non-empty name, or a non-empty list of distinct entries with positive, finite weights."""
    if isinstance(d.source, str):
        if not d.source.strip():
            raise UsageError(f"{where}: data.source is empty; name a source such as builtin:sample")
        return
    if not d.source:
        raise UsageError(f"{where}: data.source is an empty list; name at least one source")
    if d.pattern:
        raise UsageError(f"{where}: data.pattern applies to a single data.source; give each entry of the list its own pattern")
    seen = set()
    for i, entry in enumerate(d.sources()):
        if not entry.source.strip():
            raise UsageError(f"{where}: data.source[{i}] names no source; write {{source: NAME, weight: W}}")
        if not (math.isfinite(entry.weight) and entry.weight > 0):
            raise UsageError(f"{where}: data.source[{i}].weight must be a positive number, got {entry.weight}")
        # One folder however it is written (src/a, src/a/, ./src/a): the comparison key only, the name stays as given.
        key = (os.path.normpath(entry.source.strip()), entry.text_field, entry.pattern)
        if key in seen:
            raise UsageError(f"{where}: data.source[{i}] repeats the source '{entry.source}'; give it one entry with the sum of the weights")
        seen.add(key)


def validate(cfg: Config, source: str = "config") -> None:
    """Validate every section (the one place that calls the per-section checks below)."""
    validate_run(cfg.run, source)
    validate_model(cfg.model, source)
    validate_tokenizer(cfg.tokenizer, source)
    validate_data(cfg.data, source)
    validate_train(cfg.train, cfg.model, source)
    validate_objective(cfg, source)


def _positive(source: str, section: str, obj: Any, *names: str) -> None:
    for name in names:
        if getattr(obj, name) <= 0:
            raise UsageError(f"{source}: {section}.{name} must be positive, got {getattr(obj, name)}")


def _non_negative(source: str, section: str, obj: Any, *names: str) -> None:
    for name in names:
        if getattr(obj, name) < 0:
            raise UsageError(f"{source}: {section}.{name} must be 0 or more, got {getattr(obj, name)}")


def _not_empty(source: str, section: str, obj: Any, *names: str) -> None:
    # An empty path or name would silently mean "the current folder" or an unnamed run.
    for name in names:
        if not getattr(obj, name).strip():
            raise UsageError(f"{source}: {section}.{name} is empty; give it a value")


def _finite(source: str, section: str, obj: Any) -> None:
    """Every float field is a finite number (a section may be built in code, not only from YAML)."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise UsageError(f"{source}: {section}.{f.name} must be a finite number, got {value}")


MAX_SEED = 2**63 - 1
"""The largest ``run.seed``: torch's and numpy's generators both take it."""


def validate_run(r: RunConfig, source: str = "config") -> None:
    """The run needs a name and an output folder, and a seed the random generators take."""
    _not_empty(source, "run", r, "name", "out_dir")
    if not 0 <= r.seed <= MAX_SEED:
        raise UsageError(f"{source}: run.seed must be a whole number from 0 to {MAX_SEED:,} (2**63 - 1), got {r.seed}")


SHAPE_KEYS = ("vocab_size", "n_layers", "d_model", "d_ff", "n_heads", "n_kv_heads", "max_seq_len", "rope_theta",
              "norm_eps", "tie_embeddings")
"""The model keys that describe the weights (what ``model.init_from`` decides)."""


def explicit_model_keys(m: ModelConfig) -> frozenset[str]:
    """The model keys the user set: those the YAML file and the overrides named; for a config built in
    code (no record of that), those whose value differs from the default."""
    if m.given_keys is not None:
        return m.given_keys
    defaults = ModelConfig()
    return frozenset(f.name for f in dataclasses.fields(m) if getattr(m, f.name) != getattr(defaults, f.name))


def shape_pending(m: ModelConfig) -> bool:
    """True while the shape is still to be read from ``model.init_from`` (some shape key was left to it)."""
    return bool(m.init_from) and not set(SHAPE_KEYS) <= explicit_model_keys(m)


def validate_model(m: ModelConfig, source: str = "config") -> None:
    """Sizes are positive and finite; heads divide the width and the query heads; RoPE needs an even head width.

    With ``init_from`` the shape comes from that model when training starts; until then only the keys
    themselves are checked, not how they fit together.
    """
    _finite(source, "model", m)
    _positive(source, "model", m, "vocab_size", "n_layers", "d_model", "d_ff", "n_heads", "n_kv_heads", "max_seq_len",
              "rope_theta", "norm_eps", "init_std")
    if m.init_from != m.init_from.strip():
        raise UsageError(f"{source}: model.init_from {m.init_from!r} has spaces around it; write the model's path or hub id alone")
    if shape_pending(m):
        return
    if m.d_model % m.n_heads:
        raise UsageError(f"{source}: model.n_heads ({m.n_heads}) must divide model.d_model ({m.d_model})")
    if m.n_heads % m.n_kv_heads:
        raise UsageError(f"{source}: model.n_kv_heads ({m.n_kv_heads}) must divide model.n_heads ({m.n_heads})")
    if m.head_dim % 2:
        raise UsageError(f"{source}: the head width d_model / n_heads = {m.head_dim} must be even for RoPE")


def validate_tokenizer(tok: TokenizerConfig, source: str = "config") -> None:
    """The tokenizer is named."""
    _not_empty(source, "tokenizer", tok, "name")


def validate_data(d: DataConfig, source: str = "config") -> None:
    """Counts are not negative, shards hold tokens, and the source and paths are named."""
    _non_negative(source, "data", d, "val_tokens", "workers", "max_tokens", "prefetch")
    _positive(source, "data", d, "shard_tokens")
    _validate_sources(d, source)
    _not_empty(source, "data", d, "text_field", "shards_dir")


def validate_train(t: TrainConfig, m: ModelConfig, source: str = "config") -> None:
    """Sizes and rates are in range and finite; sequences fit the model (``m``); the batch keys agree."""
    _finite(source, "train", t)
    _positive(source, "train", t, "seq_len", "grad_accum_steps", "lr", "log_interval", "max_nonfinite_steps", "keep_last")
    if t.micro_batch_size != "auto":
        _positive(source, "train", t, "micro_batch_size")
    _non_negative(source, "train", t, "global_batch_size", "max_steps", "token_budget", "warmup_steps", "weight_decay",
                  "grad_clip", "eval_interval", "eval_tokens", "ckpt_interval", "min_lr_ratio", "eps",
                  "downstream_interval")
    if t.downstream:
        _positive(source, "train", t, "downstream_limit", "downstream_batch_size")
    _not_empty(source, "train", t, "wandb_project")
    if t.seq_len > m.max_seq_len and not (shape_pending(m) and "max_seq_len" not in explicit_model_keys(m)):
        raise UsageError(f"{source}: train.seq_len ({t.seq_len}) is longer than model.max_seq_len ({m.max_seq_len})")
    for name in ("min_lr_ratio", "decay_fraction"):
        if not 0 <= getattr(t, name) <= 1:
            raise UsageError(f"{source}: train.{name} must be between 0 and 1, got {getattr(t, name)}")
    for name in ("beta1", "beta2"):
        if not 0 <= getattr(t, name) < 1:
            raise UsageError(f"{source}: train.{name} must be in [0, 1), got {getattr(t, name)}")
    if t.micro_batch_size != "auto" and t.global_batch_size % t.micro_batch_size:
        raise UsageError(
            f"{source}: train.global_batch_size ({t.global_batch_size}) is not a multiple of train.micro_batch_size "
            f"({t.micro_batch_size}); change one of them or set train.micro_batch_size=auto"
        )


def validate_objective(cfg: Config, source: str = "config") -> None:
    """Supervised fine-tuning reads one source of chat records from local files: no mixture, no streaming."""
    if cfg.train.objective != "sft":
        return
    if cfg.data.is_mixture:
        raise UsageError(f"{source}: train.objective sft reads one data.source of chat records, not a mixture; "
                         "combine the conversations into one folder of jsonl or parquet files")
    if cfg.data.streaming:
        raise UsageError(f"{source}: train.objective sft reads its chat records whole at the start; set data.streaming=false")
    _not_empty(source, "data", cfg.data, "messages_field")
