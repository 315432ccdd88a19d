"""The whole language model in one place: embeddings, decoder blocks, final norm, (tied) LM head.

Parameter names are those of transformers' ``LlamaForCausalLM`` (``model.embed_tokens.weight``,
``model.layers.0.self_attn.q_proj.weight``, ..., ``model.norm.weight``, ``lm_head.weight``), so a
state dict moves between the two without renaming or permuting.

Initialisation (``init_weights``): every linear and embedding weight is drawn from
N(0, init_std); the two projections that write into the residual stream (``o_proj`` and
``down_proj``) use init_std / sqrt(2 * n_layers) so the residual variance stays flat with depth
(GPT-2's scheme); RMSNorm weights start at 1.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from edulm.config import ModelConfig
from edulm.model.attention import Attention, KVCache
from edulm.model.loss import lm_loss
from edulm.model.mlp import SwiGLU
from edulm.model.norm import RMSNorm
from edulm.model.rope import RotaryEmbedding

LOSS_CHUNK_TOKENS = 4096
"""Tokens per slice of the chunked LM-head + cross-entropy (when ``fused_loss`` is on)."""


class Block(nn.Module):
    """Pre-norm decoder block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.self_attn = Attention(cfg.d_model, cfg.n_heads, cfg.n_kv_heads)
        self.post_attention_layernorm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = SwiGLU(cfg.d_model, cfg.d_ff)

    def forward(self, x, cos, sin, cache: KVCache | None = None, start: int = 0) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache, start)
        return x + self.mlp(self.post_attention_layernorm(x))


class Backbone(nn.Module):
    """Embeddings, blocks and the final norm (transformers' ``LlamaModel``)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)


class LlamaLM(nn.Module):
    """A Llama decoder-only language model.

    ``forward(input_ids)`` returns logits (B, T, vocab); ``forward(input_ids, targets)`` returns the
    mean cross-entropy loss. ``grad_checkpointing`` and ``fused_loss`` are plain attributes that
    the trainer switches.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.model = Backbone(cfg)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.rope = RotaryEmbedding(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta)
        self.grad_checkpointing = False
        self.fused_loss = True
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """Draw fresh weights (see the module docstring for the scheme)."""
        std = self.config.init_std
        residual_std = std / math.sqrt(2 * self.config.n_layers)
        for name, module in self.named_modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                scaled = name.endswith("o_proj") or name.endswith("down_proj")
                nn.init.normal_(module.weight, mean=0.0, std=residual_std if scaled else std)
            elif isinstance(module, RMSNorm):
                nn.init.ones_(module.weight)
        self.rope.reset_tables()

    def hidden_states(
        self, input_ids: torch.Tensor, caches: list[KVCache] | None = None, start: int = 0
    ) -> torch.Tensor:
        """Final normed hidden states (B, T, d_model) for token ids (B, T)."""
        T = input_ids.shape[1]
        if start + T > self.config.max_seq_len:
            raise ValueError(f"sequence of {start + T} tokens is longer than max_seq_len {self.config.max_seq_len}")
        cos, sin = self.rope(start, T)
        x = self.model.embed_tokens(input_ids)  # (B, T, d)
        for i, layer in enumerate(self.model.layers):
            cache = caches[i] if caches is not None else None
            if self.grad_checkpointing and self.training and cache is None:
                x = checkpoint(layer, x, cos, sin, use_reentrant=False)
            else:
                x = layer(x, cos, sin, cache, start)
        return self.model.norm(x)

    def forward(
        self,
        input_ids: torch.Tensor,
        targets: torch.Tensor | None = None,
        caches: list[KVCache] | None = None,
        start: int = 0,
    ) -> torch.Tensor:
        h = self.hidden_states(input_ids, caches, start)
        if targets is None:
            return self.lm_head(h)  # (B, T, vocab)
        chunk = LOSS_CHUNK_TOKENS if self.fused_loss else None
        return lm_loss(h, self.lm_head.weight, targets, chunk_size=chunk)

    def new_caches(self, batch: int, max_len: int | None = None) -> list[KVCache]:
        """Empty KV caches, one per layer, on the model's device and dtype."""
        p = self.lm_head.weight
        cfg = self.config
        length = max_len or cfg.max_seq_len
        return [
            KVCache(batch, cfg.n_kv_heads, length, cfg.head_dim, device=p.device, dtype=p.dtype)
            for _ in range(cfg.n_layers)
        ]


def count_parameters(cfg: ModelConfig) -> int:
    """Exact number of distinct parameters of a model with this config (tied weights counted once)."""
    d, hd = cfg.d_model, cfg.head_dim
    attn = d * cfg.n_heads * hd * 2 + d * cfg.n_kv_heads * hd * 2  # q, o + k, v
    mlp = 3 * d * cfg.d_ff
    block = attn + mlp + 2 * d  # two RMSNorm weights
    embed = cfg.vocab_size * d
    head = 0 if cfg.tie_embeddings else cfg.vocab_size * d
    return embed + cfg.n_layers * block + d + head


def flops_per_token(cfg: ModelConfig, seq_len: int) -> int:
    """Training FLOPs per token: 6N + 12 * n_layers * d_model * seq_len.

    6N counts the forward (2N) and backward (4N) matrix multiplies over all N parameters; the second
    term is attention's score and value products (PaLM appendix B / nanoGPT's estimate).
    """
    return 6 * count_parameters(cfg) + 12 * cfg.n_layers * cfg.d_model * seq_len
