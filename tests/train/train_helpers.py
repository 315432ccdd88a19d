"""Helpers for trainer tests: synthetic documents, tiny configs, running ``python -m edulm`` in a subprocess."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import yaml

from edulm.config import config_from_dict
from edulm.train.callbacks import Callback

REPO = Path(__file__).resolve().parents[2]

_SUBJECTS = ["the river", "a small cell", "the old library", "every planet", "the market", "a young bird", "the engine"]
_VERBS = ["carries", "needs", "builds", "follows", "changes", "measures", "shelters"]
_OBJECTS = ["fresh water", "warm light", "many books", "the season", "its neighbours", "a long path", "the heavy load"]
_ENDINGS = ["every morning.", "after the rain.", "in the valley.", "without rest.", "for the town.", "near the coast."]


def synthetic_documents(n_docs: int, seed: int = 0) -> list[str]:
    """Simple, learnable English-like documents (a loss that falls is easy to see)."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n_docs):
        sentences = [
            f"{rng.choice(_SUBJECTS).capitalize()} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} {rng.choice(_ENDINGS)}"
            for _ in range(rng.randint(3, 8))
        ]
        docs.append(" ".join(sentences))
    return docs


def tiny_config(corpus: dict[str, str], out_dir: Path, **train) -> dict:
    """A config mapping for a 2-layer model that trains a step in milliseconds on CPU."""
    settings = {
        "seq_len": 32, "micro_batch_size": 2, "grad_accum_steps": 2, "max_steps": 20, "lr": 3e-3,
        "warmup_steps": 2, "eval_interval": 10, "eval_tokens": 512, "ckpt_interval": 10, "keep_last": 2,
        "log_interval": 1, "device": "cpu",
    }
    settings.update(train)
    return {
        "run": {"name": "tiny", "out_dir": str(out_dir), "seed": 7},
        "model": {"vocab_size": 320, "n_layers": 2, "d_model": 64, "d_ff": 160, "n_heads": 4, "n_kv_heads": 2,
                  "max_seq_len": 64},
        "tokenizer": {"name": corpus["tokenizer"]},
        "data": {"source": corpus["source"], "shards_dir": corpus["shards"], "val_tokens": 4000, "workers": 1},
        "train": settings,
    }


def write_config(path: Path, raw: dict) -> Path:
    """Write a config mapping as YAML (after checking it is valid)."""
    config_from_dict(raw)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def cli_env() -> dict[str, str]:
    """Environment for ``python -m edulm`` subprocesses: offline, same thread count as each other."""
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return env


def start_cli(*args: str) -> subprocess.Popen:
    """Start ``python -m edulm ARGS`` in the background, output captured."""
    return subprocess.Popen([sys.executable, "-m", "edulm", *args], env=cli_env(), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python -m edulm ARGS`` to the end."""
    return subprocess.run([sys.executable, "-m", "edulm", *args], env=cli_env(), cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


class SigtermAfter(Callback):
    """Sends this process a SIGTERM at the end of one step, as a scheduler would (the run stops after the next)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, run, event) -> None:
        if event.step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def random_batches(n: int, micro: int, seq: int, vocab: int, seed: int = 0) -> list:
    """``n`` micro-batches of ``micro`` random sequences: (inputs, targets) pairs of ``seq`` tokens, seeded."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    return [(ids[:, :-1], ids[:, 1:]) for ids in (torch.randint(0, vocab, (micro, seq + 1), generator=gen) for _ in range(n))]
