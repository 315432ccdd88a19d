"""No code from model folders: a folder naming custom code (auto_map) is refused with one line, before any prompt."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edulm.cli import main
from edulm.base.errors import UsageError
from edulm.base.remote_code import refuse_remote_code

EVIL_CODE = """
from pathlib import Path
Path({marker!r}).write_text("the folder's code ran")
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
class EvilConfig(LlamaConfig):
    pass
class EvilModel(LlamaForCausalLM):
    pass
class EvilTokenizer(PreTrainedTokenizerFast):
    pass
"""


def evil_folder(tmp_path: Path, tiny_model_config, where: str) -> tuple[Path, Path]:
    """A working tiny Llama folder whose ``where`` file (config or tokenizer config) names its own code,
    which writes a marker file when it runs; returns (folder, marker)."""
    from transformers import LlamaForCausalLM

    from edulm.hf import to_hf_config
    from edulm.tokenizer.loading import save_tokenizer
    from edulm.tokenizer.bpe import train_bpe

    folder, marker = tmp_path / f"evil-{where}", tmp_path / f"marker-{where}"
    LlamaForCausalLM(to_hf_config(tiny_model_config)).save_pretrained(str(folder))
    save_tokenizer(train_bpe(["plants need light and water"] * 5, 320), folder)
    (folder / "evil.py").write_text(EVIL_CODE.format(marker=str(marker)))
    if where == "config":
        entry = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
        target = folder / "config.json"
    else:
        entry = {"AutoTokenizer": ["evil.EvilTokenizer", None]}
        target = folder / "tokenizer_config.json"
    data = json.loads(target.read_text())
    target.write_text(json.dumps({**data, "auto_map": entry}))
    return folder, marker


@pytest.mark.parametrize("where", ["config", "tokenizer"])
def test_commands_refuse_the_folder_in_one_line(tmp_path, tiny_model_config, capsys, where):
    folder, marker = evil_folder(tmp_path, tiny_model_config, where)
    (tmp_path / "text.txt").write_text("plants need light and water " * 20)
    commands = [
        ["generate", str(folder), "plants", "--max-new-tokens", "3", "--device", "cpu"],
        ["export", str(folder), "--out", str(tmp_path / "exported")],
        ["perplexity", str(folder), "--text", str(tmp_path / "text.txt"), "--device", "cpu"],
        ["info", str(folder)],
    ]
    capsys.readouterr()  # what building the folder printed
    for argv in commands:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "auto_map" in err[0] and "custom code" in err[0], (argv, err)
    assert not marker.exists()
    assert not (tmp_path / "exported").exists()


def test_no_prompt_even_when_someone_would_answer_yes(tmp_path, tiny_model_config):
    """At a terminal transformers would ask "run the custom code? [y/N]"; here a 'y' waits on stdin."""
    folder, marker = evil_folder(tmp_path, tiny_model_config, "tokenizer")
    done = subprocess.run([sys.executable, "-m", "edulm", "generate", str(folder), "plants", "--device", "cpu"],
                          input="y\ny\n", capture_output=True, text=True, timeout=300, env={**os.environ})
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "auto_map" in done.stderr
    assert not marker.exists()


def test_a_tokenizer_folder_naming_code_is_refused(tmp_path, tiny_model_config):
    from edulm.tokenizer.loading import load_tokenizer

    folder, marker = evil_folder(tmp_path, tiny_model_config, "tokenizer")
    with pytest.raises(UsageError, match="auto_map: AutoTokenizer"):
        load_tokenizer(str(folder))
    with pytest.raises(UsageError, match="auto_map"):
        refuse_remote_code(folder)
    refuse_remote_code(tmp_path / "no-such-folder")  # nothing there, nothing to refuse
    assert not marker.exists()


def test_every_from_pretrained_call_refuses_remote_code():
    """The second line of defence: no ``from_pretrained`` in edulm may leave ``trust_remote_code`` to a prompt."""
    package = Path(__file__).resolve().parents[1] / "edulm"
    calls, lax = 0, []
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "from_pretrained":
                calls += 1
                trust = [k.value for k in node.keywords if k.arg == "trust_remote_code"]
                if not (trust and isinstance(trust[0], ast.Constant) and trust[0].value is False):
                    lax.append(f"{path.relative_to(package.parent)}:{node.lineno}")
    assert calls >= 5 and not lax, lax
