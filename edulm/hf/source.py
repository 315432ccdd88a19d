"""Finding and loading a model: one resolver for every MODEL argument (HF folder, run dir, checkpoint dir)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, TypeVar

import torch
from safetensors import SafetensorError

from edulm.config import ModelConfig, load_config
from edulm.base.devices import resolve_device
from edulm.base.errors import UsageError, first_line
from edulm.hf.mapping import model_config_from_hf
from edulm.base.layout import CHECKPOINTS_DIR, CONFIG_FILE, FINAL_DIR, FOLDER_KINDS, MODEL_FILE, folder_kind, step_of
from edulm.base.remote_code import refuse_remote_code
from edulm.hf.export_folder import EXPORT_MARKER
from edulm.checkpoint.weights import load_state, load_weights, safetensors_problem

SHARD_INDEX_FILE = "model.safetensors.index.json"
"""Index of a sharded safetensors checkpoint, as transformers writes it."""

TOKENIZER_FILES = ("tokenizer.json",)
"""A folder with one of these carries its own (fast) tokenizer."""

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
"""Weight dtypes accepted by name."""


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model's weights and description live, found without loading any weights."""

    kind: Literal["hf", "run", "checkpoint"]
    """What the user pointed at: a Hugging Face folder, a run dir or a checkpoint dir."""
    path: Path
    """The path the user gave."""
    model_config: ModelConfig
    """Architecture of the weights."""
    tokenizer_name: str | None
    """What to pass to ``edulm.tokenizer.loading.load_tokenizer``; None when nothing names a tokenizer."""
    weights: Path
    """``model.safetensors`` (or a shard index) that holds the weights."""
    hf_config: dict[str, Any] | None = None
    """The source ``config.json`` when the weights sit in a Hugging Face folder."""
    chat_template: str | None = None
    """The chat template name of a fine-tuning run's checkpoint (its ``data.chat_template`` when
    ``train.objective`` is ``sft``), which its exports carry; None otherwise."""


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; a missing, unreadable or non-object file is a :class:`UsageError`."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UsageError(f"{path}: cannot read it as JSON ({err}); is the folder complete?") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a JSON object")
    return data


def hf_weights_file(folder: Path) -> Path | None:
    """The weights of an HF folder: ``model.safetensors`` or the shard index; None if neither exists."""
    for name in (MODEL_FILE, SHARD_INDEX_FILE):
        if (folder / name).is_file():
            return folder / name
    return None


def is_hf_folder(folder: str | Path) -> bool:
    """True when ``folder`` holds a ``config.json`` and safetensors weights."""
    folder = Path(folder)
    return (folder / "config.json").is_file() and hf_weights_file(folder) is not None


def has_tokenizer(folder: Path) -> bool:
    """True when ``folder`` carries its own tokenizer files."""
    return any((folder / name).is_file() for name in TOKENIZER_FILES)


def _resolve_hf(folder: Path, kind: str, path: Path, fallback_tokenizer: str | None = None) -> ResolvedModel:
    refuse_remote_code(folder)  # before anything else reads the folder
    weights = hf_weights_file(folder)
    if weights is None:
        raise UsageError(
            f"{folder}: has config.json but no {MODEL_FILE} or {SHARD_INDEX_FILE}; "
            "edulm reads safetensors weights (re-save the model with save_pretrained)"
        )
    for file in [weights] if weights.name != SHARD_INDEX_FILE else [folder / s for s in shard_files(weights)]:
        if file.is_file() and (problem := safetensors_problem(file)):
            redo = ("export it again from its source (edulm export SRC --out DIR)" if (folder / EXPORT_MARKER).is_file()
                    or kind == "run" else "download or save it again")
            raise UsageError(f"{file}: damaged safetensors file ({problem}); {redo}")
    hf_config = read_json(folder / "config.json")
    cfg = model_config_from_hf(hf_config, where=str(folder / "config.json"))
    tokenizer = str(folder) if has_tokenizer(folder) else fallback_tokenizer
    return ResolvedModel(kind, path, cfg, tokenizer, weights, hf_config)  # type: ignore[arg-type]


def _resolve_checkpoint(folder: Path, kind: str, path: Path) -> ResolvedModel:
    run_cfg = load_config(folder / CONFIG_FILE)
    return ResolvedModel(kind, path, run_cfg.model, run_cfg.tokenizer.name, folder / MODEL_FILE,  # type: ignore[arg-type]
                         chat_template=_run_chat_template(run_cfg))


def _run_chat_template(run_cfg) -> str | None:
    """A fine-tuning run's chat template name (its exports carry it), None for other runs."""
    return run_cfg.data.chat_template if run_cfg.train.objective == "sft" else None


