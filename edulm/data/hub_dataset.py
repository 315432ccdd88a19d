"""Hugging Face hub datasets, streamed with retries that never lose, skip or repeat a document.

``hf://OWNER/NAME[/CONFIG][@SPLIT]`` (split ``train`` by default) is opened with
``datasets.load_dataset(..., streaming=True)``. Long streams meet read timeouts, connection resets and
5xx answers; such *transient* errors are retried with exponential backoff and jitter, and the stream is
reopened at the exact next record: ``datasets`` keeps a ``state_dict()`` (shard and offset) that we
snapshot every :data:`SNAPSHOT_EVERY` records, so a reopen loads the snapshot and skips the few records
read since. Any other error is *permanent*: it stops the stream with a clear message and leaves what the
consumer has written intact (``edulm prepare`` then resumes after its last complete shard).
"""

from __future__ import annotations

import gc
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from edulm.data.records import HUB_PREFIX, RecordStream, Source, TEXT_FIELD_HINT, record_text
from edulm.base.errors import UsageError
from edulm.base.hub_access import use_hub

log = logging.getLogger(__name__)

SNAPSHOT_EVERY = 100
"""Records between two snapshots of the dataset state (a reopen re-reads fewer than this)."""

# Exception classes, by name, that mean "the network or the server hiccuped; try again". Names rather
# than imports because the same failure surfaces from httpx, requests, urllib3, aiohttp or fsspec
# depending on the installed versions, and none of them is a hard dependency.
_TRANSIENT_NAMES = frozenset(
    {
        "TimeoutException", "NetworkError", "RemoteProtocolError", "ProtocolError",  # httpx
        "ConnectionError", "Timeout", "ReadTimeout", "ConnectTimeout", "ChunkedEncodingError",  # requests
        "ReadTimeoutError", "NewConnectionError", "IncompleteRead",  # urllib3, http.client
        "ClientConnectionError", "ClientPayloadError", "ServerDisconnectedError", "ServerTimeoutError",  # aiohttp
        "FSTimeoutError",  # fsspec
    }
)
SETTLE_SECONDS = 0.25
"""Pause after abandoning a stream mid-way, so the reader's background threads wind down."""
_TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class SourceError(RuntimeError):
    """A source failed for good in the middle of a stream (exit 1; what was written is kept)."""


@dataclass(frozen=True)
class HubSpec:
    """A parsed ``hf://`` source name."""

    repo_id: str
    config: str | None = None
    split: str = "train"


def parse_hub_spec(source: str) -> HubSpec:
    """Split ``hf://OWNER/NAME[/CONFIG][@SPLIT]`` into its parts (UsageError when malformed)."""
    if not source.startswith(HUB_PREFIX):
        raise UsageError(f"'{source}' is not a hub source; write hf://OWNER/NAME[/CONFIG]")
    body, split = source[len(HUB_PREFIX):], "train"
    if "@" in body:
        body, split = body.rsplit("@", 1)
    parts = body.strip("/").split("/")
    if len(parts) not in (2, 3) or not all(p.strip() for p in parts) or not split.strip():
        raise UsageError(
            f"'{source}' is not a hub source name; write hf://OWNER/NAME[/CONFIG][@SPLIT], "
            "for example hf://HuggingFaceFW/fineweb-edu/sample-10BT"
        )
    return HubSpec(repo_id="/".join(parts[:2]), config=parts[2] if len(parts) == 3 else None, split=split)


def _status_code(err: BaseException) -> int | None:
    for candidate in (getattr(getattr(err, "response", None), "status_code", None), getattr(err, "status_code", None), getattr(err, "status", None)):
        if isinstance(candidate, int):
            return candidate
    return None


def is_transient(err: BaseException) -> bool:
    """True for timeouts, dropped connections and retryable HTTP statuses, anywhere in the cause chain."""
    seen: set[int] = set()
    stack = [err]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, (TimeoutError, ConnectionError)):
            return True
        if any(cls.__name__ in _TRANSIENT_NAMES for cls in type(e).__mro__):
            return True
        if _status_code(e) in _TRANSIENT_STATUS:
            return True
        stack.extend([e.__cause__, e.__context__])
    return False


