"""Conversations as tokens: the ChatML template, and the ids and assistant-only loss mask of a conversation.

A conversation is a list of messages ``{"role": "system" | "user" | "assistant", "content": str}``. ChatML
writes each one as ``<|im_start|>ROLE\\nCONTENT<|im_end|>\\n``; a prompt for a reply ends with the header
``<|im_start|>assistant\\n`` (the *generation prompt*). SmolLM2's vocabulary has both markers as special
tokens (ids 1 and 2), so fine-tuning and chatting need no new embedding rows.

:data:`CHATML_TEMPLATE` is the same format as a Jinja template, the string transformers'
``apply_chat_template`` renders and an export writes into ``tokenizer_config.json``. :func:`encode_chat`
renders it in Python, keeping where every assistant reply lies, and tokenizes the whole text in one call,
so its ids are exactly ``apply_chat_template(messages, chat_template=CHATML_TEMPLATE, tokenize=True)``'s
(tests compare them). Its mask is 1 on the tokens a fine-tuned model must learn to write: each assistant
reply and the ``<|im_end|>`` that ends it; 0 on system and user turns, on every header (the reply's
``<|im_start|>assistant\\n`` included: the prompt supplies it) and on the newline after each ``<|im_end|>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from edulm.base.errors import UsageError

TURN_START = "<|im_start|>"
"""Opens a message (followed by its role and a newline)."""
TURN_END = "<|im_end|>"
"""Ends a message; the token a chat model's reply stops at."""
ROLES = ("system", "user", "assistant")
"""The roles a message may have."""

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
"""ChatML as a Jinja template for transformers' ``apply_chat_template`` (no default system prompt)."""

CHAT_TEMPLATES = {"chatml": CHATML_TEMPLATE}
"""Chat template names (``data.chat_template``, ``edulm export --chat-template``) -> Jinja template."""


@dataclass(frozen=True)
class ChatTokens:
    """A conversation's token ids and which of them a fine-tuned model is trained to write."""

    ids: np.ndarray
    """Token ids (int64), as ``apply_chat_template`` gives them."""
    mask: np.ndarray
    """1 where the token belongs to an assistant reply or ends one (``<|im_end|>``), else 0 (int8)."""


def template_for(name: str) -> str:
    """The Jinja template of a chat template name (one line naming the known ones when unknown)."""
    if name not in CHAT_TEMPLATES:
        from edulm.base.suggest import did_you_mean

        raise UsageError(f"unknown chat template '{name}'{did_you_mean(name, list(CHAT_TEMPLATES))}; "
                         f"known: {', '.join(CHAT_TEMPLATES)}")
    return CHAT_TEMPLATES[name]


def chat_token_ids(tok) -> tuple[int, int]:
    """``(id of <|im_start|>, id of <|im_end|>)``; a tokenizer without both as single tokens is one clear line."""
    vocab = tok.get_vocab()
    missing = [t for t in (TURN_START, TURN_END) if t not in vocab]
    if missing:
        raise UsageError(f"the tokenizer has no {' or '.join(missing)} token, which the ChatML chat template needs; "
                         "use a tokenizer with them (SmolLM2's has both: tokenizer.name smollm2-offline)")
    return int(vocab[TURN_START]), int(vocab[TURN_END])


def check_messages(messages: Any, where: str = "conversation") -> list[dict[str, str]]:
    """``messages`` as a list of ``{role, content}`` dicts, or one :class:`UsageError` naming ``where`` and what is wrong.

    Content may not hold the turn markers as text: they would be read as the special tokens and split the
    message in two."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise UsageError(f"{where}: messages must be a non-empty list of {{role, content}} objects, got {type(messages).__name__}")
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise UsageError(f"{where}: message {i} is not a {{role, content}} object")
        role, content = message["role"], message["content"]
        if role not in ROLES:
            raise UsageError(f"{where}: message {i} has role {role!r}; roles are {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise UsageError(f"{where}: message {i} content is {type(content).__name__}, not text")
        if TURN_START in content or TURN_END in content:
            raise UsageError(f"{where}: message {i} holds {TURN_START} or {TURN_END} in its text; remove the markers")
        out.append({"role": role, "content": content})
    return out


def render(messages: Sequence[dict[str, str]], add_generation_prompt: bool = False) -> tuple[str, list[tuple[int, int]]]:
    """The ChatML text of ``messages`` (what :data:`CHATML_TEMPLATE` renders) and the character spans
    ``[start, end)`` of each assistant reply with its ``<|im_end|>``."""
    parts: list[str] = []
    spans: list[tuple[int, int]] = []
    length = 0
    for message in messages:
        header = f"{TURN_START}{message['role']}\n"
        body = f"{message['content']}{TURN_END}"
        if message["role"] == "assistant":
            spans.append((length + len(header), length + len(header) + len(body)))
        piece = f"{header}{body}\n"
        parts.append(piece)
        length += len(piece)
    if add_generation_prompt:
        parts.append(f"{TURN_START}assistant\n")
    return "".join(parts), spans


def _mask(offsets: np.ndarray, spans: list[tuple[int, int]]) -> np.ndarray:
    """1 for each token whose characters ``offsets[i] = [start, end)`` overlap an assistant span.

    Overlap, not containment: byte-level BPE joins a reply's leading newlines to the header's newline
    (``"\\n\\n"`` as one token), and that token is the first of the reply the model has to write."""
    if not spans or len(offsets) == 0:
        return np.zeros(len(offsets), dtype=np.int8)
    starts = np.array([s for s, _ in spans])
    ends = np.array([e for _, e in spans])
    nearest = np.searchsorted(ends, offsets[:, 0], side="right")  # first span ending after the token starts
    inside = nearest < len(spans)
    overlaps = inside & (starts[np.minimum(nearest, len(spans) - 1)] < offsets[:, 1]) & (offsets[:, 1] > offsets[:, 0])
    return overlaps.astype(np.int8)


def encode_chats(tok, conversations: Sequence[Sequence[dict[str, str]]]) -> list[ChatTokens]:
    """:class:`ChatTokens` of checked conversations (:func:`check_messages`), tokenized in one batch call."""
    chat_token_ids(tok)
    rendered = [render(messages) for messages in conversations]
    if not rendered:
        return []
    encoded = tok([text for text, _ in rendered], add_special_tokens=False, return_offsets_mapping=True)
    out = []
    for (_, spans), ids, offsets in zip(rendered, encoded["input_ids"], encoded["offset_mapping"]):
        offsets = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
        out.append(ChatTokens(np.asarray(ids, dtype=np.int64), _mask(offsets, spans)))
    return out


def encode_chat(tok, messages: Sequence[dict[str, str]]) -> ChatTokens:
    """Token ids and assistant-only loss mask of one conversation (see the module docstring)."""
    return encode_chats(tok, [check_messages(messages)])[0]


def prompt_ids(tok, messages: Sequence[dict[str, str]]) -> list[int]:
    """The ids of ``messages`` followed by the generation prompt ``<|im_start|>assistant\\n``: what a model
    continues with its reply."""
    chat_token_ids(tok)
    text, _ = render(check_messages(messages), add_generation_prompt=True)
    return list(tok(text, add_special_tokens=False)["input_ids"])


def as_chat_tokenizer(tok, name: str):
    """``tok`` set up for chat with template ``name``: its ``chat_template``, and ``<|im_end|>`` as its eos
    token (what ends a reply, so pipelines and ``generate`` stop there); returns it and the end id."""
    template = template_for(name)
    _, end = chat_token_ids(tok)
    tok.chat_template = template
    tok.eos_token = TURN_END
    return tok, end
