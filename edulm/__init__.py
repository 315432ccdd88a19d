"""edulm: pretrain small Llama-style language models on one GPU, evaluate them honestly, publish them."""

from edulm.base.hub_access import refuse_hub_kernels

__version__ = "0.1.0"

# Before any command, test or library call reaches transformers: no layer of a model edulm loads is ever
# swapped for code downloaded from the hub (see refuse_hub_kernels).
refuse_hub_kernels()
