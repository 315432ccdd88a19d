"""The ``edulm`` command line: parse arguments, then call one function per subcommand.

Heavy modules (torch, transformers, lm-eval) are imported inside the handlers so that ``--help`` and
argument errors answer at once. Exit codes: 0 success, 2 bad usage/config/input (one line on stderr,
no traceback unless ``--debug``), 1 any other failure, 130 interrupted. ``--quiet`` / ``--verbose``
(before or after the command) set what the console shows of the ``edulm`` logger (:mod:`edulm.base.logs`).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from typing import Callable, Sequence

from edulm.base.errors import DiskFullError, UsageError
from edulm.base.files import NOT_WRITABLE
from edulm.base.logs import console_logging, write_line


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad usage as a :class:`UsageError` (one line, exit 2) like every other error."""

    def __init__(self, *args, **kwargs) -> None:
        # No abbreviated options: `--resum auto` must not quietly mean `--resume auto`.
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message} (see '{self.prog} --help')")


# ---------------------------------------------------------------------------------------------
# Handlers: each imports what it needs and calls one function.
# ---------------------------------------------------------------------------------------------


def _info(args: argparse.Namespace) -> None:
    from edulm.train.info import describe

    print(describe(args.target, args.overrides, explain=args.explain))


def _tokenizer_train(args: argparse.Namespace) -> None:
    from edulm.tokenizer.loading import tokenizer_fingerprint
    from edulm.data.tokenizer_training import train_tokenizer

    tok = train_tokenizer(args.source, args.out, args.vocab_size, text_field=args.text_field, max_docs=args.max_docs)
    print(f"tokenizer: {len(tok):,} tokens, fingerprint {tokenizer_fingerprint(tok)} -> {args.out}")


def _prepare(args: argparse.Namespace) -> None:
    from edulm.config import load_config
    from edulm.data.prepare import prepare

    prepare(load_config(args.config, args.overrides))


def _train(args: argparse.Namespace) -> None:
    from edulm.config import load_config
    from edulm.train.trainer import train

    train(load_config(args.config, args.overrides), resume=args.resume, gpu_hourly_rate=args.gpu_hourly_rate,
          allow_schedule_change=args.allow_schedule_change)


def _export(args: argparse.Namespace) -> None:
    if args.format == "gguf" and args.chat_template:
        raise UsageError("--chat-template applies to --format hf; a GGUF file carries the chat template of its source")
    if args.format == "gguf":
        from edulm.hf.gguf_export import export_gguf

        out = export_gguf(args.src, args.out, dtype=args.dtype or "f32")
        print(f"exported GGUF file: {out} ({out.stat().st_size:,} bytes)")
        return
    from edulm.hf import export

    out = export(args.src, args.out, dtype=args.dtype or "float32", chat_template=args.chat_template)
    print(f"exported Hugging Face folder: {out}")


def _chat(args: argparse.Namespace) -> None:
    from edulm.hf.chat_command import chat_command

    chat_command(args.model, system=args.system, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                 top_p=args.top_p, top_k=args.top_k, seed=args.seed, device=args.device)


def _generate(args: argparse.Namespace) -> None:
    from edulm.hf.generate_command import generate_command

    generate_command(
        args.model,
        args.prompt,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        seed=args.seed,
        device=args.device,
        chat=args.chat,
    )


def _perplexity(args: argparse.Namespace) -> None:
    from edulm.evaluate.perplexity import perplexity_command

    perplexity_command(args.model, text=args.text, data=args.data, seq_len=args.seq_len, batch_size=args.batch_size,
                       max_tokens=args.max_tokens, device=args.device)


def _eval_settings(args: argparse.Namespace):
    from edulm.evaluate.harness import eval_settings

    return eval_settings(tasks=args.tasks, include_path=args.include_path, limit=args.limit,
                         batch_size=args.batch_size, device=args.device, dtype=args.dtype,
                         apply_chat_template=args.apply_chat_template)


def _eval(args: argparse.Namespace) -> None:
    from edulm.evaluate.harness import eval_command

    eval_command(args.model, args.out, _eval_settings(args))


def _baselines(args: argparse.Namespace) -> None:
    from edulm.evaluate.baselines import baselines_command

    baselines_command(args.out, args.models, _eval_settings(args))


