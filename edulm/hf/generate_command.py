"""``edulm generate MODEL PROMPT``: load any MODEL (a Hugging Face folder, a run, a checkpoint) and stream a
sampled continuation of the prompt to stdout, with :func:`edulm.model.generate.generate`'s KV cache."""

from __future__ import annotations

import sys

import torch

from edulm.base.errors import UsageError
from edulm.model.generate import check_sampling, generate


def generate_command(
    model_path: str,
    prompt: str,
    max_new_tokens: int = 64,
    temperature: float = 0.8,
    top_p: float = 0.95,
    top_k: int = 0,
    seed: int = 0,
    device: str = "auto",
    chat: bool = False,
) -> str:
    """``edulm generate``: print the prompt and stream its continuation to stdout; returns the whole text.

    ``chat``: the prompt is one user message, rendered with the model's chat template
    (:mod:`edulm.hf.chat_command`); only the reply is printed and returned, ending at the end of its turn."""
    if max_new_tokens < 0:
        raise UsageError(f"--max-new-tokens must be 0 or more, got {max_new_tokens}")
    check_sampling(temperature, top_p, top_k)  # before the (slow) model load

    from edulm.base.devices import resolve_device
    from edulm.hf.source import load_model, load_model_tokenizer

    torch_device = resolve_device(device)
    model, resolved = load_model(model_path, device=torch_device)
    tokenizer = load_model_tokenizer(resolved)
    from edulm.tokenizer.loading import document_separator_id

    separator = document_separator_id(tokenizer)
    # A Hugging Face model states its own end token (an instruct model's end of turn, say);
    # edulm models end a text with the document separator.
    config_eos = (resolved.hf_config or {}).get("eos_token_id")
    eos = config_eos if isinstance(config_eos, int) else separator
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    # Every training document follows a separator, so an empty prompt starts from one: "a new document".
    ids = ids or [separator]
    if chat:
        from edulm.hf.chat_command import chat_prompt_ids, end_of_turn_id

        ids, eos = chat_prompt_ids(tokenizer, [{"role": "user", "content": prompt}]), end_of_turn_id(tokenizer, resolved.hf_config)
        prompt = ""  # the reply alone is printed
    context = model.config.max_seq_len
    if len(ids) >= context:
        raise UsageError(f"the prompt is {len(ids)} tokens long; the model's context is {context} tokens, shorten it")
    input_ids = torch.tensor([ids], dtype=torch.long, device=torch_device)
    generator = torch.Generator(device=torch_device).manual_seed(seed)

    new_tokens: list[int] = []
    shown = ""
    print(prompt, end="", flush=True)

    def stream(token: torch.Tensor) -> None:
        nonlocal shown
        if int(token[0]) == eos:
            return
        new_tokens.append(int(token[0]))
        text = tokenizer.decode(new_tokens, skip_special_tokens=True)
        # A multi-byte character may span tokens; hold back text that is not complete yet.
        if not text.endswith("\ufffd"):
            sys.stdout.write(text[len(shown):])
            sys.stdout.flush()
            shown = text

    generate(
        model, input_ids, max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
        eos_id=eos, generator=generator, on_token=stream,
    )
    text = tokenizer.decode(new_tokens, skip_special_tokens=True)
    sys.stdout.write(text[len(shown):] + "\n")
    sys.stdout.flush()
    return prompt + text
