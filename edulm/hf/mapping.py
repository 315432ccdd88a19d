"""Config mapping between edulm's :class:`ModelConfig` and transformers' ``LlamaConfig``.

Reads ``config.json`` files written by transformers 4.x (top-level ``rope_theta``) and 5.x
(``rope_parameters``), and refuses, with a clear message, what edulm's Llama cannot represent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edulm.config import ModelConfig, validate_model
from edulm.base.errors import UsageError


def to_hf_config(cfg: ModelConfig, **extra: Any):
    """The transformers ``LlamaConfig`` of an edulm model; ``extra`` adds or overrides keys (token ids, dtype)."""
    from transformers import LlamaConfig

    fields: dict[str, Any] = dict(
        architectures=["LlamaForCausalLM"],
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.d_model,
        intermediate_size=cfg.d_ff,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_kv_heads,
        head_dim=cfg.head_dim,
        max_position_embeddings=cfg.max_seq_len,
        # transformers 5 folds this into rope_parameters; 4.x keeps it top-level. Either reads it.
        rope_theta=cfg.rope_theta,
        rms_norm_eps=cfg.norm_eps,
        tie_word_embeddings=cfg.tie_embeddings,
        initializer_range=cfg.init_std,
        hidden_act="silu",
        attention_bias=False,
        mlp_bias=False,
        use_cache=True,
    )
    fields.update(extra)
    return LlamaConfig(**fields)


ARCHITECTURE_KEYS = (
    "architectures", "model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
    "num_attention_heads", "num_key_value_heads", "head_dim", "max_position_embeddings", "rms_norm_eps",
    "tie_word_embeddings", "hidden_act", "attention_bias", "mlp_bias", "initializer_range",
    "bos_token_id", "eos_token_id", "pad_token_id",
)
"""``config.json`` keys that an export always states, so no transformers version fills them in from its own defaults."""


def portable_config(hf_config) -> dict[str, Any]:
    """``config.json`` contents that transformers 4.x and 5.x read as the same model.

    transformers 5 writes the RoPE base only inside ``rope_parameters`` and the weight type as ``dtype``;
    4.x reads neither and would silently fall back to ``rope_theta`` 10,000. So the 4.x names are
    written too, with the same values: top-level ``rope_theta`` and ``torch_dtype``.
    """
    import json

    d = json.loads(hf_config.to_json_string())  # what save_pretrained writes: the values that differ from 5.x's defaults
    full = hf_config.to_dict()
    # ... and every architecture value, stated even where it equals 5.x's default: 4.x's defaults may differ.
    d.update({key: full[key] for key in ARCHITECTURE_KEYS if key in full})
    params = d.get("rope_parameters") or {}
    if "rope_theta" in params:
        d["rope_theta"] = params["rope_theta"]
    if d.get("dtype") is not None:
        d["torch_dtype"] = d["dtype"]
    return dict(sorted(d.items()))


def save_hf_config(hf_config, folder: str | Path) -> None:
    """Write ``folder/config.json`` (see :func:`portable_config`)."""
    from edulm.base.files import write_json

    write_json(Path(folder) / "config.json", portable_config(hf_config))


def _rope_theta(d: dict[str, Any], where: str) -> float:
    """RoPE base from a 5.x ``rope_parameters`` or a 4.x top-level ``rope_theta``; refuse RoPE scaling."""
    params = d.get("rope_parameters") or {}
    scaling = d.get("rope_scaling") or {}
    for name, block in (("rope_parameters", params), ("rope_scaling", scaling)):
        if not isinstance(block, dict):
            raise UsageError(f"{where}: '{name}' must be a mapping, got {block!r}")
        kind = block.get("rope_type", block.get("type", "default"))
        other = set(block) - {"rope_type", "type", "rope_theta"}
        if kind != "default" or other:
            raise UsageError(
                f"{where}: RoPE scaling ({name} = {block}) is not supported; edulm models use plain RoPE"
            )
    theta = params.get("rope_theta", scaling.get("rope_theta", d.get("rope_theta", 10000.0)))
    return float(theta)


def model_config_from_hf(d: dict[str, Any], where: str = "config.json") -> ModelConfig:
    """An edulm :class:`ModelConfig` from a Llama ``config.json`` written by transformers 4.x or 5.x.

    Raises :class:`UsageError` for anything edulm cannot represent exactly: another model type, RoPE
    scaling, biases, an activation other than SiLU, or a head width other than hidden_size / heads.
    """
    if d.get("model_type") != "llama":
        raise UsageError(
            f"{where}: model_type is {d.get('model_type')!r}; edulm reads Llama models (model_type 'llama') only"
        )
    required = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
    missing = [k for k in required if k not in d]
    if missing:
        raise UsageError(f"{where}: missing {', '.join(missing)}; is this a complete Llama config?")
    for flag in ("attention_bias", "mlp_bias"):
        if d.get(flag):
            raise UsageError(f"{where}: {flag} is true; edulm models have no biases")
    if d.get("hidden_act", "silu") != "silu":
        raise UsageError(f"{where}: hidden_act is {d['hidden_act']!r}; edulm's MLP is SwiGLU (silu)")
    quant = d.get("quantization_config")
    if quant and (not isinstance(quant, dict) or quant.get("quant_method") != "gguf"):  # GGUF checkpoints are saved de-quantized
        method = quant.get("quant_method") if isinstance(quant, dict) else quant
        raise UsageError(f"{where}: quantized weights ({method}) are not supported; use a float checkpoint")
    try:
        return _model_config(d, where)
    except (TypeError, ValueError) as err:  # a null or non-numeric size, say
        raise UsageError(f"{where}: {err}; is this a valid Llama config?") from None


def _model_config(d: dict[str, Any], where: str) -> ModelConfig:
    hidden, heads = int(d["hidden_size"]), int(d["num_attention_heads"])
    if heads <= 0 or hidden % heads:
        raise UsageError(f"{where}: num_attention_heads ({heads}) must divide hidden_size ({hidden})")
    head_dim = d.get("head_dim")
    if head_dim is not None and int(head_dim) != hidden // heads:
        raise UsageError(
            f"{where}: head_dim {head_dim} differs from hidden_size / num_attention_heads = {hidden // heads}; "
            "edulm models use head_dim = hidden_size / heads"
        )
    cfg = ModelConfig(
        vocab_size=int(d["vocab_size"]),
        n_layers=int(d["num_hidden_layers"]),
        d_model=hidden,
        d_ff=int(d["intermediate_size"]),
        n_heads=heads,
        n_kv_heads=int(d.get("num_key_value_heads") or heads),
        max_seq_len=int(d.get("max_position_embeddings", 2048)),
        rope_theta=_rope_theta(d, where),
        norm_eps=float(d.get("rms_norm_eps", 1e-6)),
        tie_embeddings=bool(d.get("tie_word_embeddings", False)),
        init_std=float(d.get("initializer_range", 0.02)),
    )
    # The shape rules of edulm configs (positive sizes, heads dividing, even head width).
    validate_model(cfg, where)
    return cfg


