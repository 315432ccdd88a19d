"""``edulm prepare``: tokenize ``data.source`` into uint16 shards with a held-out split and a manifest.

Documents are read in source order by this process, tokenized in ``data.workers`` processes (results
come back in order), split into training and held-out documents (:mod:`edulm.data.documents`), and each
followed by one end-of-document token; :mod:`edulm.data.prepare_folder` writes them into shards and a
manifest. A mixture (``data.source`` a list) prepares each source into its own sub-folder
(:mod:`edulm.data.prepare_mixture`).

The whole command holds ``edulm.base.lock.folder_lock(data.shards_dir)``: a second prepare of the same folder
is refused naming the holder. SIGTERM is handled like Ctrl-C: the command stops at once, keeps every
complete shard and says how to continue (exit 143 / 130); worker processes end with it, even on SIGKILL.

Resuming (:mod:`edulm.data.prepare_state`): running the same command again after an interrupt (Ctrl-C,
SIGTERM, a crash, SIGKILL, a source that failed for good) continues after the last complete shard and
produces the same bytes as a run that was never interrupted. The output does not depend on
``data.workers``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Iterator, Sequence

from edulm.config import Config
from edulm.data.prepare_folder import FolderPlan, TokenizerFacts, already_prepared, prepare_folder
from edulm.data.prepare_mixture import prepare_mixture
from edulm.data.records import Source
from edulm.data.shards import MANIFEST
from edulm.data.sources import open_source
from edulm.base.errors import DiskFullError, UsageError
from edulm.base.files import disk_full_error, is_disk_full
from edulm.base.layout import FOLDER_KINDS, folder_kind
from edulm.base.lock import folder_lock


class PrepareStopped(Exception):
    """SIGTERM or SIGINT arrived while preparing."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[None]:
    """Turn the first SIGTERM or SIGINT into :class:`PrepareStopped`; a second one acts as usual."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may handle signals; a caller's thread keeps its own rules
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}

    def stop(signum: int, frame: Any) -> None:
        for s, handler in previous.items():
            signal.signal(s, handler)
        raise PrepareStopped(signum)

    for s in previous:
        signal.signal(s, stop)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def prepare(cfg: Config, source: Source | Sequence[Source] | None = None) -> dict[str, Any]:
    """Tokenize ``cfg.data.source`` into ``cfg.data.shards_dir``; return the manifest.

    ``source`` replaces the configured source objects (one, or one per mixture entry), for tests and
    scripts that read from elsewhere.
    """
    d = cfg.data
    if cfg.train.objective == "sft":
        raise UsageError("train.objective is sft: fine-tuning reads its chat records (data.source) directly, with nothing "
                         "to prepare; run 'edulm train' with this config")
    out = Path(d.shards_dir)
    kind = folder_kind(out)
    if kind not in (None, "shards"):  # shards written among a run's or a model's files would be mixed with them
        raise UsageError(f"data.shards_dir {out}: holds {FOLDER_KINDS[kind]}, not token shards; "
                         "choose a new or empty folder for the shards")
    entries = d.sources()
    if source is None:  # bad names fail here, before anything is written
        sources = [open_source(e.source, e.text_field, e.pattern) for e in entries]
    else:
        sources = list(source) if isinstance(source, Sequence) else [source]
        if len(sources) != len(entries):
            raise ValueError(f"{len(sources)} source objects for {len(entries)} configured sources")
    for opened in sources:
        opened.check()  # a wrong text field in a later source must not wait until the first is prepared
    tok = TokenizerFacts.load(cfg.tokenizer.name)
    if not d.is_mixture and (out / MANIFEST).is_file() and not os.access(out.parent, os.W_OK):
        # A finished folder on a read-only file system (a shared, published copy): nothing to write, so no lock to
        # take; it is checked against these settings and said to be prepared, as in a writable place.
        plan = FolderPlan(entries[0].source, entries[0].text_field, entries[0].pattern, cfg.run.seed, d.val_tokens,
                          d.max_tokens, d.shard_tokens, d.workers)
        done = already_prepared(out, plan.settings(tok))
        if done is not None:
            return done
    with folder_lock(out, "edulm prepare"), _stop_on_signals():
        try:
            if d.is_mixture:
                return prepare_mixture(cfg, sources, tok)
            plan = FolderPlan(entries[0].source, entries[0].text_field, entries[0].pattern, cfg.run.seed, d.val_tokens,
                              d.max_tokens, d.shard_tokens, d.workers)
            return prepare_folder(plan, sources[0], tok, out)
        except PrepareStopped as stopped:
            print(f"edulm: prepare stopped by {stopped}; complete shards in {out} are kept: run the same command "
                  "again to continue", file=sys.stderr)
            raise SystemExit(128 + stopped.signum) from None
        except OSError as err:
            if is_disk_full(err) and not isinstance(err, DiskFullError):
                raise disk_full_error(out, "token shards", "free some space and run the same command again to continue") from err
            raise
