"""Hub reachability: one quick probe, offline mode for the rest of the process, and the fast tokenizer fallback.

Only loopback addresses are ever contacted: a closed port, a server that answers, a listener that never does.
"""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import textwrap
import threading
from contextlib import contextmanager

import pytest

from edulm.base import hub_access as hub


def closed_port() -> int:
    """A loopback port with nothing listening (bound once to find a free number, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def answering_server(status: int):
    """A loopback HTTP server that answers every request with ``status``."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):  # noqa: N802 - the name http.server calls
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args):  # keep the test output clean
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class SilentHub:
    """A loopback port that takes connections and never says anything (a hub that hangs); counts the connections."""

    def __init__(self) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(16)  # the kernel completes each connection; nobody accepts or answers until counted
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"

    def connections(self) -> int:
        """How many connections were made to it so far (each accepted and closed now)."""
        self.socket.setblocking(False)
        count = 0
        while True:
            try:
                conn, _ = self.socket.accept()
            except BlockingIOError:
                return count
            conn.close()
            count += 1


@contextmanager
def silent_hub():
    """A :class:`SilentHub`, closed afterwards."""
    listener = SilentHub()
    try:
        yield listener
    finally:
        listener.socket.close()


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    """The probe honours proxies; these tests talk to loopback directly."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


def test_probe_tells_an_answer_from_silence():
    assert not hub.probe(f"http://127.0.0.1:{closed_port()}", timeout=2)
    for status in (200, 404):  # any status means something is there
        with answering_server(status) as url:
            assert hub.probe(url, timeout=2)
    with silent_hub() as silent:
        assert not hub.probe(silent.url, timeout=0.5)  # returns: its timeout bounds it, not the server
        assert silent.connections() == 1


def test_only_a_missing_hub_means_unreachable(monkeypatch):
    from huggingface_hub import constants
    from huggingface_hub.errors import LocalEntryNotFoundError

    def raised(error: BaseException, cause: BaseException) -> BaseException:
        try:
            raise error from cause
        except BaseException as err:  # noqa: BLE001 - building a real exception chain
            return err

    for name in hub.OFFLINE_VARIABLES:  # judge by the error alone
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    assert not hub.hub_offline()
    assert hub.is_no_hub_error(raised(OSError("couldn't connect"), ConnectionRefusedError(111, "refused")))
    assert hub.is_no_hub_error(raised(OSError("not cached"), LocalEntryNotFoundError("no connection")))
    assert not hub.is_no_hub_error(OSError("HuggingFaceTB/SmolLM2-nope is not a valid model identifier"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.hub_offline()
    assert hub.is_no_hub_error(OSError("any failure while offline"))


def online_env(tmp_path, endpoint: str) -> dict[str, str]:
    """The environment of a user with no offline variables set, a fresh HF cache and ``endpoint`` as the hub."""
    env = {k: v for k, v in os.environ.items() if k not in hub.OFFLINE_VARIABLES and "proxy" not in k.lower()}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(tmp_path / "hf-home"))
    return env


SCRIPT = textwrap.dedent(
    """
    import os, sys
    from edulm.base import hub_access as hub
    from edulm.tokenizer import loading as tk
    tok = tk.load_tokenizer("HuggingFaceTB/SmolLM2-135M")
    again = tk.load_tokenizer("HuggingFaceTB/SmolLM2-360M")  # no second probe: the process is offline now
    tk.load_tokenizer("HuggingFaceTB/SmolLM2-135M")  # its fallback was said already: not again
    from huggingface_hub import constants
    print(tk.tokenizer_fingerprint(tok), tk.tokenizer_fingerprint(again), os.environ.get("HF_HUB_OFFLINE"),
          constants.HF_HUB_OFFLINE, hub.hub_offline())
    """
)


@pytest.mark.parametrize("hub_kind", ["closed port", "silent server"])
def test_no_hub_means_one_probe_then_offline_smollm2(tmp_path, hub_kind):
    """No minute of retries: one HEAD request, unanswered, and the process works offline from then on (a silent
    hub is asked exactly once, by the probe; two tokenizer loads later, nothing else has tried it)."""
    from edulm.tokenizer.loading import OFFLINE_SMOLLM2, load_tokenizer, tokenizer_fingerprint

    expected = tokenizer_fingerprint(load_tokenizer(OFFLINE_SMOLLM2))  # converted (cached) before the subprocess
    with silent_hub() as silent:
        url = silent.url if hub_kind == "silent server" else f"http://127.0.0.1:{closed_port()}"
        done = subprocess.run([sys.executable, "-c", SCRIPT], env=online_env(tmp_path, url),
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert silent.connections() == (1 if hub_kind == "silent server" else 0)
    assert done.stdout.split() == [expected, expected, "1", "True", "True"]
    notes = [line for line in done.stderr.splitlines() if "is unreachable (no answer" in line]
    assert len(notes) == 1 and "127.0.0.1" in notes[0] and "working offline" in notes[0]
    assert done.stderr.count("offline SmolLM2 tokenizer") == 2  # once per name


def test_a_reachable_hub_stays_online(tmp_path):
    code = "from edulm.base import hub_access as hub; print(hub.use_hub(), hub.hub_offline())"
    with answering_server(200) as url:
        done = subprocess.run([sys.executable, "-c", code], env=online_env(tmp_path, url), capture_output=True,
                              text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "False"] and "is unreachable (no answer" not in done.stderr
