"""edulm <-> Hugging Face ``LlamaForCausalLM``.

Parameter names are the same on both sides, so moving weights is a copy. This package adds the
config mapping (``mapping``), one resolver and loader for every MODEL argument: an HF folder, a
run dir or a checkpoint dir (``source``), an export that validates its own output and that
transformers 4.x and 5.x read alike (``exporter``), and the rules for re-exporting into a folder
(``export_folder``).
"""

from edulm.hf.exporter import EXPORT_MARKER, ensure_hf_folder, export, validate_hf_folder
from edulm.hf.mapping import model_config_from_hf, to_hf_config
from edulm.hf.source import ResolvedModel, empty_model, is_hf_folder, load_model, load_model_tokenizer, resolve_model

__all__ = [
    "EXPORT_MARKER",
    "ResolvedModel",
    "empty_model",
    "ensure_hf_folder",
    "export",
    "is_hf_folder",
    "load_model",
    "load_model_tokenizer",
    "model_config_from_hf",
    "resolve_model",
    "to_hf_config",
    "validate_hf_folder",
]
