"""Checkpoints on disk: the folder format with its integrity manifest, retention, the newest good one, and the weights file shared with exports."""