def _compare(args: argparse.Namespace) -> None:
    if args.runs is not None:
        if args.candidate is not None or args.baselines_dir is not None:
            raise UsageError("edulm compare takes either --runs RUN_DIR RUN_DIR ... or CANDIDATE BASELINES_DIR, not both")
        ignored = [flag for flag, value in (("--budgets", args.budgets), ("--contamination", args.contamination),
                                            ("--bpb-text", args.bpb_text)) if value is not None]
        if ignored:
            raise UsageError(f"{', '.join(ignored)} compare(s) evaluated models, not training runs; leave it out with --runs")
        from edulm.evaluate.compare_runs import compare_runs_command

        compare_runs_command(args.runs, out=args.out)
        return
    if args.candidate is None or args.baselines_dir is None:
        raise UsageError("edulm compare needs CANDIDATE and BASELINES_DIR (a results JSON and the baselines folder), "
                         "or --runs RUN_DIR RUN_DIR ... to put training runs side by side")
    from edulm.evaluate.compare import compare_command

    compare_command(args.candidate, args.baselines_dir, out=args.out, budgets=args.budgets,
                    contamination=args.contamination, bpb_text=args.bpb_text, bpb_seq_len=args.bpb_seq_len,
                    device=args.device)


def _sample_text(args: argparse.Namespace) -> None:
    from edulm.release.sample_text import sample_text_command

    sample_text_command(args.out, data=args.data, source=args.source, docs=args.docs, seed=args.seed,
                        tokenizer=args.tokenizer, text_field=args.text_field, max_read=args.max_read)


def _contamination(args: argparse.Namespace) -> None:
    from edulm.release.contamination import contamination_command

    contamination_command(args.train, args.out, tasks=args.tasks, include_path=args.include_path,
                          benchmark_files=args.benchmark, n=args.ngram, examples=args.examples)


def _card(args: argparse.Namespace) -> None:
    from edulm.release.card import card_command

    card_command(args.run_dir, args.out, eval_path=args.eval, comparison=args.comparison,
                 contamination=args.contamination, name=args.model_name, license=args.license)


def _release(args: argparse.Namespace) -> None:
    from edulm.release.pipeline import ReleaseOptions, release

    options = ReleaseOptions(baselines_dir=args.baselines, models=args.models, sample_docs=args.docs, shards=args.shards,
                             ngram=args.ngram, budgets=args.budgets, bpb_text=args.bpb_text, name=args.model_name,
                             license=args.license, gguf=args.gguf)
    release(args.run_dir, _eval_settings(args), options)


# ---------------------------------------------------------------------------------------------
# Parser
# ---------------------------------------------------------------------------------------------


def _add_eval_options(p: argparse.ArgumentParser) -> None:
    """Options shared by `eval` and `baselines` (the lm-eval protocol)."""
    p.add_argument("--tasks", default=None, help="comma-separated lm-eval task names (default: the reference six)")
    p.add_argument("--include-path", default=None, help="folder of extra task YAMLs (for local, offline tasks)")
    p.add_argument("--limit", type=float, default=None, help="examples per task (an int) or fraction (<1); for quick checks only")
    p.add_argument("--batch-size", default=None, help="an integer or 'auto' (default: auto on CUDA, 8 on a CPU)")
    p.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda when available)")
    p.add_argument("--dtype", default=None, help="bfloat16, float16 or float32 (default: bfloat16 on CUDA, float32 on CPU)")
    p.add_argument("--apply-chat-template", action="store_true",
                   help="wrap each prompt in the model's chat template (lm-eval's apply_chat_template), for fine-tuned chat models")


