"""Config values that name code outside edulm: ``'package.module:Name'``, imported once, checked, one line if wrong.

``train.callbacks``, ``train.optimizer`` and ``train.schedule`` take such a value beside their built-in names, so a
project can add a callback, an optimizer or a schedule in its own module without editing edulm.
"""

from __future__ import annotations

import importlib
from typing import Any

from edulm.base.errors import UsageError


def is_import_path(value: str) -> bool:
    """True for ``'package.module:Name'`` (a built-in name has no colon)."""
    return ":" in value


def import_named(value: str, key: str, expected: type) -> Any:
    """The object ``'package.module:Name'`` names, which must be ``expected`` or a subclass of it (a class is
    returned as it is, an instance too); a value that does not import or is something else is one
    :class:`~edulm.base.errors.UsageError` naming ``key``."""
    module, _, attr = value.partition(":")
    try:
        found = getattr(importlib.import_module(module), attr) if module and attr else None
    except (ImportError, AttributeError) as err:
        raise UsageError(f"{key}: cannot import {value!r} ({err}); give 'package.module:Name' of a module importable "
                         "from where edulm runs") from None
    if not (isinstance(found, expected) or (isinstance(found, type) and issubclass(found, expected))):
        raise UsageError(f"{key}: {value!r} is no {expected.__qualname__} (edulm's {expected.__module__}.{expected.__qualname__} "
                         "or a subclass of it)")
    return found

