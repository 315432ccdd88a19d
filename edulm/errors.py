"""The one exception type that means "the user asked for something wrong".

Every command turns a :class:`UsageError` into one line on stderr and exit code 2; any other
exception is a bug or an environment failure (exit 1). Raise it with a message that says what was
wrong and what to do, for example::

    raise UsageError(f"{path}: no such file; pass a config path such as configs/smoke.yaml")
"""

from __future__ import annotations


class UsageError(Exception):
    """Bad usage, config or input: reported as one line, exit code 2, no traceback."""
