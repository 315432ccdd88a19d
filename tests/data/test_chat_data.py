"""Fine-tuning data: chat records, rows with assistant-only targets, the held-out split, truncation counts,
epochs, shuffling and exact resume."""

from __future__ import annotations

import json
import logging

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from edulm.base.errors import UsageError
from edulm.config import config_from_dict
from edulm.data import chat_loader
from edulm.data.chat_data import build_chat_set, chat_set, say_what_was_cut
from edulm.data.chat_loader import ChatLoader, PAD_ID, chat_val_batches, fill_row
from edulm.data.chat_records import read_conversations
from edulm.data.prefetch import PrefetchingLoader
from edulm.model.loss import IGNORE_INDEX
from edulm.tokenizer.bpe import train_bpe
from edulm.tokenizer.chat_template import encode_chat
from edulm.tokenizer.loading import DOCUMENT_SEPARATOR, save_tokenizer

TOPICS = ["water", "the moon", "cells", "rivers", "light", "birds", "engines", "bread"]


def conversation(i: int) -> list[dict[str, str]]:
    topic = TOPICS[i % len(TOPICS)]
    messages = [{"role": "user", "content": f"Tell me about {topic} number {i}."},
                {"role": "assistant", "content": f"{topic.capitalize()} is worth a look, item {i}."}]
    if i % 3 == 0:
        messages = [{"role": "system", "content": "Answer briefly."}] + messages + [
            {"role": "user", "content": "More?"}, {"role": "assistant", "content": f"Yes: {topic} again."}]
    return messages


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    texts = [m["content"] for i in range(40) for m in conversation(i)]
    folder = tmp_path_factory.mktemp("chat-tok")
    save_tokenizer(train_bpe(texts, 400, special_tokens=(DOCUMENT_SEPARATOR, "<|im_start|>", "<|im_end|>")), folder)
    from edulm.tokenizer.loading import load_tokenizer

    return load_tokenizer(str(folder)), str(folder)


def test_the_data_layer_ignores_what_the_loss_ignores():
    assert chat_loader.IGNORE_INDEX == IGNORE_INDEX


def test_records_from_jsonl_and_parquet_in_a_folder(tmp_path):
    folder = tmp_path / "chats"
    folder.mkdir()
    (folder / "a.jsonl").write_text("".join(json.dumps({"messages": conversation(i)}) + "\n" for i in range(3)))
    pq.write_table(pa.table({"messages": [conversation(i) for i in range(3, 5)]}), folder / "b.parquet")
    assert list(read_conversations(str(folder), pattern="*")) == [conversation(i) for i in range(5)]


@pytest.mark.parametrize("content, message", [
    ('{"text": "x"}\n', r"line 1: no field 'messages' \(found: text\)"),
    ('{"messages": [{"role": "bot", "content": "x"}]}\n', "line 1: message 0 has role 'bot'"),
    ("not json\n", "line 1: not valid JSON"),
])
def test_bad_records_are_one_line(tmp_path, content, message):
    path = tmp_path / "chat.jsonl"
    path.write_text(content)
    with pytest.raises(UsageError, match=message):
        list(read_conversations(str(path)))


def test_text_and_hub_sources_are_refused(tmp_path):
    (tmp_path / "a.txt").write_text("hello")
    with pytest.raises(UsageError, match="is plain text"):
        list(read_conversations(str(tmp_path / "a.txt")))
    with pytest.raises(UsageError, match="save the dataset locally first"):
        list(read_conversations("hf://HuggingFaceTB/smoltalk"))


def test_rows_hold_one_conversation_with_targets_on_the_replies_only(tok):
    tokenizer, _ = tok
    messages = conversation(3)
    chat = encode_chat(tokenizer, messages)
    seq_len = len(chat.ids) + 5
    inputs, targets = np.empty(seq_len, np.int64), np.empty(seq_len, np.int64)
    fill_row(chat.ids, chat.mask, inputs, targets)
    n = len(chat.ids) - 1
    assert inputs[:n].tolist() == chat.ids[:-1].tolist() and set(inputs[n:].tolist()) == {PAD_ID}
    assert set(targets[n:].tolist()) == {IGNORE_INDEX}
    kept = targets[:n] != IGNORE_INDEX
    assert kept.tolist() == (chat.mask[1:] == 1).tolist()
    assert tokenizer.decode(targets[:n][kept]) == "Rivers is worth a look, item 3.<|im_end|>Yes: rivers again.<|im_end|>"


