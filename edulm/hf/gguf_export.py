"""``edulm export SRC --format gguf --out FILE.gguf``: one GGUF file that llama.cpp, Ollama and LM Studio load.

The file is complete for llama.cpp's ``llama`` architecture: every hyper-parameter, the weights in
llama.cpp's layout, and the tokenizer. What llama.cpp expects, and how edulm meets it:

- **names**: Hugging Face's ``model.layers.N.self_attn.q_proj.weight`` is ``blk.N.attn_q.weight`` and so on
  (:data:`TENSOR_NAMES`); with tied embeddings there is no ``output.weight`` (llama.cpp then uses
  ``token_embd.weight``, as it does for SmolLM2's own GGUF).
- **RoPE**: Hugging Face stores the query and key projections with the two halves of every head's
  rotation apart (``rotate_half``); llama.cpp rotates neighbouring pairs, so the rows of ``attn_q`` and
  ``attn_k`` are permuted per head (:func:`permute_for_rope`), as llama.cpp's own converter does.
- **dtypes**: ``f32``, ``f16``, ``bf16`` for every matrix, or ``q8_0`` (llama.cpp's 8-bit blocks of 32);
  the norms stay ``f32`` in every file.
- **tokenizer**: byte-level BPE (``gpt2``) with its tokens, token types, merges, special ids and chat
  template, and the name of llama.cpp's pre-tokenizer that splits text as this tokenizer's does
  (:func:`llama_cpp_pre_tokenizer`): ``smollm`` for SmolLM2's (digits one by one, then GPT-2's regex),
  ``gpt-2`` for GPT-2's (what ``edulm tokenizer train`` builds). A tokenizer with another pre-tokenizer is
  refused in one line: llama.cpp would split its text differently from training.

Written to a temporary name and renamed, so a killed export leaves no half file under the final name and
an existing file is replaced only by a complete one; one export at a time may write a file (a second is
refused naming the first).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edulm.base.errors import UsageError
from edulm.base.files import atomic_path
from edulm.base.lock import folder_lock

GGUF_DTYPES = ("f32", "f16", "bf16", "q8_0")
"""``--dtype`` values of a GGUF export."""

TENSOR_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
"""Hugging Face Llama parameter names (within a layer, after ``model.layers.N.``) -> llama.cpp's (after ``blk.N.``)."""

_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")


def gguf_tensor_name(hf_name: str) -> str:
    """llama.cpp's name of a Hugging Face Llama parameter."""
    layer = _LAYER.match(hf_name)
    if layer:
        return f"blk.{layer.group(1)}.{TENSOR_NAMES[layer.group(2)]}"
    return TENSOR_NAMES[hf_name]


