"""How every bench script ends: bad input is one line and exit 2, as in ``edulm``; a failure the script
names (a training run that failed, its log in the message) is one line and exit 1; anything else keeps
its traceback, which a diagnostic tool should show (``edulm``'s own reporter would fold it into one line)."""

from __future__ import annotations

import sys
from typing import Callable

from edulm.base.errors import UsageError


def run_main(main: Callable[[], int], failures: tuple[type[Exception], ...] = ()) -> None:
    """Run a bench script's ``main`` and exit with its code (2 for a :class:`UsageError`, 1 for ``failures``)."""
    try:
        code = main()
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        code = 2
    except failures as err:
        print(f"error: {err}", file=sys.stderr)
        code = 1
    sys.exit(code)
