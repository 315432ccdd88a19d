"""The Llama-style decoder: parameter names equal those of transformers' ``LlamaForCausalLM``."""

from edulm.model.llama import LlamaLM, flops_per_token, count_parameters

__all__ = ["LlamaLM", "flops_per_token", "count_parameters"]
