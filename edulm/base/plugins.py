"""Config values that name code outside edulm: ``'package.module:Name'``, imported once, checked, one line if wrong.

``train.callbacks``, ``train.optimizer`` and ``train.schedule`` take such a value beside their built-in names, so a
project can add a callback, an optimizer or a schedule in its own module without editing edulm.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Iterable, TypeVar

from edulm.base.errors import UsageError
from edulm.base.suggest import did_you_mean

K = TypeVar("K")


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



def builtin_kinds(package: str, path: Iterable[str], attr: str, kind: type[K]) -> dict[str, K]:
    """``{name: instance}`` of every module of the folder ``package`` (at ``path``) that defines ``attr`` as an
    instance of ``kind``: a built-in optimizer or schedule is one module, found without a list to edit."""
    found = {}
    for module in pkgutil.iter_modules(path):
        value = getattr(importlib.import_module(f"{package}.{module.name}"), attr, None)
        if isinstance(value, kind):
            found[value.name] = value
    return dict(sorted(found.items()))


def kind_named(value: str, builtins: dict[str, K], key: str, kind: type[K]) -> K:
    """The kind a config value names: a built-in name, or ``'package.module:Name'`` of a ``kind`` subclass (made
    with no arguments) or instance; anything else is one :class:`~edulm.base.errors.UsageError` naming ``key``."""
    if is_import_path(value):
        found = import_named(value, key, kind)
        made = found() if isinstance(found, type) else found
        if not made.name:
            raise UsageError(f"{key}: {value!r} has no name (set the class attribute 'name')")
        return made
    if value not in builtins:
        what = kind.__name__.removesuffix("Kind").lower()
        raise UsageError(f"{key}: unknown {what} {value!r}{did_you_mean(value, list(builtins))} (built in: "
                         f"{', '.join(builtins)}; or 'package.module:Name' of your own {kind.__name__})")
    return builtins[value]
