"""No code from model folders: edulm never runs Python that a model or tokenizer folder brings along.

transformers runs a folder's own Python when its ``config.json`` or ``tokenizer_config.json`` has an
``auto_map`` entry and the caller trusts remote code; at a terminal it even asks, so one keystroke
would run it. edulm passes ``trust_remote_code=False`` to every ``from_pretrained`` and, before that,
refuses such a folder with one line, so no question is ever asked.
"""

from __future__ import annotations

import json
from pathlib import Path

from edulm.base.errors import UsageError

CODE_NAMING_FILES = ("config.json", "tokenizer_config.json", "processor_config.json", "preprocessor_config.json")
"""Files of a model folder in which an ``auto_map`` entry points transformers at the folder's own code."""


def refuse_remote_code(folder: str | Path) -> None:
    """Raise :class:`UsageError` when a file of ``folder`` names custom code (an ``auto_map`` entry).

    Files that are missing or unreadable are left to whoever reads them next (they report it).
    """
    folder = Path(folder)
    for name in CODE_NAMING_FILES:
        path = folder / name
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("auto_map"):
            classes = data["auto_map"]
            named = ", ".join(sorted(classes)) if isinstance(classes, dict) else "custom classes"
            raise UsageError(
                f"{path}: names custom code (auto_map: {named}); edulm never runs code from a model folder, "
                "so use a folder with a plain Llama config.json and tokenizer files, without auto_map"
            )
