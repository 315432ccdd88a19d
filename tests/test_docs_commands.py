"""Every `edulm` command the README and docs/ show is one edulm accepts: its options parse, and for a command
that takes a config file of the repository, the config with its overrides loads and validates.

The commands are read from the documents themselves (code blocks, and inline code that starts with
``edulm ``), so a renamed option or config key that a document still shows fails here; ``edulm info``
commands are also run as written. What a CPU test cannot do is run them all: most train the 135M
model or read the hub; the smoke path (``make demo``) is run whole by ``tests/train/test_demo.py``.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from edulm.cli import _parse, main
from edulm.config import load_config
from edulm.base.errors import UsageError

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
CONFIG_COMMANDS = {"train", "prepare", "info"}


def _joined(lines: list[str]) -> list[str]:
    """Lines with shell continuations (a trailing backslash) joined."""
    out: list[str] = []
    pending = ""
    for line in lines:
        line = pending + line.strip()
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        out.append(line)
    return out


def documented_commands() -> list[tuple[str, str]]:
    """``(document, command)`` for every edulm command line a document shows (``edulm`` and what follows)."""
    found = []
    for doc in DOCUMENTS:
        text = doc.read_text()
        blocks = re.findall(r"```[a-z]*\n(.*?)```", text, re.DOTALL)
        # In a code block a run of spaces ends the command (what follows is an aligned description).
        lines = [re.split(r"\s{2,}", line.strip())[0] for block in blocks for line in _joined(block.splitlines())]
        # Inline code in prose is a command when it is an example (it names a path or an override), not a mention.
        lines += [" ".join(span.split()) for span in re.findall(r"`(edulm [^`]+)`", re.sub(r"```.*?```", "", text,
                                                                                          flags=re.DOTALL))
                  if re.search(r"[/=]", span)]
        for line in lines:
            line = line.split(" #")[0].strip()
            match = re.search(r"(?:^|-m |&& )(edulm [a-z].*)$", line)
            if not match:
                continue
            command = match.group(1)
            # Placeholders and elisions are the reader's to fill: a usage line, not a command.
            if "..." in command or "[" in command or "|" in command:
                continue
            found.append((doc.name, command))
    return found


COMMANDS = documented_commands()


def test_the_documents_show_commands():
    assert len(COMMANDS) > 30, "the extraction lost the documents' commands"


@pytest.mark.parametrize("doc, command", COMMANDS, ids=[f"{d}:{c[:60]}" for d, c in COMMANDS])
def test_every_documented_command_is_one_edulm_accepts(doc, command, monkeypatch):
    argv = shlex.split(command)[1:]
    try:
        args = _parse(argv)
    except (SystemExit, UsageError) as err:
        pytest.fail(f"{doc}: `{command}` is not a command edulm accepts: {err}")
    config = getattr(args, "config", None)
    if args.command in CONFIG_COMMANDS and config and (REPO / config).is_file():
        load_config(REPO / config, list(getattr(args, "overrides", []) or []))  # a UsageError names the bad key
    if args.command == "info":  # quick and writes nothing: run exactly as written, from the repository root
        monkeypatch.chdir(REPO)
        assert main(argv) == 0, f"{doc}: `{command}` failed"
