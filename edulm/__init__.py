"""edulm: pretrain small Llama-style language models on one GPU, evaluate them honestly, publish them."""

__version__ = "0.1.0"
