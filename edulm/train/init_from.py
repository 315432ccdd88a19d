"""What a run starts from: ``model.init_from`` (continued pretraining), and the vocabulary check every run passes.

``model.init_from: MODEL`` names a Hugging Face folder or hub id, a run dir or a checkpoint dir
(:func:`edulm.hf.resolve_model`; a hub id is fetched into, or read from, the Hugging Face cache by
:func:`edulm.hf.source.hub_model_folder`). At the start of a fresh run:

1. the shape is read from MODEL; model keys that the config *sets* (:func:`edulm.config.explicit_model_keys`)
   and that disagree with it are refused in one line, the others take MODEL's values;
2. the tokenizer must fit the model (:func:`check_vocabulary`, also for runs without ``init_from``);
3. MODEL's weights are loaded; the optimizer and the schedule start fresh (step 0);
4. the run's ``config.yaml`` holds the resolved shape with ``init_from``, and the trainer state (hence the
   summary and the card) a record of what MODEL was (:meth:`InitSource.record`).

A resumed run takes its model section from the checkpoint (:func:`resumed_config`) and never reads MODEL again.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edulm.config import SHAPE_KEYS, Config, ModelConfig, explicit_model_keys, validate
from edulm.base.errors import UsageError
from edulm.base.files import sha256_file
from edulm.hf.source import SHARD_INDEX_FILE, ResolvedModel, hub_model_folder, is_hub_id, load_resolved, resolve_model

ALL_MODEL_KEYS = frozenset(f.name for f in dataclasses.fields(ModelConfig))


@dataclass(frozen=True)
class InitSource:
    """The model a run continues from, found but not loaded."""

    given: str
    """``model.init_from`` as the config wrote it."""
    kind: str
    """``hf`` (a Hugging Face folder), ``hub`` (a hub id, read from the local cache), ``run`` or ``checkpoint``."""
    resolved: ResolvedModel
    """Its weights file and shape."""

    def record(self) -> dict[str, Any]:
        """What the trainer state and the summary keep: the name given, its kind, the resolved folder and
        weights, their SHA-256 (one safetensors file; None for a sharded one) and, for a hub id, the revision."""
        weights = self.resolved.weights
        return {
            "model": self.given,
            "kind": self.kind,
            "path": str(Path(self.resolved.path).resolve()),
            "weights": str(weights.resolve()),
            "weights_sha256": None if weights.name == SHARD_INDEX_FILE else sha256_file(weights),
            "revision": Path(self.resolved.path).name if self.kind == "hub" else None,
        }


def locate(given: str) -> InitSource:
    """Find MODEL (a local folder, or a hub id's cached snapshot) and read its shape; no weights are loaded."""
    if is_hub_id(given):
        return InitSource(given, "hub", resolve_model(hub_model_folder(given)))
    resolved = resolve_model(given)
    return InitSource(given, resolved.kind, resolved)


def _with_model(cfg: Config, shape: ModelConfig, where: str, what: str) -> Config:
    """``cfg`` with the model section ``shape`` (keeping init_from and init_std), after checking the keys the
    config sets against it; the result is validated as a whole (e.g. train.seq_len against the context)."""
    asked = cfg.model
    explicit = explicit_model_keys(asked)
    conflicts = [k for k in SHAPE_KEYS if k in explicit and getattr(asked, k) != getattr(shape, k)]
    if conflicts:
        said = ", ".join(f"{k} {getattr(asked, k)}" for k in conflicts)
        found = ", ".join(f"{k} {getattr(shape, k)}" for k in conflicts)
        raise UsageError(f"{where}: the config sets model {said}, but {what} has {found}; remove these keys from the "
                         "model section (the shape is read from model.init_from) or make them agree")
    model = dataclasses.replace(shape, init_from=asked.init_from, init_std=asked.init_std)
    model.given_keys = ALL_MODEL_KEYS  # every key is now decided
    out = dataclasses.replace(cfg, model=model)
    validate(out, where)
    return out


def start_config(cfg: Config) -> tuple[Config, InitSource]:
    """For a fresh run with ``model.init_from``: the config with MODEL's shape, and MODEL found."""
    source = locate(cfg.model.init_from)
    return _with_model(cfg, source.resolved.model_config, "model.init_from", f"{cfg.model.init_from}"), source


def resumed_config(cfg: Config, saved: Config, checkpoint: Path) -> Config:
    """The config a resume from ``checkpoint`` (whose config is ``saved``) runs with: the checkpoint's model section.

    Without ``init_from`` the model sections must be equal. With it, ``init_from`` must name the same
    MODEL and the keys the config sets must agree with the checkpoint's shape; MODEL itself is not read.
    """
    if not cfg.model.init_from:
        if saved.model != cfg.model:
            differ = [f.name for f in dataclasses.fields(ModelConfig)
                      if getattr(saved.model, f.name) != getattr(cfg.model, f.name)]
            moves = ", ".join(f"{k} {getattr(saved.model, k)!r} -> {getattr(cfg.model, k)!r}" for k in differ)
            raise UsageError(f"{checkpoint}: the config's model section differs from the checkpoint's ({moves}); "
                             "resume with the config it was trained with")
        return cfg
    if saved.model.init_from != cfg.model.init_from:
        started = (f"started from model.init_from {saved.model.init_from!r}" if saved.model.init_from
                   else "trained a fresh model (no model.init_from)")
        raise UsageError(f"{checkpoint}: the run {started}, the config names model.init_from {cfg.model.init_from!r}; "
                         "resume with the config it was trained with")
    return _with_model(cfg, dataclasses.replace(saved.model, init_from=cfg.model.init_from), str(checkpoint),
                       "the checkpoint")


def load_initial_weights(source: InitSource, model_cfg: ModelConfig):
    """MODEL's weights in a :class:`~edulm.model.LlamaLM` of ``model_cfg`` (fp32, CPU, training mode)."""
    return load_resolved(dataclasses.replace(source.resolved, model_config=model_cfg)).train()


# ---------------------------------------------------------------------------------------------
# The tokenizer against the model
# ---------------------------------------------------------------------------------------------


def _run_tokenizer(cfg: Config) -> tuple[int, str, str]:
    """``(token ids, fingerprint, description)`` of what the run will feed the model: the prepared shards'
    tokenizer (from their manifest), or the tokenizer itself when streaming or fine-tuning on chat records."""
    from edulm.data.shards import MANIFEST, read_manifest

    if cfg.data.streaming or cfg.train.objective == "sft":
        from edulm.tokenizer.loading import load_tokenizer, tokenizer_fingerprint

        tok = load_tokenizer(cfg.tokenizer.name)
        return len(tok), tokenizer_fingerprint(tok), f"tokenizer '{cfg.tokenizer.name}'"
    recorded = read_manifest(cfg.data.shards_dir)["tokenizer"]
    where = Path(cfg.data.shards_dir) / MANIFEST
    return int(recorded["vocab_size"]), recorded["fingerprint"], f"{where}: the shards' tokenizer '{recorded['name']}'"


def check_vocabulary(cfg: Config) -> str:
    """Refuse a run whose token ids do not all have a row in the model's embedding (``model.vocab_size``);
    returns the fingerprint of the run's tokenizer."""
    count, fingerprint, what = _run_tokenizer(cfg)
    vocab = cfg.model.vocab_size
    if count > vocab:
        source = f"model.init_from {cfg.model.init_from}" if cfg.model.init_from else "model.vocab_size"
        raise UsageError(f"{what} has {count:,} token ids, but the model has {vocab:,} ({source}): ids from {vocab:,} "
                         "up have no embedding; use a tokenizer that fits the model (and prepare the data with it) "
                         "or a model with a larger vocabulary")
    return fingerprint


def tokenizer_mismatch(source: InitSource, run_fingerprint: str) -> str | None:
    """A warning when MODEL carries a tokenizer other than the run's (its embeddings would be read with other ids)."""
    from edulm.hf.source import load_model_tokenizer
    from edulm.tokenizer.loading import tokenizer_fingerprint

    if source.resolved.tokenizer_name is None:
        return None
    try:
        theirs = tokenizer_fingerprint(load_model_tokenizer(source.resolved))
    except UsageError:
        return None  # nothing to compare with; the vocabulary check still holds
    if theirs == run_fingerprint:
        return None
    return (f"model.init_from {source.given} comes with another tokenizer (fingerprint {theirs[:12]}...) than the run's "
            f"({run_fingerprint[:12]}...): its embeddings will be read with other token ids")
