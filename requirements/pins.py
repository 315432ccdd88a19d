"""The package sets edulm is installed and tested with, written as pip constraints.

    python requirements/pins.py lock    < `pip freeze` output   -> a lock (every package at its tested version)
    python requirements/pins.py floors                          -> pyproject.toml's lower bounds, pinned
    python requirements/pins.py versions                        -> one line: the versions that matter, installed

``make lock`` writes ``requirements/lock.txt`` and ``requirements/transformers4.txt`` with the first,
``make test-oldest`` installs the second, and ``make test-latest`` / ``make test-oldest`` print the third
beside their result. torch is never pinned here: its build (CPU or CUDA) is chosen by ``TORCH_SPEC``.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pip vendors the same parser
    from pip._vendor import tomli as tomllib

try:
    from packaging.requirements import Requirement
except ModuleNotFoundError:  # a bare venv: pip vendors the same module
    from pip._vendor.packaging.requirements import Requirement

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"

UNPINNED = re.compile(r"^(torch|triton|nvidia-.*|cuda-.*)$")
"""Packages whose version follows ``TORCH_SPEC`` (torch, and what its CUDA build brings), never the lock."""

FLOOR_EXTRAS = ("dev",)
"""The extras whose lower bounds ``floors`` pins beside the main dependencies (``make setup`` installs them)."""

REPORTED = ("transformers", "tokenizers", "huggingface_hub", "accelerate", "datasets", "lm_eval", "safetensors",
            "gguf", "kernels", "numpy", "torch")
"""The packages whose installed versions ``versions`` prints: those edulm's code talks to directly."""


def _name(line: str) -> str:
    return re.split(r"[=<>!~ @;\[]", line, maxsplit=1)[0].strip().lower().replace("_", "-")


def lock(freeze_lines: list[str]) -> list[str]:
    """``pip freeze`` lines as constraints: sorted, editable installs and the torch family left out."""
    kept = []
    for line in freeze_lines:
        line = line.strip()
        if not line or line.startswith(("#", "-e ")) or " @ " in line:
            continue
        if UNPINNED.match(_name(line)):
            continue
        kept.append(line)
    return sorted(kept, key=_name)


def floors() -> list[str]:
    """Every dependency of pyproject.toml (and of :data:`FLOOR_EXTRAS`) pinned at its lower bound."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    specs = list(project["dependencies"])
    for extra in FLOOR_EXTRAS:
        specs += project["optional-dependencies"][extra]
    pins = {}
    for spec in specs:
        req = Requirement(spec)
        if UNPINNED.match(_name(req.name)):
            continue
        lower = [s.version for s in req.specifier if s.operator == ">="]
        if not lower:
            raise SystemExit(f"pins.py: {spec!r} in pyproject.toml has no lower bound (>=): give it one")
        pins[_name(req.name)] = f"{req.name}=={lower[0]}"
    return [pins[name] for name in sorted(pins)]


def versions() -> str:
    """``name==version`` of :data:`REPORTED` as installed here (``-`` where one is absent)."""
    found = []
    for name in REPORTED:
        try:
            found.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name}=-")
    return " ".join(found)


def main(argv: list[str]) -> int:
    if argv == ["lock"]:
        print("# Written by `make lock` from pyproject.toml; the versions `make setup` installs and CI tests.")
        print("# torch is not here: TORCH_SPEC chooses its build (CPU or CUDA).")
        print("\n".join(lock(sys.stdin.read().splitlines())))
    elif argv == ["floors"]:
        print("\n".join(floors()))
    elif argv == ["versions"]:
        print(versions())
    else:
        print("usage: python requirements/pins.py lock|floors|versions", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
