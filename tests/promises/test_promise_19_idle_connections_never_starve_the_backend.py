"""Promise 19: idle connections never starve the backend.

With the backend's open-files limit at 256 (soft and hard, so it cannot be raised), 400 sockets
connect and send nothing (no token needed for that). The backend stays within its files, a
normal client still gets its answers while they are held, and a silent connection is closed
once the header deadline passes. With a soft limit below the hard one, the backend raises it.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from backend.connections import HEADER_TIMEOUT_S
from tests.backend.server import REPO, Backend
from tests.promises.support import open_fds

FILE_LIMIT = 256
IDLE_SOCKETS = 400


def start_with_file_limit(b: Backend, soft: int, hard: int) -> Backend:
    """Backend.start, with RLIMIT_NOFILE set in the child before it runs."""
    b.data.mkdir(parents=True, exist_ok=True)
    b.log_file = b.data / "stdout.log"
    with open(b.log_file, "ab") as out:
        b.proc = subprocess.Popen(
            [sys.executable, "-m", "backend", "serve", "--port", "0", "--device", "cpu",
             "--data", str(b.data), "--models", str(b.models)],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"},
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard)),
        )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert b.proc.poll() is None, b.output()
        with contextlib.suppress(OSError, ValueError):
            b.info = json.loads((b.data / "backend.json").read_text())
            if b.info.get("pid") == b.proc.pid:
                return b
        time.sleep(0.05)  # polling the ready file, with a deadline
    raise AssertionError(f"the backend did not become ready:\n{b.output()}")


@contextlib.contextmanager
def idle_sockets(port: int, count: int) -> Iterator[list[socket.socket]]:
    """Sockets that connect (without waiting for the server to accept) and never send."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            socks.append(s)
        yield socks
    finally:
        for s in socks:
            s.close()


def soft_file_limit(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no open-files limit")


def test_hundreds_of_idle_sockets_do_not_starve_a_normal_client(make_backend) -> None:
    b = start_with_file_limit(make_backend(), FILE_LIMIT, FILE_LIMIT)
    with b.client() as c:
        assert c.get("/v1/health").status_code == 200
    with idle_sockets(b.info["port"], IDLE_SOCKETS) as socks:
        for _ in range(5):
            with b.client() as c:  # a fresh connection each time
                assert c.get("/v1/health", timeout=10.0).status_code == 200
        assert open_fds(b.proc.pid) < FILE_LIMIT
        first = socks[-1]  # one of the last to connect: not closed to make room for others
        first.setblocking(True)
        first.settimeout(HEADER_TIMEOUT_S + 10)
        started = time.monotonic()
        assert first.recv(1) == b"", "a silent connection was answered"
        waited = time.monotonic() - started
        assert waited < HEADER_TIMEOUT_S + 5, f"a silent connection was held {waited:.1f} s"
    assert b.proc.poll() is None
    assert "Too many open files" not in b.output()


def test_the_soft_open_files_limit_is_raised_toward_the_hard_one(make_backend) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    want = min(hard if hard != resource.RLIM_INFINITY else 65536, 65536)
    b = start_with_file_limit(make_backend(), FILE_LIMIT, hard)
    assert soft_file_limit(b.proc.pid) == max(FILE_LIMIT, want)
