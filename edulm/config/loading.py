"""Reading and writing configs: YAML files, dotted ``key=value`` overrides, type coercion.

Unknown keys and wrong types raise :class:`~edulm.base.errors.UsageError` with a did-you-mean where one
fits; the result is validated (:mod:`edulm.config.checks`) before it is returned.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from edulm.config.checks import validate
from edulm.config.schema import MOVED_KEYS, SECTIONS, Config, type_name
from edulm.base.errors import UsageError
from edulm.base.files import write_text
from edulm.base.layout import CONFIG_FILE
from edulm.base.suggest import did_you_mean


def _did_you_mean(word: str, choices: list[str]) -> str:
    # A section's keys are few enough to list when none is close.
    return did_you_mean(word, choices, known_up_to=len(choices))


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it (ints are accepted for floats, a mapping for a
    dataclass is built into one). ``where`` starts the :class:`~edulm.base.errors.UsageError` of a wrong value."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise UsageError(f"{where}: expected a mapping of names to values, got {value!r}")
        return dict(value)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value in allowed:
            return value
        raise UsageError(f"{where}: {value!r} is not one of {', '.join(repr(a) for a in allowed)}")
    if origin in (Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return coerce(value, option, where)
            except UsageError:
                if isinstance(value, list) and typing.get_origin(option) is list:
                    raise  # a list can only be meant for the list option: its own message says what is wrong
                continue
        raise UsageError(f"{where}: expected {type_name(tp)}, got {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise UsageError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        names = [f.name for f in dataclasses.fields(tp)]
        if not isinstance(value, dict):
            raise UsageError(f"{where}: expected a mapping with keys {', '.join(names)}, got {value!r}")
        hints = typing.get_type_hints(tp)
        for key in value:
            if key not in hints:
                raise UsageError(f"{where}: unknown key '{key}'{_did_you_mean(str(key), names)}")
        return tp(**{key: coerce(v, hints[key], f"{where}.{key}") for key, v in value.items()})
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise UsageError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
            return int(value)  # YAML reads 1e6 as a float; an integral one is a fine int.
        raise UsageError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            # YAML 1.1 reads 3e-4 (no dot) as a string; it is plainly a number.
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise UsageError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(number):
            raise UsageError(f"{where}: must be a finite number, got {value!r}")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise UsageError(f"{where}: expected a string, got {value!r}")
    raise TypeError(f"unsupported config type {tp!r} at {where}")


def own_settings(settings: type | None, values: dict[str, Any], key: str, owner: str, train: Any) -> Any:
    """``values`` (a mapping key such as ``train.optimizer_settings``) as the dataclass ``settings`` of ``owner``
    (``train.optimizer=muon``), defaults filled in and its ``check(train)`` run; None for an owner without settings.
    An unknown key, a wrong type or a value out of range is one :class:`~edulm.base.errors.UsageError`."""
    if settings is None:
        if values:
            raise UsageError(f"{key}: {owner} has no settings of its own, got {', '.join(sorted(values))}")
        return None
    made = coerce(dict(values), settings, key)
    check = getattr(made, "check", None)
    if check is not None:
        check(train)
    return made


def _build_section(cls: type, values: dict[str, Any], section: str, source: str) -> Any:
    if not isinstance(values, dict):
        raise UsageError(f"{source}: section '{section}' must be a mapping of keys to values")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if key not in names:  # fields only: a class attribute (such as ModelConfig.given_keys) is no key
            raise UsageError(f"{source}: unknown key '{section}.{key}'{_did_you_mean(str(key), names)}")
        kwargs[key] = coerce(value, hints[key], f"{source}: {section}.{key}")
    return cls(**kwargs)


def _moved(path: list[str]) -> list[str]:
    """The key path where a key of an earlier version (:data:`~edulm.config.schema.MOVED_KEYS`) lives now."""
    name = ".".join(path)
    return MOVED_KEYS[name][0].split(".") if name in MOVED_KEYS else path


def _move_old_keys(raw: dict[str, Any], source: str) -> dict[str, Any]:
    """``raw`` with the keys of earlier versions moved to where they live now, or dropped where they never counted
    (a key given both ways is refused)."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    for old, (new_path, only_when) in MOVED_KEYS.items():
        section, key = old.split(".")
        values = out.get(section)
        if not isinstance(values, dict) or key not in values:
            continue
        given = values.pop(key)
        if only_when is not None:
            when_key, when_value = only_when
            default = getattr(SECTIONS[section](), when_key)
            if values.get(when_key, default) != when_value:
                continue  # e.g. train.muon_lr of an AdamW run: it did nothing then, so it does nothing now
        new = new_path.split(".")
        holder = values.get(new[1]) or {}
        if not isinstance(holder, dict) or new[2] in holder:
            raise UsageError(f"{source}: {old} and {new_path} are the same setting; keep only {new_path}")
        values[new[1]] = {**holder, new[2]: given}
    return out


