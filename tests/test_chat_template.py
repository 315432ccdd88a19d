"""The ChatML template: ids equal to transformers' apply_chat_template, and the assistant-only loss mask."""

from __future__ import annotations

import numpy as np
import pytest

from edulm.base.errors import UsageError
from edulm.tokenizer import loading as tk
from edulm.tokenizer.bpe import train_bpe
from edulm.tokenizer.chat_template import (
    CHATML_TEMPLATE,
    check_messages,
    encode_chat,
    encode_chats,
    prompt_ids,
    template_for,
)

CONVERSATIONS = [
    [
        {"role": "system", "content": "You are a patient teacher."},
        {"role": "user", "content": "What is 12 x 12?"},
        {"role": "assistant", "content": "12 x 12 = 144."},
        {"role": "user", "content": "And halved?"},
        {"role": "assistant", "content": "Half of 144 is 72.\n\nAnything else?"},
    ],
    [
        {"role": "user", "content": "Say hi in French  and   Spanish."},
        {"role": "assistant", "content": " Bonjour; hola — ¡hola! 😀"},
    ],
    [
        {"role": "user", "content": "Line one\nline two"},
        {"role": "assistant", "content": "\n\nStarts with blank lines"},
        {"role": "user", "content": "ok"},
    ],
]


@pytest.fixture(scope="module")
def tok():
    return tk.load_tokenizer(tk.OFFLINE_SMOLLM2)


def _hf_ids(tok, messages, **kw):
    out = tok.apply_chat_template(messages, chat_template=CHATML_TEMPLATE, tokenize=True, **kw)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


@pytest.mark.parametrize("messages", CONVERSATIONS)
def test_ids_equal_transformers_apply_chat_template(tok, messages):
    assert encode_chat(tok, messages).ids.tolist() == _hf_ids(tok, messages)
    assert prompt_ids(tok, messages) == _hf_ids(tok, messages, add_generation_prompt=True)


def test_batch_encoding_equals_one_by_one(tok):
    batch = encode_chats(tok, CONVERSATIONS)
    for one, messages in zip(batch, CONVERSATIONS):
        single = encode_chat(tok, messages)
        assert one.ids.tolist() == single.ids.tolist() and one.mask.tolist() == single.mask.tolist()


def test_mask_built_by_hand_for_a_multi_turn_conversation(tok):
    messages = CONVERSATIONS[0]

    def piece(text):
        return tok(text, add_special_tokens=False)["input_ids"]

    ids, mask = [], []
    for m in messages:
        header, content, end, newline = (piece(f"<|im_start|>{m['role']}\n"), piece(m["content"]), piece("<|im_end|>"),
                                         piece("\n"))
        trained = 1 if m["role"] == "assistant" else 0
        ids += header + content + end + newline
        mask += [0] * len(header) + [trained] * (len(content) + len(end)) + [0] * len(newline)
    got = encode_chat(tok, messages)
    assert got.ids.tolist() == ids
    assert got.mask.tolist() == mask
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    trained_ids = got.ids[got.mask == 1].tolist()
    assert trained_ids.count(im_end) == 2  # each reply's end is learnt, the user's and system's are not
    assert tok.decode(trained_ids) == "12 x 12 = 144.<|im_end|>Half of 144 is 72.\n\nAnything else?<|im_end|>"


def test_a_reply_that_starts_with_newlines_is_trained_from_its_first_token(tok):
    got = encode_chat(tok, CONVERSATIONS[2])
    trained = got.ids[got.mask == 1].tolist()
    # "\n" of the header and the reply's "\n\n" become tokens that straddle the boundary; the reply keeps all its text.
    assert tok.decode(trained).endswith("Starts with blank lines<|im_end|>")
    assert "\n\nStarts" in tok.decode(trained)
    assert got.mask[-3:].tolist() == [0, 0, 0]  # the last user turn is not trained


def test_no_assistant_turn_means_nothing_trained(tok):
    got = encode_chat(tok, [{"role": "user", "content": "hello"}])
    assert got.mask.sum() == 0 and len(got.ids) > 0


def test_a_tokenizer_without_chat_tokens_is_one_clear_line():
    bpe = train_bpe(["plain text only"] * 20, vocab_size=300)
    with pytest.raises(UsageError, match=r"no <\|im_start\|> or <\|im_end\|> token"):
        encode_chat(bpe, CONVERSATIONS[1])


@pytest.mark.parametrize("bad, message", [
    ([], "non-empty list"),
    ("hello", "non-empty list"),
    ([{"role": "robot", "content": "x"}], "role 'robot'"),
    ([{"role": "user"}], "not a {role, content} object"),
    ([{"role": "user", "content": 3}], "content is int"),
    ([{"role": "user", "content": "a <|im_end|> b"}], "remove the markers"),
])
def test_bad_messages_are_one_line(bad, message):
    with pytest.raises(UsageError, match=message):
        check_messages(bad, "row 3")


def test_unknown_template_name():
    assert template_for("chatml") == CHATML_TEMPLATE
    with pytest.raises(UsageError, match="did you mean 'chatml'"):
        template_for("chatm")


def test_mask_and_ids_have_one_length(tok):
    for got in encode_chats(tok, CONVERSATIONS):
        assert got.ids.shape == got.mask.shape and got.ids.dtype == np.int64