def permute_for_rope(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """The rows of a query or key projection from Hugging Face's rotate-half order to llama.cpp's pairs."""
    out, *rest = weight.shape
    return weight.reshape(n_heads, 2, out // n_heads // 2, *rest).swapaxes(1, 2).reshape(weight.shape)


def _pre_tokenizer_json(tok) -> Any:
    return json.loads(tok.backend_tokenizer.to_str()).get("pre_tokenizer")


def _byte_level(node: Any) -> bool:
    """GPT-2's byte-level split: its regex, no prefix space."""
    return (isinstance(node, dict) and node.get("type") == "ByteLevel" and not node.get("add_prefix_space")
            and node.get("use_regex", True))


def llama_cpp_pre_tokenizer(tok) -> str:
    """The llama.cpp pre-tokenizer that splits text as ``tok`` does; a one-line UsageError when there is none."""
    pre = _pre_tokenizer_json(tok)
    if _byte_level(pre):
        return "gpt-2"
    if isinstance(pre, dict) and pre.get("type") == "Sequence":
        steps = pre.get("pretokenizers") or []
        if (len(steps) == 2 and steps[0].get("type") == "Digits" and steps[0].get("individual_digits")
                and _byte_level(steps[1])):
            return "smollm"
    raise UsageError(f"the tokenizer's pre-tokenizer ({json.dumps(pre)[:120]}) has no llama.cpp match, so llama.cpp "
                     "would split text differently from training; export a model with a GPT-2 or SmolLM2 style "
                     "tokenizer ('edulm tokenizer train' builds a GPT-2 one)")


def _tokenizer_metadata(writer, tok, vocab_size: int) -> None:
    """The tokenizer in llama.cpp's keys (``tokenizer.ggml.*``, ``tokenizer.chat_template``)."""
    import gguf

    model = json.loads(tok.backend_tokenizer.to_str())["model"]
    if model.get("type") != "BPE":
        raise UsageError(f"the tokenizer is {model.get('type')}, not byte-level BPE; GGUF export supports BPE tokenizers")
    pre = llama_cpp_pre_tokenizer(tok)
    special = {t.content for t in tok.added_tokens_decoder.values() if t.special}
    added = {t.content for t in tok.added_tokens_decoder.values()}
    tokens, types = [], []
    for token_id in range(vocab_size):
        token = tok.convert_ids_to_tokens(token_id) if token_id < len(tok) else None
        if token is None:  # the model's embedding is larger than the vocabulary: padding rows
            tokens.append(f"[PAD{token_id}]")
            types.append(gguf.TokenType.UNUSED)
        else:
            tokens.append(token)
            types.append(gguf.TokenType.CONTROL if token in special
                         else gguf.TokenType.USER_DEFINED if token in added else gguf.TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for setter, token in ((writer.add_bos_token_id, tok.bos_token), (writer.add_eos_token_id, tok.eos_token),
                          (writer.add_unk_token_id, tok.unk_token), (writer.add_pad_token_id, tok.pad_token)):
        if token is not None:
            setter(tok.convert_tokens_to_ids(token))
    writer.add_add_bos_token(False)  # edulm and SmolLM2 prepend nothing: a document follows a separator token
    if getattr(tok, "chat_template", None):
        writer.add_chat_template(tok.chat_template)


def _tensor_data(tensor: torch.Tensor, dtype: str):
    """``(array, raw_shape, raw_dtype)`` of one tensor in the file's dtype (norms and vectors always f32)."""
    import gguf

    array = tensor.detach().to(torch.float32).cpu().numpy()
    if array.ndim == 1 or dtype == "f32":
        return array, None, None
    if dtype == "f16":
        return array.astype(np.float16), None, None
    kind = {"bf16": gguf.GGMLQuantizationType.BF16, "q8_0": gguf.GGMLQuantizationType.Q8_0}[dtype]
    return gguf.quants.quantize(array, kind), None, kind  # the shape follows from the blocks


def export_gguf(src: str | Path, out: str | Path, dtype: str = "f32") -> Path:
    """Write ``src`` (an HF folder, a run dir or a checkpoint dir) as one GGUF file at ``out``; returns it."""
    import gguf

    from edulm.hf.source import load_model, load_model_tokenizer
    from edulm.hf.exporter import refuse_nonfinite
    from edulm.checkpoint.weights import weights_state_dict

    if dtype not in GGUF_DTYPES:
        raise UsageError(f"--dtype {dtype!r} is not a GGUF type; choose one of {', '.join(GGUF_DTYPES)}")
    out = Path(out)
    if out.suffix != ".gguf":
        raise UsageError(f"--out {out}: a GGUF export is one file; name it NAME.gguf")
    if out.is_dir():
        raise UsageError(f"--out {out} is a folder; name a file NAME.gguf")
    model, resolved = load_model(src)
    refuse_nonfinite(model, resolved)
    if not resolved.tokenizer_name:
        raise UsageError(f"{resolved.path} names no tokenizer; a GGUF file needs one (llama.cpp tokenizes with it)")
    tok = load_model_tokenizer(resolved)
    cfg = resolved.model_config
    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                 "bf16": gguf.LlamaFileType.MOSTLY_BF16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[dtype]
    out.parent.mkdir(parents=True, exist_ok=True)
    with folder_lock(out, "edulm export"), atomic_path(out, out.name) as tmp:  # one writer; whole or not at all
        writer = gguf.GGUFWriter(str(tmp), "llama")
        writer.add_name(Path(resolved.path).name)
        writer.add_context_length(cfg.max_seq_len)
        writer.add_embedding_length(cfg.d_model)
        writer.add_block_count(cfg.n_layers)
        writer.add_feed_forward_length(cfg.d_ff)
        writer.add_head_count(cfg.n_heads)
        writer.add_head_count_kv(cfg.n_kv_heads)
        writer.add_rope_freq_base(float(cfg.rope_theta))
        writer.add_layer_norm_rms_eps(float(cfg.norm_eps))
        writer.add_vocab_size(cfg.vocab_size)
        writer.add_rope_dimension_count(cfg.d_model // cfg.n_heads)
        writer.add_file_type(file_type)
        _tokenizer_metadata(writer, tok, cfg.vocab_size)
        for name, tensor in weights_state_dict(model).items():  # tied: no lm_head.weight, as llama.cpp expects
            if name.endswith("q_proj.weight"):
                tensor = permute_for_rope(tensor, cfg.n_heads)
            elif name.endswith("k_proj.weight"):
                tensor = permute_for_rope(tensor, cfg.n_kv_heads)
            data, raw_shape, raw_dtype = _tensor_data(tensor, dtype)
            writer.add_tensor(gguf_tensor_name(name), data, raw_shape=raw_shape, raw_dtype=raw_dtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return out