@dataclass
class RetryPolicy:
    """Exponential backoff with jitter; the failure count resets whenever a record arrives."""

    max_retries: int = 12
    """Retries after consecutive failures; the next failure gives up."""
    base_delay: float = 1.0
    """Seconds before the first retry; doubles each time."""
    max_delay: float = 120.0
    """Longest wait between two attempts."""
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def delay(self, attempt: int) -> float:
        """Wait before retry number ``attempt`` (1-based): half fixed, half random, so clients spread out."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return ceiling / 2 + self.rng.uniform(0, ceiling / 2)


def _load_streaming(spec: HubSpec) -> Any:
    import datasets

    return datasets.load_dataset(spec.repo_id, name=spec.config, split=spec.split, streaming=True)


class HubSource(Source):
    """A streamed dataset: ``opener()`` returns a fresh ``datasets.IterableDataset`` each time it is called."""

    def __init__(self, name: str, opener: Callable[[], Any], text_field: str = "text", retry: RetryPolicy | None = None):
        self.name = name
        self.opener = opener
        self.text_field = text_field
        self.retry = retry or RetryPolicy()

    @classmethod
    def from_spec(cls, source: str, text_field: str = "text") -> "HubSource":
        """The hub source named by ``hf://...`` (refused when the hub is switched off)."""
        spec = parse_hub_spec(source)
        if not use_hub():  # offline mode, or a probe found no hub (then the process is offline now)
            raise UsageError(
                f"data.source '{source}' streams from the Hugging Face hub, which is offline (HF_HUB_OFFLINE / "
                "HF_DATASETS_OFFLINE) or unreachable; connect and unset them, or use local files"
            )
        return cls(source, lambda: _load_streaming(spec), text_field)

    def open(self, start: int = 0, token: Any = None) -> "HubStream":
        return HubStream(self, start, token)


class HubStream(RecordStream):
    """Records of a hub dataset from ``start`` on, reconnecting after transient errors."""

    def __init__(self, source: HubSource, start: int, token: Any = None):
        super().__init__(iter(()), start)
        self._source = source
        if token:
            self._snap_state, self._snap_index = token["state"], int(token["index"])
        else:
            # No snapshot: reach ``start`` by reading from the beginning (slow, but exact).
            self._snap_state, self._snap_index = None, 0
        self._ds: Any = None
        self._it: Any = None
        self._failures = 0
        self._ever_connected = False

    def resume_token(self) -> dict[str, Any]:
        return {"index": self._snap_index, "state": self._snap_state}

    def _connect(self) -> None:
        ds = self._source.opener()
        field_name = self._source.text_field
        columns = getattr(ds, "column_names", None)
        if columns is not None:
            if field_name not in columns:
                raise UsageError(f"{self._source.name}: no field '{field_name}' (fields: {', '.join(columns)}); {TEXT_FIELD_HINT}")
            ds = ds.select_columns([field_name])  # parse only the text: records are smaller and faster
        if self._snap_state is not None:
            ds.load_state_dict(self._snap_state)
        self._ds, self._it = ds, iter(ds)
        self._ever_connected = True
        for _ in range(self.index - self._snap_index):
            next(self._it)

    def _drop(self, settle: bool = False) -> None:
        it, self._it, self._ds = self._it, None, None
        close = getattr(it, "close", None)
        if close is not None:
            try:
                close()
            except Exception:  # noqa: BLE001 - a broken stream may fail to close; it is discarded anyway
                pass
        if settle and it is not None:
            # Arrow's parquet reader finishes abandoned reads on background threads; exiting the process
            # while they run aborts it ("terminate called without an active exception"). Give them time.
            del it
            gc.collect()
            time.sleep(SETTLE_SECONDS)

    def _failed(self, err: Exception) -> None:
        name = self._source.name
        what = f"{type(err).__name__}: {err}"
        if not is_transient(err):
            if not self._ever_connected:
                raise UsageError(f"{name}: cannot open the dataset ({what}); check the name, config and split") from err
            raise SourceError(f"{name}: failed at record {self.index} ({what}); what was written so far is kept") from err
        self._failures += 1
        policy = self._source.retry
        if self._failures > policy.max_retries:
            raise SourceError(
                f"{name}: gave up at record {self.index} after {policy.max_retries} retries ({what}); "
                "what was written so far is kept, run the command again to continue"
            ) from err
        wait = policy.delay(self._failures)
        log.warning("%s: %s at record %d; retrying in %.1fs (attempt %d/%d)", name, what, self.index, wait,
                    self._failures, policy.max_retries)
        policy.sleep(wait)

    def __next__(self) -> str:
        while True:
            try:
                if self._it is None:
                    self._connect()
                record = next(self._it)
                break
            except (StopIteration, UsageError):
                self._drop()
                raise
            except Exception as err:  # noqa: BLE001 - classified by is_transient
                self._drop()
                self._failed(err)
        self._failures = 0
        self.index += 1
        if self.index - self._snap_index >= SNAPSHOT_EVERY:
            # datasets counts a record before handing it out, so this state is "after record index-1".
            self._snap_state, self._snap_index = self._ds.state_dict(), self.index
        return self._text(record)

    def _text(self, record: Any) -> str:
        return record_text(record, self._source.text_field, self._source.name)

    def close(self) -> None:
        self._drop(settle=True)
