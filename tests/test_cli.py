"""The command line's contract: exit 2 with one line for bad input, tracebacks only with --debug."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from edulm.cli import main

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edulm", *args], capture_output=True, text=True, env=ENV, timeout=120)


def test_info_reference_config_prints_exact_parameter_count():
    out = run("info", "configs/l20_135m_deepthin.yaml")
    assert out.returncode == 0, out.stderr
    assert "parameters: 134,515,008" in out.stdout.splitlines()
    assert "training FLOPs/token: 1,231,763,328" in out.stdout
    assert out.stderr == ""


def test_bad_override_is_one_line_exit_2():
    out = run("info", "configs/smoke.yaml", "train.lrr=1")
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "did you mean 'lr'" in out.stderr
    assert "Traceback" not in out.stderr


def test_bad_config_file_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  d_model: 100\n  n_heads: 3\n")
    out = run("info", str(bad))
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and "must divide model.d_model" in out.stderr
    assert "Traceback" not in out.stderr
    missing = run("train", str(tmp_path / "missing.yaml"))
    assert missing.returncode == 2 and "no such config file" in missing.stderr and "Traceback" not in missing.stderr


def test_debug_shows_the_traceback_and_keeps_the_exit_code():
    out = run("--debug", "info", "configs/smoke.yaml", "model.n_heads=3")
    assert out.returncode == 2 and "Traceback" in out.stderr and "UsageError" in out.stderr
    assert out.stderr.splitlines()[-1].startswith("edulm: error: ")  # the one line still ends the output
    after = run("info", "configs/smoke.yaml", "model.n_heads=3", "--debug")  # also after the command
    assert after.returncode == 2 and "Traceback" in after.stderr and "must divide model.d_model" in after.stderr


def test_abbreviated_options_are_refused():
    """argparse would take `--resum` for `--resume`; a misspelt option is an error, not a guess."""
    out = run("train", "configs/smoke.yaml", "--resum", "auto")
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "--resum" in out.stderr


def test_binary_config_and_empty_tokenizer_source_are_one_line_exit_2(tmp_path):
    binary = tmp_path / "weights.yaml"
    binary.write_bytes(bytes(range(128, 256)))
    out = run("info", str(binary))
    assert out.returncode == 2 and "not UTF-8" in out.stderr and "Traceback" not in out.stderr
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"text": ""}\n')
    out = run("tokenizer", "train", "--source", str(empty), "--out", str(tmp_path / "tok"))
    assert out.returncode == 2 and "no non-empty documents" in out.stderr and not (tmp_path / "tok").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "missing.yaml"],
        ["prepare", "missing.yaml"],
        ["nonsense"],
        ["info"],
        ["export", "no/such/dir", "--out", "x"],
        ["generate"],
        ["perplexity", "x"],
        ["train", "configs/smoke.yaml", "notakeyvalue"],
        ["train", "configs/smoke.yaml", "--resume", "auto", "notakeyvalue"],
        ["train", "configs/smoke.yaml", "--resume", "auto", "--nonsense"],
    ],
)
def test_bad_usage_exits_2(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("edulm") and err.count("\n") == 1


def test_help_lists_every_command():
    out = run("--help")
    assert out.returncode == 0
    for command in ("info", "prepare", "train", "export", "generate", "chat", "perplexity", "eval", "baselines",
                    "compare", "sample-text", "contamination", "card", "release", "tokenizer"):
        assert command in out.stdout


def test_every_option_of_every_command_has_a_help_text():
    import argparse

    from edulm.cli import build_parser

    def undocumented(parser: argparse.ArgumentParser, name: str):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, subparser in action.choices.items():
                    yield from undocumented(subparser, f"{name} {sub}")
            elif not action.help:
                yield f"{name} {'/'.join(action.option_strings) or action.dest}"

    assert list(undocumented(build_parser(), "edulm")) == []


def test_overrides_may_follow_options(capsys):
    # Before or after an option, the same overrides, in the order given.
    assert main(["info", "configs/smoke.yaml", "--explain", "model.n_heads=3"]) == 2
    assert "model.n_heads (3) must divide model.d_model" in capsys.readouterr().err
    assert main(["info", "configs/smoke.yaml", "model.n_layers=5", "--quiet", "model.n_layers=6"]) == 0
    assert "n_layers: 6" in capsys.readouterr().out


def test_a_missing_config_names_only_the_config(capsys):
    assert main(["train"]) == 2
    err = capsys.readouterr().err
    assert "required: config" in err and "overrides" not in err