def test_the_loss_of_a_row_is_the_loss_of_its_replies(tok):
    from edulm.config import ModelConfig
    from edulm.model import LlamaLM

    tokenizer, _ = tok
    torch.manual_seed(0)
    model = LlamaLM(ModelConfig(vocab_size=400, n_layers=1, d_model=32, d_ff=64, n_heads=2, n_kv_heads=1, max_seq_len=96))
    rows = [encode_chat(tokenizer, conversation(i)) for i in (0, 1)]
    x, y = np.empty((2, 96), np.int64), np.empty((2, 96), np.int64)
    for r, chat in enumerate(rows):
        fill_row(chat.ids, chat.mask, x[r], y[r])
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    with torch.no_grad():
        logits = model(x)
        expected = torch.nn.functional.cross_entropy(logits[y != IGNORE_INDEX], y[y != IGNORE_INDEX])
        for fused in (True, False):
            model.fused_loss = fused
            torch.testing.assert_close(model(x, y), expected)
        # A different token where nothing is scored changes nothing: padding and prompts are not learnt.
        changed = x.clone()
        changed[:, -3:] = 7
        torch.testing.assert_close(model(changed, y), expected)


def test_truncated_and_replyless_conversations_are_counted_and_said(tok, caplog):
    tokenizer, _ = tok
    long_reply = {"role": "assistant", "content": " ".join(["water is worth a look"] * 30)}
    late_reply = [{"role": "user", "content": " ".join(["tell me about the moon"] * 30)}, long_reply]
    conversations = [conversation(1), [conversation(1)[0], long_reply], late_reply, [{"role": "user", "content": "hi"}]]
    chats = build_chat_set(conversations, tokenizer, seq_len=40, seed=0, val_tokens=0)
    report = chats.report
    assert report["conversations"] == 4 and report["held_out"] == 0
    assert report["truncated"] == 2 and report["truncated_tokens"] > 0 and report["longest"] > 41
    assert report["no_reply"] == 2  # the late reply starts after the cut; the last has no reply at all
    assert len(chats.train) == 2 and max(len(chats.train.row(i)[0]) for i in range(2)) == 41
    with caplog.at_level(logging.INFO, logger="edulm"):
        say_what_was_cut(report)
    assert caplog.records[-1].levelname == "WARNING"
    assert "2 truncated to 41 tokens" in caplog.text and "2 left out with no assistant token" in caplog.text


def _config(tmp_path, tok_dir, **data):
    path = tmp_path / "chats.jsonl"
    if not path.exists():
        path.write_text("".join(json.dumps({"messages": conversation(i)}) + "\n" for i in range(200)))
    return config_from_dict({
        "run": {"out_dir": str(tmp_path / "run"), "seed": 5},
        "model": {"vocab_size": 400, "n_layers": 1, "d_model": 32, "d_ff": 64, "n_heads": 2, "n_kv_heads": 1,
                  "max_seq_len": 64},
        "tokenizer": {"name": tok_dir},
        "data": {"source": str(path), **data},
        "train": {"objective": "sft", "seq_len": 64, "micro_batch_size": 3, "grad_accum_steps": 1, "device": "cpu"},
    })


def test_held_out_split_is_whole_conversations_and_deterministic(tmp_path, tok, caplog):
    _, tok_dir = tok
    with caplog.at_level(logging.INFO, logger="edulm"):
        chat_loader.make_chat_loader(_config(tmp_path, tok_dir, val_tokens=300), micro_batch_size=3)
    chats = chat_set(_config(tmp_path, tok_dir, val_tokens=300))
    said = {r.getMessage(): r.levelname for r in caplog.records}
    assert chats.report["truncated"] > 0  # the three-turn conversations are longer than 65 tokens
    line = f"chat data: 200 conversations, {chats.report['held_out']} held out; {chats.report['truncated']} truncated to 65 tokens"
    assert [level for m, level in said.items() if m.startswith(line)] == ["WARNING"]
    assert said["train.objective sft on a freshly initialised model: set model.init_from to fine-tune a pretrained one"] == "WARNING"
    assert 0 < chats.report["held_out"] == len(chats.val) < 40 and len(chats.train) + len(chats.val) == 200
    train_rows = {tuple(chats.train.row(i)[0]) for i in range(len(chats.train))}
    assert not any(tuple(chats.val.row(i)[0]) in train_rows for i in range(len(chats.val)))
    again = build_chat_set([conversation(i) for i in range(200)], tok[0], seq_len=64, seed=5, val_tokens=300)
    assert again.val.ids.tolist() == chats.val.ids.tolist()
    other_seed = build_chat_set([conversation(i) for i in range(200)], tok[0], seq_len=64, seed=6, val_tokens=300)
    assert other_seed.val.ids.tolist() != chats.val.ids.tolist()
    batches = chat_val_batches(_config(tmp_path, tok_dir, val_tokens=300), batch_size=4)
    assert sum(int((y != IGNORE_INDEX).sum()) for _, y in batches) == int(chats.val.trained.sum())
    capped = chat_val_batches(_config(tmp_path, tok_dir, val_tokens=300), batch_size=4, max_tokens=20)
    assert 20 <= sum(int((y != IGNORE_INDEX).sum()) for _, y in capped) < int(chats.val.trained.sum())