def config_from_dict(raw: dict[str, Any], source: str = "config") -> Config:
    """Build and validate a :class:`Config` from a nested mapping (missing keys take defaults)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UsageError(f"{source}: expected a mapping with sections {', '.join(SECTIONS)}")
    raw = _move_old_keys(raw, source)
    for key in raw:
        if key not in SECTIONS:
            raise UsageError(f"{source}: unknown section '{key}'{_did_you_mean(str(key), list(SECTIONS))}")
    parts = {name: _build_section(cls, raw.get(name) or {}, name, source) for name, cls in SECTIONS.items()}
    parts["model"].given_keys = frozenset(raw.get("model") or {})
    parts["train"].given_keys = frozenset(raw.get("train") or {})
    cfg = Config(**parts)
    validate(cfg, source)
    return cfg


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``section.key=value`` (or ``section.key.name=value`` for a mapping key such as
    ``train.optimizer_settings``) into its key path and a YAML-parsed value."""
    if "=" not in text:
        raise UsageError(f"override '{text}' is not of the form section.key=value (for example train.max_steps=100)")
    key, _, raw_value = text.partition("=")
    path = _moved(key.strip().split("."))
    if len(path) not in (2, 3) or not all(path):
        raise UsageError(f"override '{text}': the key must be section.key, for example train.lr=3e-4")
    try:
        value = yaml.safe_load(raw_value) if raw_value.strip() else ""
    except yaml.YAMLError:
        value = raw_value
    return path, value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of the nested mapping ``raw`` with each ``section.key=value`` applied."""
    # Sections that are not mappings are kept as they are for config_from_dict to reject.
    out = {k: dict(v or {}) if isinstance(v, dict) or v is None else v for k, v in (raw or {}).items()}
    for text in overrides:
        path, value = parse_override(text)
        section, key = path[:2]
        if section not in SECTIONS:
            raise UsageError(f"override '{text}': unknown section '{section}'{_did_you_mean(section, list(SECTIONS))}")
        names = [f.name for f in dataclasses.fields(SECTIONS[section])]
        if key not in names:
            raise UsageError(f"override '{text}': unknown key '{section}.{key}'{_did_you_mean(key, names)}")
        if not isinstance(out.get(section, {}), dict):
            raise UsageError(f"override '{text}': section '{section}' in the config file is not a mapping")
        hint = typing.get_type_hints(SECTIONS[section])[key]
        if len(path) == 3:
            if typing.get_origin(hint) is not dict:
                raise UsageError(f"override '{text}': {section}.{key} is not a mapping; give {section}.{key}=VALUE")
            holder = (out.get(section) or {}).get(key) or {}
            if not isinstance(holder, dict):
                raise UsageError(f"override '{text}': {section}.{key} in the config file is not a mapping")
            holder = {**holder, path[2]: value}
            out.setdefault(section, {})[key] = holder
            for old, (new_path, _) in MOVED_KEYS.items():  # the override wins over the file's old spelling of it
                if new_path == ".".join(path) and old.startswith(f"{section}."):
                    out[section].pop(old.split(".")[1], None)
            continue
        # Its type is checked here, so that a bad value is blamed on the override, not on the config file.
        coerce(value, hint, f"override '{text}': {section}.{key}")
        out.setdefault(section, {})[key] = value
    return out


class _DuplicateKey(yaml.YAMLError):
    """A mapping of the file names one key twice."""

    def __init__(self, key: Any, first_line: int, again_line: int):
        super().__init__(f"'{key}' is given twice (lines {first_line} and {again_line})")


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping.

    PyYAML keeps the last value silently, so a second ``train:`` section would drop every key of the
    first, and a pasted ``seq_len`` would override the one above it without a word.
    """


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            first = seen.setdefault(key, key_node.start_mark.line + 1)
        except TypeError:  # an unhashable key: construct_mapping says so
            continue
        if first != key_node.start_mark.line + 1:
            raise _DuplicateKey(key, first, key_node.start_mark.line + 1)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, turning a missing file or a syntax error into a :class:`UsageError`."""
    path = Path(path)
    if path.is_dir():  # a run dir, say, where its config was meant
        own = path / CONFIG_FILE
        hint = f" ({own} is the config of the run there)" if own.is_file() else ""
        raise UsageError(f"{path}: is a folder, not a config file; pass a YAML config such as configs/smoke.yaml{hint}")
    if not path.is_file():
        raise UsageError(f"{path}: no such config file; pass a YAML config such as configs/smoke.yaml")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not a text file (not UTF-8); pass a YAML config such as configs/smoke.yaml") from None
    except _DuplicateKey as err:
        raise UsageError(f"{path}: {err}; keep one of them") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise UsageError(f"{path}: not valid YAML{where}; fix the file and try again") from None
    return data or {}


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Load a YAML config file, apply ``key=value`` overrides and validate the result."""
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise UsageError(f"{path}: expected a mapping with sections {', '.join(SECTIONS)}")
    return config_from_dict(apply_overrides(raw, overrides or []), source=str(path))


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """The config as a plain nested mapping (what ``config.yaml`` holds)."""
    return dataclasses.asdict(cfg)


def dump_config(cfg: Config) -> str:
    """The config as YAML text, sections in their documented order."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the config as YAML, atomically (:func:`edulm.base.files.write_text`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, dump_config(cfg), "the run config")

