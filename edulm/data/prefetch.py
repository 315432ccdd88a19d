"""Read the next training batches in a background thread, while the GPU works on the current one.

From the page cache the shard loader costs little, but on cold or network storage a page fault in the
training thread stalls the GPU. :class:`PrefetchingLoader` runs any loader (``__next__``, ``state_dict``,
``load_state_dict``, ``close``) in a thread that keeps up to ``depth`` batches ready in a bounded queue
(the loader allocates them in pinned memory on CUDA, so the copy to the GPU is asynchronous).

Exact resume stays exact: each batch travels with the loader's state *after* it, so :meth:`state_dict`
describes the next batch the training loop will receive, not how far the thread has read ahead.
"""

from __future__ import annotations

import queue
import threading
from typing import Any

import torch

_POLL_S = 0.1
"""How often a blocked thread checks whether it should stop."""


class _Failed:
    """An exception raised by the wrapped loader, delivered in order."""

    def __init__(self, error: BaseException):
        self.error = error


def _fill(loader: Any, out: queue.Queue, stop: threading.Event) -> None:
    """Body of the prefetch thread: ``(batch, state after it)`` items, or one :class:`_Failed`, until stopped."""
    while not stop.is_set():
        try:
            item: Any = (next(loader), loader.state_dict())
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, which raises it
            item = _Failed(err)
        while not stop.is_set():
            try:
                out.put(item, timeout=_POLL_S)
                break
            except queue.Full:
                continue
        if isinstance(item, _Failed):
            return


class PrefetchingLoader:
    """``loader``'s batches, read ``depth`` ahead by a background thread; the same iterator API."""

    def __init__(self, loader: Any, depth: int = 2):
        self._stop = threading.Event()
        if depth < 1:
            raise ValueError("depth must be at least 1")
        self.inner, self.depth = loader, depth
        self._state = loader.state_dict()  # of the next batch the consumer will get
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        self._failed: BaseException | None = None

    def _start(self) -> None:
        self._queue = queue.Queue(self.depth)
        self._stop = threading.Event()
        # The thread holds the wrapped loader, not this object: a loader dropped without close() is
        # collected, and __del__ stops the thread.
        self._thread = threading.Thread(target=_fill, args=(self.inner, self._queue, self._stop), name="edulm-prefetch",
                                        daemon=True)
        self._thread.start()

    def __iter__(self) -> "PrefetchingLoader":
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._failed is not None:
            raise self._failed
        if self._thread is None:
            self._start()
        item = self._queue.get()
        if isinstance(item, _Failed):
            self._failed = item.error
            self._halt()
            raise item.error
        batch, self._state = item
        return batch

    def state_dict(self) -> dict[str, Any]:
        """The wrapped loader's state as of the next batch this iterator will return."""
        return dict(self._state)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Drop what was read ahead and continue from ``state``."""
        self._halt()
        self.inner.load_state_dict(state)
        self._state = self.inner.state_dict()
        self._failed = None

    def _halt(self) -> None:
        """Stop the thread and drop the batches it read ahead."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        thread.join()
        self._queue = None

    def close(self) -> None:
        """Stop the thread, then close the wrapped loader (safe to call twice)."""
        self._halt()
        self.inner.close()

    def __del__(self) -> None:
        self._stop.set()  # dropped without close(): let the thread end (it does not keep us alive)
