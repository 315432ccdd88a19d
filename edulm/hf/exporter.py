"""Export to a Hugging Face folder that validates itself, and the export cache used by lm-eval.

The folder is read alike by transformers 4.x and 5.x (see :func:`edulm.hf.mapping.portable_config` and
:func:`edulm.tokenizer.loading.save_tokenizer`). Export holds a lock on ``out`` for its whole life, builds the
folder in a temporary sibling, validates it with transformers and swaps it in; what a re-export keeps
of the old folder (the user's files, the model card) is decided in :mod:`edulm.hf.export_folder`.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import torch

from edulm.base.cache import cache_dir
from edulm.base.errors import DiskFullError, UsageError
from edulm.base.files import disk_full_error, is_disk_full, remove_path, sha256_file, temp_path, write_json
from edulm.hf.export_folder import EXPORT_MARKER, carry_over, check_out_folder, replace_folder, settle_stale_exports
from edulm.hf.mapping import save_hf_config, to_hf_config
from edulm.hf.source import (
    SHARD_INDEX_FILE,
    ResolvedModel,
    as_dtype,
    has_tokenizer,
    is_hf_folder,
    load_model_tokenizer,
    load_resolved,
    read_json,
    read_model,
    resolve_model,
    shard_files,
)
from edulm.base.layout import MODEL_FILE
from edulm.base.lock import folder_lock
from edulm.base.remote_code import refuse_remote_code
from edulm.checkpoint.weights import nonfinite_tensors, save_weights

log = logging.getLogger(__name__)

GENERATION_DEFAULTS = {"do_sample": True, "temperature": 0.8, "top_p": 0.95}
"""Sampling defaults written to ``generation_config.json`` of exports from edulm runs."""


def _token_ids(resolved: ResolvedModel, tokenizer) -> dict[str, int | None]:
    """bos/eos/pad ids for config.json and generation_config.json."""
    if resolved.hf_config is not None and resolved.kind == "hf":
        return {k: resolved.hf_config.get(k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    if tokenizer is None:
        return {"bos_token_id": None, "eos_token_id": None, "pad_token_id": None}
    from edulm.tokenizer.loading import document_separator_id

    # edulm trains on documents each followed by the separator, so the separator is what ends a
    # text, and what precedes one: the role SmolLM2's base model gives <|endoftext|> for both.
    sep = document_separator_id(tokenizer)
    return {"bos_token_id": sep, "eos_token_id": sep, "pad_token_id": None}


def _generation_config(resolved: ResolvedModel, ids: dict[str, int | None], chat: bool = False):
    from transformers import GenerationConfig

    source = resolved.weights.parent / "generation_config.json"
    if resolved.kind == "hf" and source.is_file():
        # Read as data (from_dict), not with from_pretrained, whose keyword arguments end up in the saved file.
        config = GenerationConfig.from_dict(read_json(source))
        if chat:  # a reply ends at the end of its turn
            config.eos_token_id = ids["eos_token_id"]
        return config
    return GenerationConfig(**{k: v for k, v in ids.items() if v is not None}, **GENERATION_DEFAULTS)


def validate_hf_folder(folder: str | Path, check_tokenizer: bool = True) -> None:
    """Load ``folder`` with transformers (weights on the meta device, so it costs little): no missing,
    unexpected or mis-shaped keys; the tokenizer loads with ``AutoTokenizer`` if there is one."""
    from transformers import AutoTokenizer, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    folder = Path(folder)
    refuse_remote_code(folder)
    bar_was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        _, info = LlamaForCausalLM.from_pretrained(
            str(folder), output_loading_info=True, device_map="meta", trust_remote_code=False
        )
    finally:
        if bar_was_on:
            hf_logging.enable_progress_bar()
    problems = {k: sorted(info.get(k) or []) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if any(problems.values()) or info.get("error_msgs"):
        raise RuntimeError(f"{folder}: transformers does not load the export cleanly: {problems} {info.get('error_msgs')}")
    if check_tokenizer and has_tokenizer(folder):
        AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)


def weights_digest(resolved: ResolvedModel) -> str:
    """SHA-256 of the source weights' bytes (of every shard, in order, for a sharded folder)."""
    if resolved.weights.name != SHARD_INDEX_FILE:
        return sha256_file(resolved.weights)
    shards = shard_files(resolved.weights)
    return hashlib.sha256("".join(sha256_file(resolved.weights.parent / s) for s in shards).encode()).hexdigest()


def refuse_nonfinite(model, resolved: ResolvedModel) -> None:
    """A one-line UsageError when ``model`` holds NaN or infinite weights: a diverged model is exported in no format."""
    if bad := nonfinite_tensors(model):
        raise UsageError(f"{resolved.weights}: {len(bad)} of {len(model.state_dict())} weight tensors hold NaN or infinite "
                         f"values ({bad[0]}, ...): a diverged model is not exported; export an earlier checkpoint")


