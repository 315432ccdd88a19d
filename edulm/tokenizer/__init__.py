"""Tokenizers: resolve a hub id, a folder, a ``tokenizer.json`` or the offline SmolLM2 copy; fingerprints; saving; training a small BPE."""
