"""Export to a Hugging Face folder that validates itself, and the export cache used by lm-eval.

Export writes into a hidden temporary folder next to ``out`` and renames it into place, so a
folder is either a complete export or absent. An existing ``out`` is replaced only when it is empty
or a previous edulm export (it holds ``edulm_export.json``); a ``README.md`` model card found there
is carried over, since ``edulm card`` writes it separately.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import uuid
from pathlib import Path

import torch

from edulm.errors import UsageError
from edulm.hf.mapping import to_hf_config
from edulm.hf.source import (
    ResolvedModel,
    as_dtype,
    has_tokenizer,
    is_hf_folder,
    load_model,
    load_model_tokenizer,
    resolve_model,
)
from edulm.layout import MODEL_FILE
from edulm.weights import save_weights

EXPORT_MARKER = "edulm_export.json"
"""File that marks a folder as written by :func:`export` (source, source kind, dtype)."""

KEPT_ON_REEXPORT = ("README.md",)
"""Files of a previous export that a new export into the same folder keeps (the model card)."""

GENERATION_DEFAULTS = {"do_sample": True, "temperature": 0.8, "top_p": 0.95}
"""Sampling defaults written to ``generation_config.json`` of exports from edulm runs."""


def _token_ids(resolved: ResolvedModel, tokenizer) -> dict[str, int | None]:
    """bos/eos/pad ids for config.json and generation_config.json."""
    if resolved.hf_config is not None and resolved.kind == "hf":
        return {k: resolved.hf_config.get(k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    if tokenizer is None:
        return {"bos_token_id": None, "eos_token_id": None, "pad_token_id": None}
    from edulm.tokenizer import document_separator_id

    # edulm trains on documents each followed by the separator, so the separator is what ends a
    # text, and what precedes one: the role SmolLM2's base model gives <|endoftext|> for both.
    sep = document_separator_id(tokenizer)
    return {"bos_token_id": sep, "eos_token_id": sep, "pad_token_id": None}


def _generation_config(resolved: ResolvedModel, ids: dict[str, int | None]):
    from transformers import GenerationConfig

    source = resolved.weights.parent / "generation_config.json"
    if resolved.kind == "hf" and source.is_file():
        return GenerationConfig.from_pretrained(str(source.parent))
    return GenerationConfig(**{k: v for k, v in ids.items() if v is not None}, **GENERATION_DEFAULTS)


def _check_out_folder(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: exists and is a file; choose a folder for the export")
    if out.is_dir() and any(out.iterdir()) and not (out / EXPORT_MARKER).is_file():
        raise UsageError(
            f"{out}: folder is not empty and was not written by edulm export; choose a new or empty folder"
        )


def validate_hf_folder(folder: str | Path, check_tokenizer: bool = True) -> None:
    """Load ``folder`` with transformers (weights on the meta device, so it costs little): no missing,
    unexpected or mis-shaped keys; the tokenizer loads with ``AutoTokenizer`` if there is one."""
    from transformers import AutoTokenizer, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    folder = Path(folder)
    bar_was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        _, info = LlamaForCausalLM.from_pretrained(str(folder), output_loading_info=True, device_map="meta")
    finally:
        if bar_was_on:
            hf_logging.enable_progress_bar()
    problems = {k: sorted(info.get(k) or []) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if any(problems.values()) or info.get("error_msgs"):
        raise RuntimeError(f"{folder}: transformers does not load the export cleanly: {problems} {info.get('error_msgs')}")
    if check_tokenizer and has_tokenizer(folder):
        AutoTokenizer.from_pretrained(str(folder))


def export(src: str | Path, out: str | Path, dtype: str | torch.dtype = "float32") -> Path:
    """Write a Hugging Face folder for ``src`` (HF folder, run dir or checkpoint dir); returns ``out``.

    The folder holds ``config.json``, ``model.safetensors`` in ``dtype``, ``generation_config.json``,
    the tokenizer files and ``edulm_export.json``; it is validated by loading it with transformers
    before it replaces anything.
    """
    torch_dtype = as_dtype(dtype)
    dtype = str(torch_dtype).removeprefix("torch.")
    out = Path(out)
    _check_out_folder(out)
    # Read everything first: the source may be the very folder being replaced.
    model, resolved = load_model(src)
    tokenizer = load_model_tokenizer(resolved) if resolved.tokenizer_name else None
    ids = _token_ids(resolved, tokenizer)
    hf_config = to_hf_config(resolved.model_config, dtype=dtype, **ids)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _fresh_sibling(out, "tmp")
    try:
        hf_config.save_pretrained(str(tmp))
        save_weights(model, tmp / MODEL_FILE, dtype=torch_dtype)
        # safetensors creates its file owner-only; give it the permissions every other file here gets.
        os.chmod(tmp / MODEL_FILE, (tmp / "config.json").stat().st_mode & 0o777)
        _generation_config(resolved, ids).save_pretrained(str(tmp))
        if tokenizer is not None:
            from edulm.tokenizer import save_tokenizer

            save_tokenizer(tokenizer, tmp)
        marker = {"source": str(resolved.path), "source_kind": resolved.kind, "weights": str(resolved.weights), "dtype": dtype}
        (tmp / EXPORT_MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        for name in KEPT_ON_REEXPORT:
            if (out / name).is_file():
                shutil.copy2(out / name, tmp / name)
        validate_hf_folder(tmp)
        _replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if tokenizer is None:
        print(f"edulm: warning: {resolved.path} names no tokenizer, so {out} has none; add tokenizer files before publishing", file=sys.stderr)
    return out


def _fresh_sibling(out: Path, tag: str) -> Path:
    """A new hidden folder beside ``out`` (made with ``mkdir``, so it gets the usual permissions)."""
    folder = out.parent / f".{out.name}.{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    return folder


def _replace_folder(new: Path, out: Path) -> None:
    """Put ``new`` at ``out``; a previous ``out`` is moved aside first and deleted only afterwards."""
    old = None
    if out.exists():
        old = _fresh_sibling(out, "old")
        os.replace(out, old / out.name)
    os.replace(new, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def ensure_hf_folder(src: str | Path) -> Path:
    """An HF folder for ``src``: itself if it already is one, else an export cached in edulm's cache folder
    (``$EDULM_CACHE/hf/``, default ``~/.cache/edulm/hf/``).

    The cache entry is keyed by the weights file's path, size and modification time, so a
    checkpoint is converted once and a rewritten one is converted again.
    """
    from edulm.tokenizer import cache_dir

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
