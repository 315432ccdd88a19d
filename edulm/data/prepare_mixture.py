"""`edulm prepare` for a mixture: each source into its own sub-folder, then one manifest over all of them.

Source ``i`` goes to ``data.shards_dir/NN-NAME/`` (:func:`edulm.data.mixture.source_folder`), prepared
exactly as a single source would be (its own resume state and manifest), with its share by weight of
``data.val_tokens`` and of ``data.max_tokens``. The top-level ``manifest.json`` lists every shard with
its path below the folder and the number of its source, so readers of a split (perplexity, sample-text,
contamination) see every source's documents, and adds ``mixture``: per source its folder, weight,
target share, prepared tokens per split and their share of all prepared training tokens (the realised
mixture of the prepared data), and what it held out.

While sources are being prepared, ``.prepare-state.json`` at the top records the mixture's settings, so
a rerun with other sources or weights is refused before it touches anything.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from edulm.config import Config
from edulm.data.mixture import held_out_shares, source_folder, split_by_weight
from edulm.data.prepare_folder import FolderPlan, TokenizerFacts, already_prepared, held_out_summary, prepare_folder
from edulm.data.prepare_state import STATE, load_state, remove_state, save_state
from edulm.data.shards import FORMAT_VERSION, MANIFEST
from edulm.data.records import Source
from edulm.data.split import VAL_EVERY
from edulm.base.files import remove_stale_temps, write_json

_COUNTS = ("read", "skipped_empty", "train", "val", "past_max_tokens")


def mixture_plans(cfg: Config) -> list[tuple[str, FolderPlan]]:
    """``(sub-folder, plan)`` per source: each with its share of the held-out and training budgets."""
    d = cfg.data
    entries = d.sources()
    weights = [e.weight for e in entries]
    val_shares = held_out_shares(d)
    # A budget of 0 means "no budget", so a source's share of a real budget is at least one token.
    max_shares = [max(1, m) for m in split_by_weight(d.max_tokens, weights)] if d.max_tokens else [0] * len(entries)
    return [
        (source_folder(i, e.source),
         FolderPlan(e.source, e.text_field, e.pattern, cfg.run.seed, val, budget, d.shard_tokens, d.workers,
                    label=f"source {i + 1}/{len(entries)}"))
        for i, (e, val, budget) in enumerate(zip(entries, val_shares, max_shares))
    ]


def _settings(cfg: Config, plans: list[tuple[str, FolderPlan]], tok: TokenizerFacts) -> dict[str, Any]:
    d = cfg.data
    return {
        "format_version": FORMAT_VERSION, "tokenizer": tok.name, "fingerprint": tok.fingerprint, "eos_id": tok.eos_id,
        "vocab_size": tok.vocab_size, "seed": cfg.run.seed, "val_tokens": d.val_tokens, "val_every": VAL_EVERY,
        "shard_tokens": d.shard_tokens, "max_tokens": d.max_tokens,
        "mixture": [{"folder": folder, "source": e.source, "weight": e.weight, "text_field": e.text_field, "pattern": e.pattern}
                    for (folder, _), e in zip(plans, d.sources())],
    }


def prepare_mixture(cfg: Config, sources: list[Source], tok: TokenizerFacts) -> dict[str, Any]:
    """Prepare every source of the mixture ``cfg.data.source`` into its sub-folder; return the top-level manifest."""
    out = Path(cfg.data.shards_dir)
    plans = mixture_plans(cfg)
    settings = _settings(cfg, plans, tok)
    done = already_prepared(out, settings, f" from {len(plans)} sources")
    if done is not None:
        return done
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)
    try:
        save_state(out, load_state(out, settings), [])  # refuses an unfinished prepare of another mixture
        manifests = [prepare_folder(plan, source, tok, out / folder) for (folder, plan), source in zip(plans, sources)]
    except BaseException:
        if created and not any(p.is_file() and p.name != STATE for p in out.rglob("*")):
            shutil.rmtree(out, ignore_errors=True)  # nothing was written: leave no folder behind
        raise
    manifest = _manifest(cfg, plans, manifests, settings)
    write_json(out / MANIFEST, manifest, "the shards manifest")
    remove_state(out)
    for entry in manifest["mixture"]:
        print(f"{out}: {entry['folder']}: weight {entry['target_share']:.1%}, {entry['tokens']['train']:,} training tokens "
              f"({entry['train_share']:.1%} of the prepared), {entry['tokens']['val']:,} held out")
    return manifest


def _manifest(cfg: Config, plans: list[tuple[str, FolderPlan]], manifests: list[dict[str, Any]],
              settings: dict[str, Any]) -> dict[str, Any]:
    total_weight = sum(e.weight for e in cfg.data.sources())
    train_total = sum(m["tokens"]["train"] for m in manifests)
    splits: dict[str, Any] = {}
    for split in ("train", "val"):
        shards = [{**shard, "file": f"{folder}/{shard['file']}", "source": i}
                  for i, ((folder, _), m) in enumerate(zip(plans, manifests)) for shard in m["splits"][split]["shards"]]
        splits[split] = {"documents": sum(m["splits"][split]["documents"] for m in manifests),
                         "tokens": sum(m["splits"][split]["tokens"] for m in manifests), "shards": shards}
    mixture = []
    for (folder, plan), entry, m in zip(plans, cfg.data.sources(), manifests):
        mixture.append({
            "folder": folder, "source": plan.source, "text_field": plan.text_field, "pattern": plan.pattern,
            "weight": entry.weight, "target_share": entry.weight / total_weight,
            "tokens": dict(m["tokens"]), "train_share": m["tokens"]["train"] / train_total if train_total else 0.0,
            "documents": dict(m["documents"]), "held_out": m["held_out"],
            "stopped_at_max_tokens": m["stopped_at_max_tokens"],
        })
    held = held_out_summary(cfg.data.val_tokens, splits["val"]["tokens"], splits["val"]["documents"])
    held["short"] = any(m["held_out"]["short"] for m in manifests)
    elapsed = sum(m["wall_time_s"] for m in manifests)
    tokens = {"train": splits["train"]["tokens"], "val": splits["val"]["tokens"]}
    return {
        "format": "edulm-token-shards",
        "format_version": FORMAT_VERSION,
        "source": settings["mixture"],
        "text_field": cfg.data.text_field,
        "tokenizer": manifests[0]["tokenizer"],
        "seed": cfg.run.seed,
        "documents": {key: sum(m["documents"][key] for m in manifests) for key in _COUNTS},
        "tokens": tokens,
        "held_out": held,
        "splits": splits,
        "mixture": mixture,
        "stopped_at_max_tokens": any(m["stopped_at_max_tokens"] for m in manifests),
        "wall_time_s": round(elapsed, 3),
        "tokens_per_s": round((tokens["train"] + tokens["val"]) / max(elapsed, 1e-9), 1),
        "settings": settings,
    }
