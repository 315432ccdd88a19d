"""Exports read alike by transformers 4.x and 5.x: same logits, same token ids, same special tokens.

``make setup`` installs a transformers 4.x into ``.venv/transformers4`` (``pip install --target``), beside
the main transformers 5. The 4.x side runs in a subprocess whose ``PYTHONPATH`` puts that folder first;
torch comes from the main environment. Without the folder (a local run without ``make setup``) the
tests skip and say why; CI runs ``make test``, which runs the set-up, so there they run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from hf_helpers import add_checkpoint

from edulm.config import Config, ModelConfig, RunConfig, TokenizerConfig, save_config
from edulm.hf import export
from edulm.model import LlamaLM

TRANSFORMERS4 = Path(os.environ.get("EDULM_TRANSFORMERS4") or Path(sys.prefix) / "transformers4")
"""Where ``make setup`` installs transformers 4.x: beside the virtual environment's own packages."""

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "FineWeb-Edu holds 1.3T tokens.\n\n  x  1 and\t\t2024,   3.5",
    "Cells divide<|endoftext|>héllo wörld — 10 µm",
]

# Runs under transformers 4.x: loads the folder the way a 4.x user would and reports what it got.
READ_WITH_4X = textwrap.dedent(
    """
    import json, sys, torch, transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer
    folder, texts_file, out_file = sys.argv[1:]
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=False, torch_dtype=torch.float32).eval()
    ids = [tokenizer(t)["input_ids"] for t in json.load(open(texts_file))]
    with torch.no_grad():
        logits = [model(torch.tensor([row])).logits[0] for row in ids]
    torch.save({"ids": ids, "logits": logits, "version": transformers.__version__,
                "rope_theta": model.config.rope_theta, "special": tokenizer.special_tokens_map,
                "vocab": len(tokenizer)}, out_file)
    """
)


def read_with_4x(folder: Path, tmp_path: Path) -> dict:
    """What transformers 4.x loads from ``folder`` (ids and logits of :data:`TEXTS`)."""
    if not (TRANSFORMERS4 / "transformers").is_dir():
        pytest.skip(f"no transformers 4.x at {TRANSFORMERS4}: run 'make setup' (CI does) to compare 4.x and 5.x")
    texts, out = tmp_path / "texts.json", tmp_path / "t4.pt"
    texts.write_text(json.dumps(TEXTS))
    env = {**os.environ, "PYTHONPATH": str(TRANSFORMERS4), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", READ_WITH_4X, str(folder), str(texts), str(out)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = torch.load(out, weights_only=True)
    assert result["version"].startswith("4."), result["version"]
    return result


def read_with_5x(folder: Path) -> dict:
    """The same, with the transformers of this process (5.x)."""
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert transformers.__version__.startswith("5.")
    tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(str(folder), trust_remote_code=False, dtype=torch.float32).eval()
    ids = [tokenizer(t)["input_ids"] for t in TEXTS]
    with torch.no_grad():
        logits = [model(torch.tensor([row])).logits[0] for row in ids]
    return {"ids": ids, "logits": logits, "rope_theta": model.config.rope_parameters["rope_theta"],
            "special": tokenizer.special_tokens_map, "vocab": len(tokenizer)}


def assert_read_alike(folder: Path, tmp_path: Path, rope_theta: float) -> None:
    four, five = read_with_4x(folder, tmp_path), read_with_5x(folder)
    assert four["rope_theta"] == five["rope_theta"] == rope_theta
    assert four["special"] == five["special"] and four["vocab"] == five["vocab"]
    assert four["ids"] == five["ids"]
    for a, b in zip(four["logits"], five["logits"]):
        torch.testing.assert_close(a, b)


@pytest.mark.compat
def test_tiny_export_reads_alike_in_transformers_4_and_5(tokenizer_dir, tiny_model_config, tmp_path):
    # A RoPE base far from 4.x's default of 10,000 and weights large enough for it to show in the logits.
    cfg = ModelConfig(**{**tiny_model_config.__dict__, "rope_theta": 100_000.0, "init_std": 0.3})
    run = tmp_path / "run"
    run_cfg = Config(run=RunConfig(out_dir=str(run)), model=cfg, tokenizer=TokenizerConfig(name=str(tokenizer_dir)))
    run_cfg.train.seq_len = cfg.max_seq_len
    save_config(run_cfg, run / "config.yaml")
    torch.manual_seed(0)
    ckpt = add_checkpoint(run, LlamaLM(cfg).eval(), 1)
    out = export(ckpt, tmp_path / "export")
    assert_read_alike(out, tmp_path, 100_000.0)


@pytest.mark.slow
@pytest.mark.compat
def test_real_smollm2_export_reads_alike_in_transformers_4_and_5(smollm2, tmp_path):
    _, folder, _ = smollm2
    out = export(folder, tmp_path / "smollm2-export")
    assert_read_alike(out, tmp_path, 100_000.0)