def export(src: str | Path, out: str | Path, dtype: str | torch.dtype = "float32", chat_template: str | None = None) -> Path:
    """Write a Hugging Face folder for ``src`` (HF folder, run dir or checkpoint dir); returns ``out``.

    The folder holds ``config.json``, ``model.safetensors`` in ``dtype``, ``generation_config.json``,
    the tokenizer files and ``edulm_export.json``; it is validated by loading it with transformers
    before it replaces anything. A second process exporting into ``out`` meanwhile is refused
    (:class:`UsageError` naming it). Re-exporting keeps the other files of ``out``; see
    :mod:`edulm.hf.export_folder` for those and for the model card.

    ``chat_template`` (a name of :data:`edulm.tokenizer.chat_template.CHAT_TEMPLATES`), or by default the
    template of a fine-tuning run's checkpoint (``train.objective: sft``): written into
    ``tokenizer_config.json``, with ``<|im_end|>`` as the eos token of the tokenizer, ``config.json`` and
    ``generation_config.json``, so that a reply stops at the end of its turn.
    """
    torch_dtype = as_dtype(dtype)
    dtype = str(torch_dtype).removeprefix("torch.")
    out = Path(out)
    if chat_template is not None:
        from edulm.tokenizer.chat_template import template_for

        template_for(chat_template)  # a wrong name is refused before the model is read
    check_out_folder(out)  # at once, before the lock and the (slow) model load
    with folder_lock(out, "edulm export"):
        settle_stale_exports(out)
        check_out_folder(out)
        note = _export_locked(src, out, torch_dtype, dtype, chat_template)
    if note:
        log.warning(note)
    return out


def _export_locked(src: str | Path, out: Path, torch_dtype: torch.dtype, dtype: str, chat_template: str | None) -> str | None:
    # Read everything first: the source may be the very folder being replaced. The weights and their digest in
    # one read, so that a run's checkpoint removed meanwhile by its retention is read again whole from the newer one.
    (model, source_sha256), resolved = read_model(src, lambda r: (load_resolved(r), weights_digest(r)))
    refuse_nonfinite(model, resolved)
    tokenizer = load_model_tokenizer(resolved) if resolved.tokenizer_name else None
    ids = _token_ids(resolved, tokenizer)
    chat = chat_template or resolved.chat_template
    if chat:
        if tokenizer is None:
            raise UsageError(f"{resolved.path} names no tokenizer, so it cannot carry the chat template '{chat}'")
        from edulm.tokenizer.chat_template import as_chat_tokenizer

        tokenizer, ids["eos_token_id"] = as_chat_tokenizer(tokenizer, chat)
    hf_config = to_hf_config(resolved.model_config, dtype=dtype, **ids)

    tmp = temp_path(out)
    try:
        tmp.mkdir()
        save_hf_config(hf_config, tmp)
        save_weights(model, tmp / MODEL_FILE, dtype=torch_dtype)
        # safetensors creates its file owner-only; give it the permissions every other file here gets.
        os.chmod(tmp / MODEL_FILE, (tmp / "config.json").stat().st_mode & 0o777)
        _generation_config(resolved, ids, chat=bool(chat)).save_pretrained(str(tmp))
        if tokenizer is not None:
            from edulm.tokenizer.loading import save_tokenizer

            save_tokenizer(tokenizer, tmp, model_max_length=resolved.model_config.max_seq_len)
        validate_hf_folder(tmp)
        marker = {
            "source": str(resolved.path), "source_kind": resolved.kind, "weights": str(resolved.weights),
            "dtype": dtype, "source_sha256": source_sha256, "model_sha256": sha256_file(tmp / MODEL_FILE),
            "files": sorted([p.name for p in tmp.iterdir()] + [EXPORT_MARKER]),
        }
        write_json(tmp / EXPORT_MARKER, marker)  # last: a temporary holding it is a complete export
        note = carry_over(out, tmp, marker)
        replace_folder(tmp, out)
    except BaseException as err:
        remove_path(tmp)
        if is_disk_full(err) and not isinstance(err, DiskFullError):
            raise disk_full_error(out.parent, f"the export {out.name}", "free some space and export again") from err
        raise
    if tokenizer is None:
        log.warning("%s names no tokenizer, so %s has none; add tokenizer files before publishing", resolved.path, out)
    return note


def ensure_hf_folder(src: str | Path) -> Path:
    """An HF folder for ``src``: itself if it already is one, else an export cached in edulm's cache folder
    (``$EDULM_CACHE/hf/``, default ``~/.cache/edulm/hf/``).

    The cache entry is keyed by the weights file's path, size and modification time, so a
    checkpoint is converted once and a rewritten one is converted again.
    """
    resolved = resolve_model(src)
    folder = resolved.weights.parent
    if is_hf_folder(folder):
        return folder
    stat = resolved.weights.stat()
    key = f"{resolved.weights.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    target = cache_dir() / "hf" / hashlib.sha256(key.encode()).hexdigest()[:20]
    if not (is_hf_folder(target) and (target / EXPORT_MARKER).is_file()):
        # Export the checkpoint itself, not the run dir, so a checkpoint written meanwhile can't slip in.
        export(folder, target)
    return target