def _loader(chats, **kw):
    args = dict(seq_len=64, batch_size=3, seed=5)
    args.update(kw)
    return ChatLoader(chats.train, report=chats.report, **args)


def test_epochs_visit_every_conversation_once_in_a_seeded_order(tmp_path, tok):
    chats = chat_set(_config(tmp_path, tok[1], val_tokens=0))
    loader = _loader(chats)
    first, second = loader.row_ids(0), loader.row_ids(1)
    assert sorted(first.tolist()) == sorted(second.tolist()) == list(range(200))
    assert first.tolist() != second.tolist()
    assert _loader(chats).row_ids(0).tolist() == first.tolist()
    assert _loader(chats, seed=6).row_ids(0).tolist() != first.tolist()
    # Two ranks split the epoch between them.
    r0, r1 = _loader(chats, rank=0, world_size=2).row_ids(0), _loader(chats, rank=1, world_size=2).row_ids(0)
    assert not set(r0.tolist()) & set(r1.tolist()) and len(r0) + len(r1) == 200


def _take(loader, n):
    return [next(loader) for _ in range(n)]


@pytest.mark.parametrize("prefetch", [False, True])
def test_resume_mid_epoch_and_across_epochs_is_exact(tmp_path, tok, prefetch):
    chats = chat_set(_config(tmp_path, tok[1], val_tokens=0))
    wrap = (lambda inner: PrefetchingLoader(inner, 2)) if prefetch else (lambda inner: inner)
    straight = wrap(_loader(chats))
    expected = _take(straight, 140)  # 420 rows: past the end of two epochs of 200
    interrupted = wrap(_loader(chats))
    _take(interrupted, 50)
    state = json.loads(json.dumps(interrupted.state_dict()))  # as a checkpoint stores it
    assert state["epoch"] == 0 and state["position"] == 150
    resumed = wrap(_loader(chats))
    resumed.load_state_dict(state)
    got = _take(resumed, 90)
    for (x, y), (ex, ey) in zip(got, expected[50:]):
        assert torch.equal(x, ex) and torch.equal(y, ey)
    assert resumed.state_dict()["trained_tokens"] == straight.state_dict()["trained_tokens"]
    assert resumed.state_dict()["epoch"] == 2
    for loader in (straight, interrupted, resumed):
        loader.close()


def test_counts_are_global_and_equal_on_every_rank(tmp_path, tok):
    chats = chat_set(_config(tmp_path, tok[1], val_tokens=0))
    ranks = [_loader(chats, rank=r, world_size=2) for r in range(2)]
    batches = [_take(loader, 10) for loader in ranks]
    states = [loader.state_dict() for loader in ranks]
    scored = sum(int((y != IGNORE_INDEX).sum()) for rank in batches for _, y in rank)
    assert states[0]["trained_tokens"] == states[1]["trained_tokens"] == scored
    assert states[0]["rows_seen"] == 60


def test_a_state_of_other_data_is_refused(tmp_path, tok):
    chats = chat_set(_config(tmp_path, tok[1], val_tokens=0))
    state = _loader(chats).state_dict()
    with pytest.raises(UsageError, match=r"does not fit these conversations \(seq_len: checkpoint 64, now 32\)"):
        _loader(chats, seq_len=32).load_state_dict(state)
    with pytest.raises(UsageError, match="not from fine-tuning rows"):
        _loader(chats).load_state_dict({**state, "kind": "shards"})