def _add_global_flags(p: argparse.ArgumentParser, hidden: bool = True) -> None:
    """``--debug``, ``--quiet`` and ``--verbose``, taken before the command and after it
    (``edulm train CONFIG --quiet``); after the command they are hidden from its help and leave the
    value given before it alone unless given again."""
    def add(flag: str, text: str) -> None:
        if hidden:
            p.add_argument(flag, action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        else:
            p.add_argument(flag, action="store_true", help=text)

    add("--debug", "show tracebacks for every error")
    add("--quiet", "print warnings and errors only (a run's train.log stays complete)")
    add("--verbose", "also print debug lines")


def build_parser() -> argparse.ArgumentParser:
    """The full ``edulm`` argument parser."""
    parser = _Parser(prog="edulm", description="Pretrain, evaluate and publish small Llama-style language models.")
    _add_global_flags(parser, hidden=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def command(name: str, handler: Callable[[argparse.Namespace], None], help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(handler=handler)
        _add_global_flags(p)
        return p

    p = command("info", _info, "architecture, exact parameter count and FLOPs/token of a CONFIG or MODEL")
    p.add_argument("target", nargs="?", default=None, help="a YAML config, an HF folder, a run dir or a checkpoint dir")
    p.add_argument("overrides", nargs="*", default=[], help="section.key=value overrides (configs only)")
    p.add_argument("--explain", action="store_true", help="list every config key with its type, default and meaning")

    p = command("tokenizer", lambda a: a.tokenizer_parser.error("choose a tokenizer command, e.g. 'train'"), "tokenizer tools")
    p.set_defaults(tokenizer_parser=p)
    tsub = p.add_subparsers(dest="tokenizer_command", metavar="COMMAND", parser_class=_Parser)
    tp = tsub.add_parser("train", help="train a small byte-level BPE tokenizer (for fast CPU runs and tests)")
    tp.set_defaults(handler=_tokenizer_train)
    _add_global_flags(tp)
    tp.add_argument("--source", default="builtin:sample", help="text source, as data.source (default builtin:sample)")
    tp.add_argument("--text-field", default="text", help="text field of parquet/jsonl/hub records")
    tp.add_argument("--vocab-size", type=int, default=4096, help="vocabulary size (default 4096)")
    tp.add_argument("--max-docs", type=int, default=0, help="read at most this many documents (0: all)")
    tp.add_argument("--out", required=True, help="output folder (tokenizer.json + tokenizer_config.json)")

    p = command("prepare", _prepare, "tokenize data.source into uint16 token shards in data.shards_dir")
    p.add_argument("config", help="YAML config")
    p.add_argument("overrides", nargs="*", default=[], help="section.key=value overrides")

    p = command("train", _train, "train a model from a config (resumable)")
    p.add_argument("config", help="YAML config")
    p.add_argument("overrides", nargs="*", default=[], help="section.key=value overrides")
    p.add_argument("--resume", default=None, help="'auto' (latest good checkpoint of the run dir) or a checkpoint path")
    p.add_argument("--gpu-hourly-rate", type=float, default=None, help="price of one GPU-hour, for the cost estimate in the summary")
    p.add_argument("--allow-schedule-change", action="store_true",
                   help="resume even when the new schedule settings move the learning rate away from the checkpoint's "
                        "(e.g. a longer cosine run); without it such a resume is refused")

    p = command("export", _export, "write a Hugging Face folder (safetensors, config.json, tokenizer), or one GGUF file")
    p.add_argument("src", help="a run dir, a checkpoint dir or a Hugging Face Llama folder")
    p.add_argument("--out", required=True, help="output folder (hf), or FILE.gguf (gguf)")
    p.add_argument("--format", default="hf", choices=["hf", "gguf"],
                   help="hf: a Hugging Face folder (default); gguf: one file for llama.cpp, Ollama and LM Studio")
    p.add_argument("--dtype", default=None,
                   help="weight dtype: float32 (default), bfloat16 or float16 for hf; f32 (default), f16, bf16 or q8_0 for gguf")
    p.add_argument("--chat-template", default=None, metavar="NAME",
                   help="write this chat template (chatml) into the tokenizer, with <|im_end|> as eos (a fine-tuning "
                        "run's exports carry its data.chat_template without it)")

    p = command("generate", _generate, "generate text from a prompt (KV cache; temperature 0 is greedy)")
    p.add_argument("model", help="an HF folder, a run dir or a checkpoint dir")
    p.add_argument("prompt", help="prompt text")
    p.add_argument("--max-new-tokens", type=int, default=64,
                   help="tokens to generate at most (default 64; fewer at an end of text or when the model's context is full)")
    p.add_argument("--temperature", type=float, default=0.8, help="0 means greedy (default 0.8)")
    p.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling mass (default 0.95; 1 disables)")
    p.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (default 0: off)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling, for a repeatable output (default 0)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--chat", action="store_true",
                   help="the prompt is one user message in the model's chat template; print the reply only")

    p = command("chat", _chat, "talk to a model in the terminal: multi-turn, with its chat template (/reset, /quit)")
    p.add_argument("model", help="an HF folder, a run dir or a checkpoint dir (of a fine-tuned model)")
    p.add_argument("--system", default="", help="system prompt that opens every conversation (default: none)")
    p.add_argument("--max-new-tokens", type=int, default=256, help="tokens per reply at most (default 256)")
    p.add_argument("--temperature", type=float, default=0.8, help="0 means greedy (default 0.8)")
    p.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling mass (default 0.95; 1 disables)")
    p.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (default 0: off)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling, for a repeatable conversation (default 0)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")

    p = command("perplexity", _perplexity, "loss, perplexity and bits per byte on a text file or held-out shards")
    p.add_argument("model", help="an HF folder, a run dir or a checkpoint dir")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", default=None, help="a UTF-8 text file, scored as one document")
    src.add_argument("--data", default=None, help="a prepared shards dir (its held-out validation split)")
    p.add_argument("--seq-len", type=int, default=None,
                   help="window length (default: a run's train.seq_len, else the model's context)")
    p.add_argument("--batch-size", type=int, default=4, help="windows scored per forward pass (default 4)")
    p.add_argument("--max-tokens", type=int, default=None,
                   help="score at most this many tokens (0: all; default: a run's train.eval_tokens with --data, else all)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")

    p = command("eval", _eval, "zero-shot lm-evaluation-harness with the reference protocol")
    p.add_argument("model", help="an HF folder, a run dir or a checkpoint dir")
    p.add_argument("--out", required=True, help="results JSON file (samples are written beside it)")
    _add_eval_options(p)

    p = command("baselines", _baselines, "evaluate the public baselines with the same protocol")
    p.add_argument("--out", required=True, help="folder of results files, one per model")
    p.add_argument("--models", default=None,
                   help="comma-separated hub ids or folders, each optionally NAME=PATH (default: the seven reference baselines)")
    _add_eval_options(p)

    p = command("compare", _compare, "score table, win rates, error bars and contamination-aware scores against "
                                      "baselines; or training runs' loss and benchmark curves side by side (--runs)")
    p.add_argument("candidate", nargs="?", help="the candidate's results JSON (from edulm eval)")
    p.add_argument("baselines_dir", nargs="?", help="folder of baseline results (from edulm baselines)")
    p.add_argument("--runs", nargs="+", metavar="RUN_DIR", default=None,
                   help="instead: two or more training run dirs, whose held-out loss and train.downstream curves are "
                        "drawn side by side with their final scores compared (runs_comparison.md, .json and .png)")
    p.add_argument("--out", default=None,
                   help="output folder for comparison.md and comparison.json (default: X/comparison for a candidate at "
                        "X/eval/results.json); with --runs, for runs_comparison.* (default: ./runs_comparison)")
    p.add_argument("--budgets", default=None, help="YAML/JSON mapping of model -> training tokens, extending the built-in table")
    p.add_argument("--contamination", default=None,
                   help="contamination.json whose flagged documents are left out of the clean-subset scores "
                        "(default: X/contamination/contamination.json when present)")
    p.add_argument("--bpb-text", default=None, help="a UTF-8 text file every model is scored on in bits per byte")
    p.add_argument("--bpb-seq-len", type=int, default=1024, help="window for --bpb-text, capped at each model's context (default 1024)")
    p.add_argument("--device", default="auto", help="device for --bpb-text: auto, cpu, cuda or cuda:N")

    p = command("sample-text", _sample_text, "draw a reproducible sample of training text")
    p.add_argument("--data", default=None, help="a prepared shards dir to sample from")
    p.add_argument("--source", default=None, help="a text source (as data.source) to sample from")
    p.add_argument("--tokenizer", default=None, help="tokenizer to decode shards (default: the one recorded in the manifest)")
    p.add_argument("--text-field", default="text", help="with --source: text field of parquet/jsonl/hub records (default text)")
    p.add_argument("--docs", type=int, default=1000, help="documents to draw (default 1000)")
    p.add_argument("--max-read", type=int, default=0, help="with --source: read only its first N documents (0: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the draw: the same seed draws the same documents (default 0)")
    p.add_argument("--out", required=True, help="output JSONL file, one {'text': ...} per line")

    p = command("contamination", _contamination, "n-gram overlap between benchmark documents and training text")
    p.add_argument("--train", required=True, help="training text: a sample JSONL/txt file, a shards dir or a source")
    p.add_argument("--tasks", default=None, help="comma-separated lm-eval task names (default: the reference six)")
    p.add_argument("--include-path", default=None, help="folder of extra task YAMLs (local tasks)")
    p.add_argument("--benchmark", action="append", default=None, help="local benchmark file(s) (jsonl/txt) instead of lm-eval tasks; NAME=PATH or PATH")
    p.add_argument("--ngram", type=int, default=13, help="n-gram length (default 13; shorter documents of 8+ words are matched whole)")
    p.add_argument("--examples", type=int, default=5, help="examples to show per task")
    p.add_argument("--out", required=True, help="output folder for contamination.json and contamination.md")

    p = command("card", _card, "write the model card (README.md with Hugging Face metadata)")
    p.add_argument("run_dir", help="the run directory")
    p.add_argument("--out", required=True, help="output file, e.g. final/README.md")
    p.add_argument("--eval", default=None, help="results JSON from edulm eval (default: RUN_DIR/release/eval/results.json)")
    p.add_argument("--comparison", default=None, help="folder written by edulm compare (default: RUN_DIR/release/comparison)")
    p.add_argument("--contamination", default=None,
                   help="contamination.json from edulm contamination (default: RUN_DIR/release/contamination/contamination.json)")
    p.add_argument("--model-name", default=None, help="name on the card (default: run.name)")
    p.add_argument("--license", default="apache-2.0", help="license id for the card's metadata (default apache-2.0)")

    p = command("release", _release, "eval, baselines, sample-text, contamination, compare and card in one resumable command")
    p.add_argument("run_dir", help="the run directory (its final/ folder is evaluated; the card goes to final/README.md)")
    p.add_argument("--baselines", default=None, help="folder of baseline results, shared between runs if you like "
                                                     "(default: RUN_DIR/release/baselines)")
    p.add_argument("--models", default=None,
                   help="comma-separated baselines, hub ids or folders, each optionally NAME=PATH (default: the seven reference baselines)")
    p.add_argument("--docs", type=int, default=10_000, help="training documents sampled for the contamination audit (default 10000)")
    p.add_argument("--shards", default=None, help="shards dir to sample training text from (default: the run's data.shards_dir)")
    p.add_argument("--ngram", type=int, default=13, help="n-gram length of the contamination audit (default 13)")
    p.add_argument("--budgets", default=None, help="YAML/JSON mapping of model -> training tokens, for compare")
    p.add_argument("--bpb-text", default=None, help="a UTF-8 text file every model is scored on in bits per byte")
    p.add_argument("--model-name", default=None, help="name on the card (default: run.name)")
    p.add_argument("--license", default="apache-2.0", help="license id for the card's metadata (default apache-2.0)")
    p.add_argument("--gguf", default=None, metavar="DTYPE",
                   help="also write final/ as RUN_DIR/NAME-DTYPE.gguf for llama.cpp, Ollama and LM Studio (f32, f16, bf16, "
                        "q8_0); the card gains a 'Run it locally' section")
    _add_eval_options(p)
    return parser


def _parse(argv: list[str]) -> argparse.Namespace:
    """The command line, with ``key=value`` overrides accepted after options too
    (``edulm train CONFIG --resume auto train.max_steps=30``); anything else left over is bad usage."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and isinstance(getattr(args, "overrides", None), list) and all(
        "=" in word and not word.startswith("-") for word in extra
    ):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _console_level(args: argparse.Namespace) -> int:
    """The console's level from ``--quiet`` / ``--verbose`` (see :mod:`edulm.base.logs`)."""
    from edulm.base.logs import NORMAL, QUIET, VERBOSE

    if args.quiet and args.verbose:
        raise UsageError("--quiet and --verbose contradict each other; give one of them")
    return QUIET if args.quiet else VERBOSE if args.verbose else NORMAL


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``edulm`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)

    def run() -> None:
        args = _parse(argv)
        handler = getattr(args, "handler", None)
        if handler is None:
            raise UsageError("choose a command (see 'edulm --help')")
        with console_logging(_console_level(args)):
            handler(args)

    return run_reporting_errors(run, debug="--debug" in argv)


def run_reporting_errors(action: Callable[[], None], debug: bool = False, prog: str = "edulm") -> int:
    """Run ``action`` and turn what it raises into the exit code and one line on stderr.

    0 success; 2 :class:`UsageError`; 1 :class:`DiskFullError` and any other failure; 130 Ctrl-C.
    With ``debug`` (or ``EDULM_DEBUG=1``) the traceback is printed before that line; the exit code is the same.
    """
    debug = debug or os.environ.get("EDULM_DEBUG") == "1"
    try:
        action()
        return 0
    except KeyboardInterrupt:
        write_line(f"{prog}: interrupted", sys.stderr)
        return 130
    except BrokenPipeError:
        # Output piped into `head` and the like: not an error of ours.
        sys.stderr.close()
        return 0
    except Exception as err:  # noqa: BLE001 - the top of the program: report, don't crash
        if debug:
            traceback.print_exc()
        if isinstance(err, (UsageError, DiskFullError)):
            write_line(f"{prog}: error: {err}", sys.stderr)
            return 2 if isinstance(err, UsageError) else 1
        if isinstance(err, OSError) and err.errno in NOT_WRITABLE:
            # A read-only file system or a protected path, in any command: the user's choice of path, not a bug.
            write_line(f"{prog}: error: {err.filename or 'a path'}: {err.strerror}; choose a writable folder, or give "
                       "yourself permission to write there", sys.stderr)
            return 2
        hint = "" if debug else " (run with --debug for the traceback)"
        write_line(f"{prog}: {type(err).__name__}: {err}{hint}", sys.stderr)
        return 1

if __name__ == "__main__":
    sys.exit(main())
