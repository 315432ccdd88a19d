"""Supervised fine-tuning in the trainer: a tiny model continued on local chat records, stopped by SIGTERM and
resumed, repeats the uninterrupted run bit for bit; the summary reports the trained-token share and the
truncations, and final/ carries the chat template."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch
import yaml
from train_helpers import SigtermAfter, synthetic_documents

from edulm.base.errors import UsageError
from edulm.base.layout import MODEL_FILE
from edulm.base.metrics import read_metrics
from edulm.checkpoint import folders as checkpoint
from edulm.checkpoint.weights import save_weights
from edulm.config import ModelConfig, config_from_dict
from edulm.hf import export
from edulm.model import LlamaLM
from edulm.tokenizer.bpe import train_bpe
from edulm.tokenizer.chat_template import CHATML_TEMPLATE
from edulm.tokenizer.loading import DOCUMENT_SEPARATOR, save_tokenizer
from edulm.train.trainer import train

pytestmark = pytest.mark.slow

MODEL = {"vocab_size": 512, "n_layers": 2, "d_model": 64, "d_ff": 160, "n_heads": 4, "n_kv_heads": 2, "max_seq_len": 64}
STEPS = 12


def chats(n: int, seed: int = 0) -> list[dict]:
    """Question-and-answer conversations built from the synthetic documents; every seventh one is long."""
    rng = random.Random(seed)
    docs = synthetic_documents(n, seed)
    out = []
    for i, doc in enumerate(docs):
        first = " ".join(doc.split()[:4])
        messages = [{"role": "user", "content": f"Repeat: {first}"}, {"role": "assistant", "content": first + "."}]
        if i % 7 == 0:
            messages += [{"role": "user", "content": "Again, all of it."}, {"role": "assistant", "content": doc}]
        if rng.random() < 0.3:
            messages.insert(0, {"role": "system", "content": "Answer exactly."})
        out.append({"messages": messages})
    return out


@pytest.fixture(scope="module")
def sft_corpus(tmp_path_factory):
    """A chat tokenizer (512 ids; 0-2: <|endoftext|>, <|im_start|>, <|im_end|>), 160 chat records, and the checkpoint of a
    tiny 'pretrained' model to start from."""
    root = tmp_path_factory.mktemp("sft")
    tok_dir = root / "tokenizer"
    from edulm.tokenizer.chat_template import render

    records = chats(160)
    texts = synthetic_documents(300) + [render(r["messages"])[0] for r in records]
    save_tokenizer(train_bpe(texts, 512, special_tokens=(DOCUMENT_SEPARATOR, "<|im_start|>", "<|im_end|>")), tok_dir)
    path = root / "chats.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    base = root / "base"
    base.mkdir()
    base_cfg = {"run": {"out_dir": str(base)}, "model": MODEL, "tokenizer": {"name": str(tok_dir)},
                "train": {"seq_len": 64}}
    config_from_dict(base_cfg)
    (base / "config.yaml").write_text(yaml.safe_dump(base_cfg))
    torch.manual_seed(0)
    tmp = checkpoint.begin(base, 100)
    save_weights(LlamaLM(ModelConfig(**MODEL)), tmp / MODEL_FILE)
    (tmp / "config.yaml").write_bytes((base / "config.yaml").read_bytes())
    return {"tokenizer": str(tok_dir), "records": str(path), "init": str(checkpoint.commit(tmp, 100))}


def sft_config(corpus, run_dir, **train):
    return config_from_dict(sft_raw(corpus, run_dir, **train))


def sft_raw(corpus, run_dir, **train) -> dict:
    """The config mapping of a fine-tuning run of the tiny model."""
    settings = {"objective": "sft", "seq_len": 48, "micro_batch_size": 2, "grad_accum_steps": 2, "max_steps": STEPS,
                "lr": 3e-3, "warmup_steps": 2, "eval_interval": 4, "eval_tokens": 200, "ckpt_interval": 4, "keep_last": 2,
                "log_interval": 1, "device": "cpu"}
    settings.update(train)
    return {
        "run": {"name": "tiny-sft", "out_dir": str(run_dir), "seed": 3},
        "model": {"init_from": corpus["init"]},
        "tokenizer": {"name": corpus["tokenizer"]},
        "data": {"source": corpus["records"], "val_tokens": 300},
        "train": settings,
    }


def test_sft_stops_resumes_and_repeats_the_uninterrupted_run(sft_corpus, tmp_path):
    from edulm.train.core_callbacks import default_callbacks

    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    train(sft_config(sft_corpus, straight))
    with pytest.raises(SystemExit) as stop:  # SIGTERM at the end of step 5: a checkpoint of step 6, then exit 143
        train(sft_config(sft_corpus, stopped), callbacks=[*default_callbacks(False, False, True), SigtermAfter(5)])
    assert stop.value.code == 143
    assert checkpoint.step_of(checkpoint.find_latest_good(stopped)) == 6  # mid-epoch: 24 of the training rows
    train(sft_config(sft_corpus, stopped), resume="auto")

    rows = {name: read_metrics(run / "training" / "training_metrics.csv") for name, run in
            (("straight", straight), ("stopped", stopped))}
    assert [r["step"] for r in rows["stopped"]] == list(range(1, STEPS + 1))
    assert [r["loss"] for r in rows["stopped"]] == [r["loss"] for r in rows["straight"]]  # bit for bit
    assert [r["val_loss"] for r in rows["stopped"]] == [r["val_loss"] for r in rows["straight"]]
    assert (stopped / "final" / MODEL_FILE).read_bytes() == (straight / "final" / MODEL_FILE).read_bytes()

    summary = json.loads((stopped / "training" / "training_summary.json").read_text())
    chat = summary["data"]["chat"]
    assert summary["status"] == "completed" and summary["init_from"]["kind"] == "checkpoint"
    assert chat == json.loads((straight / "training" / "training_summary.json").read_text())["data"]["chat"]
    assert chat["conversations"] == 160 and chat["held_out"] > 0
    assert chat["truncated"] > 0 and chat["truncated_tokens"] > 0  # the long ones, cut to 49 tokens and counted
    assert chat["rows_trained"] == STEPS * 2 * 2
    assert 0 < chat["trained_token_share"] < 0.5  # prompts, headers and padding are not trained
    assert chat["trained_tokens"] == round(chat["trained_token_share"] * chat["rows_trained"] * 48)

    card = (stopped / "final" / "README.md").read_text()
    assert f"| Fine-tuning | supervised, loss on the assistant replies only: 160 conversations ({chat['held_out']} held out), " \
           f"{chat['truncated']} truncated to 49 tokens" in card

    # final/, and an export of the run dir (which reads final/), end a reply at <|im_end|> (id 2).
    for folder in (stopped / "final", export(stopped, tmp_path / "exported")):
        assert json.loads((folder / "tokenizer_config.json").read_text())["chat_template"] == CHATML_TEMPLATE
        assert json.loads((folder / "generation_config.json").read_text())["eos_token_id"] == 2
        assert json.loads((folder / "config.json").read_text())["eos_token_id"] == 2


def test_sft_killed_with_sigkill_mid_epoch_resumes_exactly(sft_corpus, tmp_path):
    """A fine-tuning run killed outright (no checkpoint at the kill) resumes from its last checkpoint, in the middle
    of an epoch, and logs the uninterrupted run's losses bit for bit."""
    from test_resume import kill_after_next_checkpoint
    from train_helpers import run_cli, start_cli

    straight = tmp_path / "straight"
    train(sft_config(sft_corpus, straight))
    killed = tmp_path / "killed"
    cfg = tmp_path / "killed.yaml"
    cfg.write_text(yaml.safe_dump(sft_raw(sft_corpus, killed)))
    kill_after_next_checkpoint(start_cli("train", str(cfg)), killed, after=0, every=4)
    assert checkpoint.step_of(checkpoint.find_latest_good(killed)) == 4
    done = run_cli("train", str(cfg), "--resume", "auto")
    assert done.returncode == 0, done.stderr
    got = read_metrics(killed / "training" / "training_metrics.csv")
    want = read_metrics(straight / "training" / "training_metrics.csv")
    assert [r["step"] for r in got] == list(range(1, STEPS + 1))
    assert [r["loss"] for r in got] == [r["loss"] for r in want]  # bit for bit
    assert (killed / "final" / MODEL_FILE).read_bytes() == (straight / "final" / MODEL_FILE).read_bytes()


def test_sft_learns_the_replies(sft_corpus, tmp_path):
    run = tmp_path / "run"
    train(sft_config(sft_corpus, run, max_steps=30, eval_interval=30, ckpt_interval=30))
    losses = [r["loss"] for r in read_metrics(run / "training" / "training_metrics.csv")]
    assert abs(losses[0] - math.log(512)) < 0.5  # a fresh model: about uniform over the vocabulary
    assert 0 < sum(losses[-5:]) / 5 < 0.75 * losses[0]  # the replies (and only they) are learnt: not 0, falling


def test_sft_config_mistakes_are_one_line(sft_corpus, tmp_path):
    from edulm.data.prepare import prepare

    cfg = sft_config(sft_corpus, tmp_path / "run")
    with pytest.raises(UsageError, match="nothing to prepare"):
        prepare(cfg)
    raw = {"run": {"out_dir": str(tmp_path / "x")}, "data": {"source": [{"source": "a"}, {"source": "b"}]},
           "train": {"objective": "sft"}}
    with pytest.raises(UsageError, match="not a mixture"):
        config_from_dict(raw)
    with pytest.raises(UsageError, match="train.objective"):
        config_from_dict({"train": {"objective": "dpo"}})
