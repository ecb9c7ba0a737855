"""Promise 27: the add-on talks only to its own backend.

The launcher uses a ready file only when it is this user's private file naming an address on
this machine, and only when the process at its pid is the backend of that data folder (its
command line, and health's `pid` and `data_dir`). A program squatting on the old port with the
old pid gets no token, no request; `stop()` never signals a process that is not that backend.
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from client import launcher
from client.launcher import UntrustedReadyFile, find_running, stop
from tests.backend.server import Backend


@contextmanager
def squatter() -> Iterator[tuple[int, list[str]]]:
    """An HTTP server that answers like a backend and records every Authorization it gets."""
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization", ""))
            body = json.dumps({"api": "v1", "pid": os.getpid()}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1], seen
    finally:
        server.shutdown()


def write_ready(data: Path, mode: int = 0o600, **info: object) -> Path:
    data.mkdir(parents=True, exist_ok=True)
    path = data / "backend.json"
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, mode)
    os.write(fd, json.dumps({"token": "t" * 32, **info}).encode())
    os.close(fd)
    os.chmod(path, mode)
    return path


def test_a_squatter_with_a_live_pid_gets_no_token(tmp_path: Path) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with squatter() as (port, seen):
            write_ready(tmp_path, pid=sleeper.pid, url=f"http://127.0.0.1:{port}")
            assert find_running(tmp_path) is None
            assert stop(tmp_path) is False
            assert seen == [], "the token was sent to a process that is not the backend"
        assert sleeper.poll() is None, "stop() signalled a process that is not the backend"
    finally:
        sleeper.kill()
        sleeper.wait()


def test_an_unsafe_ready_file_is_refused_with_a_sentence(tmp_path: Path) -> None:
    with squatter() as (port, seen):
        write_ready(tmp_path, mode=0o644, pid=os.getpid(), url=f"http://127.0.0.1:{port}")
        with pytest.raises(UntrustedReadyFile, match="can be read or written by other users"):
            find_running(tmp_path)
        write_ready(tmp_path, pid=os.getpid(), url="http://192.0.2.7:8765")
        with pytest.raises(UntrustedReadyFile, match="not an address on this machine"):
            find_running(tmp_path)
        assert stop(tmp_path) is False
        assert seen == []


def test_only_the_backend_of_this_data_folder_is_used_and_stopped(
    make_backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    b: Backend = make_backend("real").start()
    with b.client() as c:
        health = c.get("/v1/health").json()
    assert health["pid"] == b.proc.pid and Path(health["data_dir"]) == b.data.resolve()
    running = find_running(b.data)
    assert running is not None and running.pid == b.proc.pid

    other = tmp_path / "other"  # a ready file naming the real backend, in another data folder
    write_ready(other, pid=b.proc.pid, url=b.url, token=b.token)
    assert find_running(other) is None
    assert stop(other) is False
    # Where command lines cannot be read (not Linux), health's pid and data_dir decide.
    monkeypatch.setattr(launcher, "process_serves", lambda pid, data_dir: None)
    assert find_running(other) is None
    assert stop(other) is False
    assert b.proc.poll() is None
    assert find_running(b.data) is not None
    assert stop(b.data) is True
    assert b.proc.wait(30) == 0