def resolve_model(src: str | Path) -> ResolvedModel:
    """Find the weights and architecture behind a MODEL argument, without loading weights.

    Accepts a Hugging Face Llama folder (``config.json`` + safetensors), an edulm checkpoint dir
    (``model.safetensors`` + ``config.yaml``) or a run dir (``config.yaml`` + ``final/`` or
    ``checkpoints/``). A run dir resolves to the newest of ``final/`` and its latest intact
    checkpoint (``final/`` is written after the last checkpoint, so it wins unless training went on).
    """
    path = Path(src)
    expected = "pass a Hugging Face Llama folder, an edulm run dir or a checkpoint dir"
    if not path.exists():
        raise UsageError(f"{path}: no such file or folder; {expected}")
    if not path.is_dir():
        raise UsageError(f"{path}: is a file, not a folder; {expected}")
    if (path / "config.json").is_file():
        return _resolve_hf(path, "hf", path)
    if (path / MODEL_FILE).is_file() and (path / CONFIG_FILE).is_file():
        return _resolve_checkpoint(path, "checkpoint", path)
    if (path / CONFIG_FILE).is_file() and ((path / FINAL_DIR).is_dir() or (path / CHECKPOINTS_DIR).is_dir()):
        return _resolve_run(path)
    raise UsageError(f"{path}: is neither a Hugging Face folder, a run dir nor a checkpoint dir{_what_it_holds(path)}; {expected}")


def _what_it_holds(folder: Path) -> str:
    """A hint for the folders users point at by mistake: a run's ``checkpoints/``, a shards dir."""
    steps = sorted(p for p in folder.iterdir() if p.is_dir() and step_of(p) is not None)
    if steps:
        return f" (it holds checkpoints: pass one of them, such as {steps[-1]}, or the run dir {folder.parent})"
    if folder_kind(folder) == "shards":
        return f" (it holds {FOLDER_KINDS['shards']}, not a model)"
    return ""


def _resolve_run(run_dir: Path) -> ResolvedModel:
    # The trainer's module, imported only when needed.
    from edulm.checkpoint.folders import find_latest_good, list_checkpoints

    final = run_dir / FINAL_DIR
    final_weights = hf_weights_file(final) if is_hf_folder(final) else None

    def newer_than_final(checkpoint: Path | None) -> bool:
        if checkpoint is None:
            return False
        weights = checkpoint / MODEL_FILE
        if final_weights is None or not weights.is_file():  # a damaged newest one: let find_latest_good decide
            return True
        return weights.stat().st_mtime > final_weights.stat().st_mtime

    # Checksumming checkpoints costs seconds, so only when one may be newer than final/.
    listed = list_checkpoints(run_dir)
    checkpoint = find_latest_good(run_dir) if newer_than_final(listed[-1] if listed else None) else None
    if final_weights is not None and not newer_than_final(checkpoint):
        run_cfg = load_config(run_dir / CONFIG_FILE)
        resolved = _resolve_hf(final, "run", run_dir, fallback_tokenizer=run_cfg.tokenizer.name)
        return dataclasses.replace(resolved, chat_template=_run_chat_template(run_cfg))
    if checkpoint is None:
        raise UsageError(
            f"{run_dir}: run dir has no complete final/ folder and no intact checkpoint yet; "
            "train it first or pass a checkpoint dir"
        )
    return _resolve_checkpoint(Path(checkpoint), "run", run_dir)


def is_hub_id(name: str) -> bool:
    """True when ``name`` can only mean a hub model (``OWNER/NAME`` or ``NAME``): no such local path, and
    not written as a path (no leading ``.``, ``/`` or ``~``, at most one ``/``)."""
    return bool(name) and not Path(name).exists() and not name.startswith((".", "/", "~")) and name.count("/") <= 1


HUB_MODEL_FILES = ("config.json", "*.safetensors", SHARD_INDEX_FILE, "tokenizer*", "special_tokens_map.json",
                   "generation_config.json")
"""What :func:`hub_model_folder` fetches of a hub model: config, safetensors weights, tokenizer."""


