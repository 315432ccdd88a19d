"""Is the Hugging Face Hub there? Offline mode, one quick probe per process, and going offline.

Without a network and without ``HF_HUB_OFFLINE=1``, ``huggingface_hub`` and ``datasets`` retry each
request for about a minute before they give up. edulm asks once per process instead: one ``HEAD``
request to the endpoint ``huggingface_hub`` uses (``HF_ENDPOINT``, default https://huggingface.co),
through the proxies the environment names (``HTTPS_PROXY``, ``NO_PROXY``, ...), bounded by a few
seconds whatever DNS does. When nothing answers, edulm says so in one line and switches the process to
offline mode: the environment variables (inherited by worker processes) and the flags that
``huggingface_hub``, ``transformers`` and ``datasets`` read at run time. Cached hub files still load.

Every module that asks "offline?" or "reachable?" asks here.
"""

from __future__ import annotations

import functools
import logging
import os
import ssl
import sys
import threading
import urllib.error
import urllib.request

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 3.0
"""Seconds the probe waits for the hub's endpoint to answer (DNS, connection and reply together)."""

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
"""Environment variables that put the Hugging Face libraries in offline mode."""

_TRUE = ("1", "true", "yes", "on")

HUB_KERNELS_VARIABLE = "USE_HUB_KERNELS"
"""The environment variable with which transformers (5.x, with the ``kernels`` package installed) decides
whether ``from_pretrained`` swaps model layers for kernels downloaded from the hub."""


def hub_endpoint() -> str:
    """The hub URL that ``huggingface_hub`` talks to (``HF_ENDPOINT``, default https://huggingface.co)."""
    from huggingface_hub import constants

    return str(constants.ENDPOINT)


def hub_offline() -> bool:
    """True when offline mode is on: one of :data:`OFFLINE_VARIABLES` is set to a true value, or
    ``huggingface_hub``'s own flag says so (cached copies only, no request is made)."""
    if any(os.environ.get(name, "").strip().lower() in _TRUE for name in OFFLINE_VARIABLES):
        return True
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def probe(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """True when ``url`` answers a ``HEAD`` request within ``timeout`` seconds (any HTTP status counts:
    something is there), through the environment's proxies. No other request is ever made."""
    answered = threading.Event()

    def ask() -> None:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
                answered.set()
        except urllib.error.HTTPError:  # a status such as 403 or 404 is still an answer
            answered.set()
        except urllib.error.URLError as err:
            # A certificate the default store does not know (a proxy of one's own) is still a server that
            # answered; the hub client, with its own certificate settings, decides what to make of it.
            if isinstance(err.reason, ssl.SSLError):
                answered.set()
        except (OSError, ValueError):  # refused, reset, timed out, a malformed endpoint
            pass

    # A thread, because a name lookup is not bounded by the socket timeout; it is a daemon, so a hung
    # lookup never keeps the process alive.
    worker = threading.Thread(target=ask, name="edulm-hub-probe", daemon=True)
    worker.start()
    worker.join(timeout + 0.5)
    return answered.is_set()


@functools.lru_cache(maxsize=None)
def _reachable(url: str, timeout: float) -> bool:
    return probe(url, timeout)


def hub_reachable(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """True when the hub's endpoint answers; asked once per process and endpoint (see :func:`probe`)."""
    return _reachable(hub_endpoint(), timeout)


def go_offline() -> None:
    """Put this process, and the processes it starts, in offline mode for the rest of its life."""
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ[name] = "1"
    from huggingface_hub import constants

    # These flags are read from the environment once, at import; the libraries consult them at run time.
    constants.HF_HUB_OFFLINE = True
    transformers_hub = sys.modules.get("transformers.utils.hub")
    if transformers_hub is not None and hasattr(transformers_hub, "_is_offline_mode"):  # transformers 4.x
        transformers_hub._is_offline_mode = True
    datasets_config = sys.modules.get("datasets.config")
    if datasets_config is not None:
        datasets_config.HF_HUB_OFFLINE = True
        if hasattr(datasets_config, "HF_DATASETS_OFFLINE"):
            datasets_config.HF_DATASETS_OFFLINE = True


def use_hub() -> bool:
    """True when the hub may be asked; False in offline mode.

    Unless offline mode is on already, the hub is probed (once per process): when it does not answer,
    one line on stderr says so and the process goes offline (:func:`go_offline`), so nothing waits
    through retries afterwards.
    """
    if hub_offline():
        return False
    if hub_reachable():
        return True
    go_offline()
    log.warning("the Hugging Face Hub (%s) is unreachable (no answer within %g s); working offline for the rest of "
                "this command (cached files only)", hub_endpoint(), PROBE_TIMEOUT_S)
    return False


def refuse_hub_kernels() -> None:
    """Keep transformers from replacing model layers with kernels fetched from the hub, in this process and
    the processes it starts (lm-eval's, dataset workers').

    Hub kernels are code downloaded at load time: edulm runs no code it did not ship (as with
    ``trust_remote_code=False``), and its results must not depend on what the hub serves that day. They
    also break loading outright: transformers 5.25 turns them on by default in ``from_pretrained`` and
    hands the first non-CPU device of ``device_map`` to ``kernelize``, so a ``device_map="meta"`` load
    fails. Set unconditionally: a ``USE_HUB_KERNELS=YES`` in the user's shell does not turn them back on.
    """
    os.environ[HUB_KERNELS_VARIABLE] = "NO"


def is_no_hub_error(err: BaseException) -> bool:
    """True when a failed hub load means "no hub" (offline mode, no connection) rather than, say, a wrong id."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    seen: set[int] = set()
    cause: BaseException | None = err
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, (LocalEntryNotFoundError, ConnectionError, TimeoutError)):
            return True
        cause = cause.__cause__ or cause.__context__
    return hub_offline()
