"""Promise 8: request bodies are bounded before buffering.

A Content-Length over the limit is answered 413 before a byte of the body is sent; a chunked
body (no Content-Length, so nothing to check up front) is counted as it streams and refused with
413 once it passes the limit, long before the client finishes sending, without the backend's
memory growing by the body's size. Both for image uploads and for JSON requests.
"""

from __future__ import annotations

import socket

from tests.backend.server import Backend
from tests.promises.support import create_inbetween, rss_kb, square_keys

LIMIT_MB = 1
JSON_LIMIT = 4 * 1024 * 1024  # GateConfig.max_json_bytes
CHUNK = 64 * 1024
STREAM_MB = 64  # what the hostile client tries to send


def open_request(b: Backend, method: str, path: str, extra: str) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", b.info["port"]), timeout=30)
    s.sendall(
        (
            f"{method} {path} HTTP/1.1\r\nHost: {b.host_header}\r\n"
            f"Authorization: Bearer {b.token}\r\n{extra}\r\n"
        ).encode()
    )
    return s


def status_line(s: socket.socket) -> tuple[int, bytes]:
    """The reply's status and its bytes (head and, when a Content-Length says so, the body)."""
    reply = b""
    while b"\r\n\r\n" not in reply or len(reply) < _reply_size(reply):
        part = s.recv(65536)
        if not part:
            break
        reply += part
    return int(reply.split(b"\r\n", 1)[0].split()[1]), reply


def _reply_size(reply: bytes) -> int:
    head, _, _ = reply.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(head) + 4 + int(value)
    return len(head) + 4


def stream_chunked(s: socket.socket, total: int) -> int:
    """Send up to `total` bytes as chunks until the server stops taking them; returns bytes sent."""
    sent = 0
    try:
        while sent < total:
            s.sendall(f"{CHUNK:x}\r\n".encode() + b"\0" * CHUNK + b"\r\n")
            sent += CHUNK
        s.sendall(b"0\r\n\r\n")
    except OSError:
        pass  # the server answered and closed the connection: what we want
    return sent


def test_a_declared_oversize_body_is_refused_before_it_is_sent(make_backend) -> None:
    b = make_backend(extra_args=["--max-upload-mb", str(LIMIT_MB)]).start()
    with b.client() as c:
        job = create_inbetween(c, square_keys({0: 4.0, 1: 8.0}), [0, 1], upload=False)
    upload = f"/v1/jobs/{job['id']}/inputs/keyframe/0"
    cases = [
        ("PUT", upload, LIMIT_MB * 1024 * 1024 + 1),
        ("PUT", upload, 10**12),
        ("POST", "/v1/jobs", JSON_LIMIT + 1),
        ("POST", f"/v1/jobs/{job['id']}/start", 10**9),
    ]
    for method, path, declared in cases:
        with open_request(b, method, path, f"Content-Length: {declared}\r\n") as s:
            status, reply = status_line(s)  # no body sent at all: the answer comes first
        assert status == 413, (method, path, declared, reply)
        assert b"limit" in reply
    with open_request(b, "PUT", upload, "Content-Length: lots\r\n") as s:
        assert status_line(s)[0] == 400
    with b.client() as c:
        assert c.get(f"/v1/jobs/{job['id']}").json()["missing_inputs"] == {"keyframe": [0, 1]}


def test_a_chunked_oversize_body_is_cut_off_while_it_streams(make_backend) -> None:
    b = make_backend(extra_args=["--max-upload-mb", str(LIMIT_MB)]).start()
    with b.client() as c:
        job = create_inbetween(c, square_keys({0: 4.0, 1: 8.0}), [0, 1], upload=False)
        assert c.get("/v1/health").status_code == 200  # warm
    upload = f"/v1/jobs/{job['id']}/inputs/keyframe/0"
    rss_before = rss_kb(b.proc.pid)
    total = STREAM_MB * 1024 * 1024
    for path in (upload, "/v1/jobs"):
        ctype = "application/json" if path == "/v1/jobs" else "application/octet-stream"
        extra = f"Transfer-Encoding: chunked\r\nContent-Type: {ctype}\r\n"
        with open_request(b, "PUT" if path == upload else "POST", path, extra) as s:
            sent = stream_chunked(s, total)
            status, reply = status_line(s)
        assert status == 413, (path, reply)
        assert sent < total, f"the backend read all {sent} bytes of {path} before refusing"
    grown_mb = (rss_kb(b.proc.pid) - rss_before) / 1024
    assert grown_mb < 2 * STREAM_MB / 8, f"backend memory grew {grown_mb:.0f} MB"

    # The same through an HTTP client library, and a smuggling-shaped request (both lengths).
    def chunks():
        for _ in range(LIMIT_MB * 16 + 8):
            yield b"\0" * CHUNK

    with b.client() as c:
        assert c.put(upload, content=chunks()).status_code == 413
        assert c.get("/v1/health").status_code == 200
    both = "Content-Length: 100\r\nTransfer-Encoding: chunked\r\n"
    with open_request(b, "PUT", upload, both) as s:
        stream_chunked(s, 4 * LIMIT_MB * 1024 * 1024)
        assert status_line(s)[0] in (400, 413)
    with b.client() as c:
        assert c.get(f"/v1/jobs/{job['id']}").json()["missing_inputs"] == {"keyframe": [0, 1]}