def hub_model_folder(repo_id: str) -> Path:
    """The local snapshot of hub model ``repo_id`` in the Hugging Face cache (its config, safetensors and
    tokenizer files), downloaded when the hub answers (:func:`edulm.base.hub_access.use_hub`), else the cached copy."""
    from huggingface_hub import snapshot_download

    from edulm.base.hub_access import hub_offline, is_no_hub_error, use_hub

    use_hub()  # one quick probe: without a hub the process goes offline now instead of retrying for a minute
    try:
        return Path(snapshot_download(repo_id, allow_patterns=list(HUB_MODEL_FILES)))
    except Exception as err:  # noqa: BLE001 - every hub failure becomes one clear line
        if is_no_hub_error(err):
            why = "offline mode is on (HF_HUB_OFFLINE=1, or the hub did not answer)" if hub_offline() else "the hub is unreachable"
            raise UsageError(f"{repo_id}: no such folder, and no cached copy of a hub model of that name ({why}); "
                             "download it into a folder and pass that folder") from None
        detail = first_line(err)
        raise UsageError(f"{repo_id}: not a local folder, and the hub could not provide it ({detail[:200]})") from None


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def as_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """A torch dtype from itself or its name ('float32', 'bfloat16', 'float16')."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise UsageError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def empty_model(cfg: ModelConfig):
    """A :class:`LlamaLM` with uninitialised CPU parameters (no time spent on a random init)."""
    from edulm.model import LlamaLM

    with torch.device("meta"):
        model = LlamaLM(cfg)
    model.to_empty(device="cpu")
    if cfg.tie_embeddings:  # to_empty makes a new tensor per module, which unties shared weights
        model.lm_head.weight = model.model.embed_tokens.weight
    model.rope.reset_tables()
    return model


def shard_files(index_file: Path) -> list[str]:
    """The weight files a transformers shard index lists, each once, in name order."""
    return sorted(set(read_json(index_file).get("weight_map", {}).values()))


def _load_sharded(model, index_file: Path) -> None:
    """Load the shards listed in a transformers shard index, with the same key checks as one file."""
    from safetensors.torch import load_file

    shards = shard_files(index_file)
    if not shards:
        raise UsageError(f"{index_file}: lists no weight files")
    state: dict[str, torch.Tensor] = {}
    for shard in shards:
        state.update(load_file(str(index_file.parent / shard)))
    load_state(model, state, index_file)


T = TypeVar("T")

READ_TRIES = 3
"""How often :func:`read_model` resolves a run dir again when the checkpoint it was reading was removed meanwhile."""


def read_model(src: str | Path, read: Callable[[ResolvedModel], T]) -> tuple[T, ResolvedModel]:
    """``(read(resolved), resolved)`` for ``src``. A run in training keeps only its newest checkpoints
    (``train.keep_last``): when the one being read is removed meanwhile, the run dir is resolved again and its
    newer checkpoint read instead, so a live run can be exported or evaluated at any moment."""
    for attempt in range(READ_TRIES):
        resolved = resolve_model(src)
        try:
            return read(resolved), resolved
        except (UsageError, FileNotFoundError):
            if resolved.kind == "run" and not resolved.weights.exists() and attempt + 1 < READ_TRIES:
                continue
            raise
    raise AssertionError("unreachable")


def load_model(src: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | str = torch.float32):
    """Load a model from an HF folder, a run dir or a checkpoint dir; returns ``(LlamaLM, ResolvedModel)``.

    The model is in eval mode on ``device`` (``'auto'`` picks CUDA when available) with parameters
    in ``dtype``; the RoPE tables stay float32 whatever the dtype. A run's checkpoint removed while it is read
    is replaced by the run's newer one (:func:`read_model`).
    """
    return read_model(src, lambda resolved: load_resolved(resolved, device, dtype))


def load_resolved(resolved: ResolvedModel, device: str | torch.device = "cpu", dtype: torch.dtype | str = torch.float32):
    """The :class:`LlamaLM` of an already resolved model, built from ``resolved.model_config``, as :func:`load_model` loads it."""
    model = empty_model(resolved.model_config)
    try:
        if resolved.weights.name == SHARD_INDEX_FILE:
            _load_sharded(model, resolved.weights)
        else:
            load_weights(model, resolved.weights)
    except (ValueError, RuntimeError) as err:  # missing/unexpected keys, or shapes that differ
        reason = str(err).splitlines()[0].removeprefix(f"{resolved.weights}: ")
        raise UsageError(f"{resolved.weights}: {reason}; the weights and their config disagree") from None
    except SafetensorError as err:
        raise UsageError(f"{resolved.weights}: not a readable safetensors file ({err}); re-export or re-download it") from None
    except FileNotFoundError as err:  # a shard that the index lists is not there, or the weights went away
        if not resolved.weights.exists():
            raise UsageError(f"{resolved.weights}: was removed while it was read; try again") from None
        raise UsageError(f"{resolved.weights}: {err}; the folder is incomplete, re-download it") from None
    model.to(device=resolve_device(device), dtype=as_dtype(dtype))
    model.rope.float()
    model.rope.reset_tables()
    return model.eval()


def load_model_tokenizer(src: str | Path | ResolvedModel):
    """The tokenizer that belongs to a model: its folder's own tokenizer files, else the one its run config names."""
    from edulm.tokenizer.loading import load_tokenizer

    resolved = src if isinstance(src, ResolvedModel) else resolve_model(src)
    if resolved.tokenizer_name is None:
        raise UsageError(
            f"{resolved.path}: has no tokenizer files and no run config naming a tokenizer; "
            "add tokenizer.json to the folder"
        )
    return load_tokenizer(resolved.tokenizer_name)


