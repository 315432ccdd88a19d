"""The exceptions that mean "report one line, not a traceback".

Every command turns a :class:`UsageError` into one line on stderr and exit code 2, and a
:class:`DiskFullError` into one line and exit code 1; any other exception is a bug or an
environment failure (exit 1, one line naming its type). Raise them with a message that says what
was wrong and what to do, for example::

    raise UsageError(f"{path}: no such file; pass a config path such as configs/smoke.yaml")
"""

from __future__ import annotations


class UsageError(Exception):
    """Bad usage, config or input: reported as one line, exit code 2, no traceback."""


class DiskFullError(OSError):
    """The disk (or the quota) filled up while writing: one line saying where and what to do, exit code 1."""


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (a library's error can run over many), or its type's name."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0]
