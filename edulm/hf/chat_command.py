"""``edulm chat MODEL``: a multi-turn conversation in the terminal, rendered with the model's chat template.

Each line read is a user message; the model's reply is generated with :func:`edulm.model.generate.generate`
(KV cache within a reply; each turn runs the whole conversation through the model once, a single forward
pass) and streamed to stdout until it writes its end of turn. ``/reset`` starts a new conversation (the
system prompt stays), ``/quit`` or the end of input ends the command. The template is the model's own
(``chat_template`` in its tokenizer files, as edulm's fine-tuning exports carry) or ChatML when it has none.
When a conversation outgrows the model's context, its oldest exchanges are dropped (said on stderr); the
system prompt is always kept.
"""

from __future__ import annotations

import logging
import sys
from typing import Callable, TextIO

import torch

from edulm.base.errors import UsageError
from edulm.model.generate import check_sampling, generate
from edulm.tokenizer.chat_template import CHATML_TEMPLATE, TURN_END, chat_token_ids

log = logging.getLogger(__name__)

RESET, QUIT = "/reset", "/quit"
"""The two commands a line may be."""


def chat_prompt_ids(tokenizer, messages: list[dict[str, str]]) -> list[int]:
    """Ids of ``messages`` and the generation prompt, rendered with the tokenizer's chat template (ChatML if none)."""
    template = tokenizer.chat_template if isinstance(getattr(tokenizer, "chat_template", None), str) else None
    if template is None:
        chat_token_ids(tokenizer)  # ChatML needs its two markers: one line if the tokenizer lacks them
        template = CHATML_TEMPLATE
    out = tokenizer.apply_chat_template(messages, chat_template=template, add_generation_prompt=True, tokenize=True)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


def end_of_turn_id(tokenizer, hf_config: dict | None) -> int:
    """The token that ends a reply: ``<|im_end|>`` when the vocabulary has it, else the model's eos."""
    vocab = tokenizer.get_vocab()
    if TURN_END in vocab:
        return int(vocab[TURN_END])
    eos = (hf_config or {}).get("eos_token_id")
    eos = eos[0] if isinstance(eos, list) and eos else eos
    if isinstance(eos, int):
        return eos
    if tokenizer.eos_token_id is None:
        raise UsageError("the model's tokenizer names no end-of-turn or eos token, so a reply could not end")
    return int(tokenizer.eos_token_id)


class ReplyPrinter:
    """Streams a reply's text to ``out`` as tokens arrive, holding back a character split across tokens."""

    def __init__(self, tokenizer, end_id: int, out: TextIO) -> None:
        self.tokenizer, self.end_id, self.out = tokenizer, end_id, out
        self.tokens: list[int] = []
        self.shown = ""

    def __call__(self, token: torch.Tensor) -> None:
        if int(token[0]) == self.end_id:
            return
        self.tokens.append(int(token[0]))
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        if not text.endswith("\ufffd"):
            self.out.write(text[len(self.shown):])
            self.out.flush()
            self.shown = text

    def finish(self) -> str:
        """Write what is left and a newline; return the whole reply."""
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        self.out.write(text[len(self.shown):] + "\n")
        self.out.flush()
        return text


def fit_context(messages: list[dict[str, str]], encode: Callable[[list[dict[str, str]]], list[int]], context: int) -> list[int] | None:
    """The prompt ids of ``messages`` (changed in place: oldest exchanges dropped until they fit ``context`` with
    room for a reply); None when the last message alone does not fit."""
    system = 1 if messages and messages[0]["role"] == "system" else 0
    dropped = 0
    while True:
        ids = encode(messages)
        if len(ids) < context:
            if dropped:
                log.warning("dropped the %d oldest message(s) to fit the model's context of %d tokens", dropped, context)
            return ids
        if len(messages) - system <= 1:
            return None
        del messages[system]
        dropped += 1
        while len(messages) > system + 1 and messages[system]["role"] != "user":
            del messages[system]  # a conversation restarts with a user message
            dropped += 1


def chat_command(
    model_path: str,
    system: str = "",
    max_new_tokens: int = 256,
    temperature: float = 0.8,
    top_p: float = 0.95,
    top_k: int = 0,
    seed: int = 0,
    device: str = "auto",
    lines: TextIO | None = None,
    out: TextIO | None = None,
) -> list[str]:
    """``edulm chat``: read user messages line by line from ``lines`` (stdin), stream each reply to ``out``
    (stdout); returns the replies."""
    if max_new_tokens < 1:
        raise UsageError(f"--max-new-tokens must be 1 or more, got {max_new_tokens}")
    check_sampling(temperature, top_p, top_k)  # before the (slow) model load
    lines = lines or sys.stdin
    out = out or sys.stdout

    from edulm.base.devices import resolve_device
    from edulm.hf.source import load_model, load_model_tokenizer

    torch_device = resolve_device(device)
    model, resolved = load_model(model_path, device=torch_device)
    tokenizer = load_model_tokenizer(resolved)
    start = [{"role": "system", "content": system}] if system else []
    messages = list(start)
    chat_prompt_ids(tokenizer, messages or [{"role": "user", "content": ""}])  # a template that cannot work fails now
    end_id = end_of_turn_id(tokenizer, resolved.hf_config)
    context = model.config.max_seq_len
    generator = torch.Generator(device=torch_device).manual_seed(seed)
    interactive = lines.isatty()
    if interactive:
        print(f"chatting with {model_path} ({RESET} starts over, {QUIT} or Ctrl-D ends)", file=sys.stderr)

    replies: list[str] = []
    while True:
        if interactive:
            out.write("> ")
            out.flush()
        line = lines.readline()
        if not line or line.strip() == QUIT:
            return replies
        text = line.rstrip("\n")
        if text.strip() == RESET:
            messages = list(start)
            print("(new conversation)", file=sys.stderr, flush=True)  # stdout holds the replies alone
            continue
        if not text.strip():
            continue
        messages.append({"role": "user", "content": text})
        ids = fit_context(messages, lambda m: chat_prompt_ids(tokenizer, m), context)
        if ids is None:
            messages.pop()
            log.warning("that message is longer than the model's context of %d tokens; send a shorter one", context)
            continue
        printer = ReplyPrinter(tokenizer, end_id, out)
        generate(model, torch.tensor([ids], dtype=torch.long, device=torch_device), max_new_tokens,
                 temperature=temperature, top_p=top_p, top_k=top_k, eos_id=end_id, generator=generator, on_token=printer)
        reply = printer.finish()
        messages.append({"role": "assistant", "content": reply})
        replies.append(reply)
