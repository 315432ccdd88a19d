"""``builtin:sample``: English prose harvested from the docstrings of installed Python code.

Every machine that runs edulm has the Python standard library, torch and numpy, and their docstrings
are a few million tokens of real technical English. The harvest parses source files (it never imports
them), keeps docstrings and the long documentation strings that torch and numpy attach at import time
(``add_docstr`` / ``add_newdoc`` calls), drops interactive examples (``>>>`` blocks) and code-like
text, and groups each file's strings into documents of about :data:`DOC_CHARS` characters.

The result depends only on the installed files, so it is the same on every run in a given
environment. It is cached as JSON lines under the edulm cache folder (``$EDULM_CACHE``, else
``~/.cache/edulm``), keyed by the Python, torch and numpy versions.
Nothing of it is stored in the repository.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import inspect
import json
import platform
import re
import sysconfig
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Iterator

from edulm.base.cache import cache_dir
from edulm.data.records import BUILTIN_SAMPLE, RecordStream, Source
from edulm.base.files import remove_stale_temps, write_text

HARVEST_VERSION = 1
"""Bump when the harvest rules change, so caches are rebuilt."""
DOC_CHARS = 16_000
"""A document closes once it holds about this many characters (whole strings are never split)."""
MIN_CHARS = 120
"""Strings shorter than this (after cleaning) are too short to be prose worth keeping."""

_SKIP_DIRS = frozenset({"test", "tests", "testing", "idlelib", "site-packages", "__pycache__", "_vendor", "vendored"})
_DOC_CALLS = frozenset({"add_docstr", "_add_docstr", "add_newdoc", "add_newdoc_ufunc"})
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def default_roots() -> list[tuple[str, Path]]:
    """``(label, folder)`` of the code harvested: the standard library, then torch and numpy when installed."""
    roots = [("python-" + platform.python_version(), Path(sysconfig.get_paths()["stdlib"]))]
    for package in ("torch", "numpy"):
        spec = importlib.util.find_spec(package)  # finds the folder without importing the package
        if spec is not None and spec.origin:
            try:
                version = metadata.version(package)
            except metadata.PackageNotFoundError:
                version = "unknown"
            roots.append((f"{package}-{version}", Path(spec.origin).parent))
    return roots


def _source_files(root: Path) -> list[Path]:
    files = [p for p in root.rglob("*.py") if not _SKIP_DIRS.intersection(p.relative_to(root).parts[:-1])]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _call_name(node: ast.Call) -> str:
    func = node.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def _doc_call_text(node: ast.Call) -> str | None:
    """The documentation string given to ``add_docstr(obj, "...")``-style calls, if any."""
    for arg in reversed(node.args):
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            return arg.value
        # torch writes r\"\"\"...{input}...\"\"\".format(**common_args)
        if (isinstance(arg, ast.Call) and isinstance(arg.func, ast.Attribute) and arg.func.attr == "format"
                and isinstance(arg.func.value, ast.Constant) and isinstance(arg.func.value.value, str)):
            # A placeholder becomes its bare name ("{input}" -> "input"), which reads as prose.
            return _PLACEHOLDER.sub(lambda m: m.group(1), arg.func.value.value).replace("{{", "{").replace("}}", "}")
    return None


def _strings_of(tree: ast.Module) -> list[tuple[int, str]]:
    """``(line, text)`` of every docstring and documentation-call string in a module."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                found.append((getattr(node, "lineno", 0), doc))
        elif isinstance(node, ast.Call) and _call_name(node) in _DOC_CALLS:
            text = _doc_call_text(node)
            if text:
                found.append((node.lineno, text))
    found.sort(key=lambda item: item[0])
    return found


def clean_docstring(text: str) -> str:
    """Dedent, drop interactive examples and their output, collapse blank runs; '' when not prose."""
    lines, out, in_example = inspect.cleandoc(text).splitlines(), [], False
    for line in lines:
        stripped = line.strip()
        if stripped.startswith(">>>") or (in_example and stripped.startswith("...")):
            in_example = True
            continue
        if in_example:
            if stripped:
                continue  # output of the example, up to the next blank line
            in_example = False
        if stripped or (out and out[-1]):
            out.append(line.rstrip())
    cleaned = "\n".join(out).strip()
    if len(cleaned) < MIN_CHARS:
        return ""
    letters = sum(ch.isalpha() or ch == " " for ch in cleaned)
    return cleaned if letters / len(cleaned) >= 0.7 else ""


def harvest(roots: Iterable[tuple[str, Path]]) -> Iterator[str]:
    """Documents harvested from the ``.py`` files under each root, in a fixed order."""
    for _label, root in roots:
        for path in _source_files(root):
            try:
                tree = ast.parse(path.read_bytes())
            except (SyntaxError, ValueError, UnicodeDecodeError, OSError):
                continue  # files for other Python versions, templates, unreadable files
            doc: list[str] = []
            size = 0
            for _line, text in _strings_of(tree):
                cleaned = clean_docstring(text)
                if not cleaned:
                    continue
                doc.append(cleaned)
                size += len(cleaned)
                if size >= DOC_CHARS:
                    yield "\n\n".join(doc)
                    doc, size = [], 0
            if doc:
                yield "\n\n".join(doc)


def _cache_key(roots: list[tuple[str, Path]]) -> str:
    raw = json.dumps([HARVEST_VERSION, [(label, str(path)) for label, path in roots]])
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def load_sample(roots: list[tuple[str, Path]] | None = None) -> list[str]:
    """The sample documents, harvested once per environment and then read from the cache."""
    roots = default_roots() if roots is None else roots
    path = cache_dir() / "builtin-sample" / f"{_cache_key(roots)}.jsonl"
    if path.is_file():
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f]
    docs = list(harvest(roots))
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path.parent)  # caches half-written by killed processes
    # Readers see a complete cache or none.
    write_text(path, "".join(json.dumps(doc, ensure_ascii=False) + "\n" for doc in docs), "the built-in sample cache")
    return docs


class BuiltinSample(Source):
    """The ``builtin:sample`` source: one record per harvested document."""

    name = BUILTIN_SAMPLE

    def __init__(self, roots: list[tuple[str, Path]] | None = None):
        self._roots = roots
        self._docs: list[str] | None = None

    @property
    def documents(self) -> list[str]:
        """All documents (harvested or read from the cache on first use)."""
        if self._docs is None:
            self._docs = load_sample(self._roots)
        return self._docs

    def total_records(self) -> int:
        return len(self.documents)

    def open(self, start: int = 0, token: Any = None) -> RecordStream:
        return RecordStream(iter(self.documents[start:]), start)
