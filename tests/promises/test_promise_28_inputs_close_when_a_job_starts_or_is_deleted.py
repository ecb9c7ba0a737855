"""Promise 28: inputs close when a job starts or is deleted, even mid-upload.

An upload whose request arrived while the job took inputs, but whose body finished after the
job was started (and done) or deleted, is refused with a sentence when its file would be
committed: the finished job's input stays as it was, and a deleted job's folder is not made
again. (`Expect: 100-continue` holds the body until the route is reading it.)
"""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path

from tests.backend.images import png_bytes
from tests.backend.server import Backend, start_and_finish
from tests.promises.support import create_inbetween, square_keys


class HeldUpload:
    """A PUT whose headers are sent now and whose body is sent when asked."""

    def __init__(self, b: Backend, path: str, body: bytes) -> None:
        self.body = body
        self.sock = socket.create_connection(("127.0.0.1", b.info["port"]), timeout=30)
        head = (
            f"PUT {path} HTTP/1.1\r\nHost: {b.host_header}\r\n"
            f"Authorization: Bearer {b.token}\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n"
        )
        self.sock.sendall(head.encode())
        interim = self.sock.recv(1024)  # the route asked for the body: its checks are behind it
        assert interim.startswith(b"HTTP/1.1 100"), interim

    def finish(self) -> tuple[int, str]:
        self.sock.sendall(self.body)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        self.sock.close()
        status = int(answer.split(b" ", 2)[1])
        return status, answer.partition(b"\r\n\r\n")[2].decode()


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_an_upload_that_ends_after_the_start_is_refused(make_backend) -> None:
    b: Backend = make_backend().start()
    keys = square_keys({0: 4.0, 8: 36.0})
    with b.client() as c:
        job = create_inbetween(c, keys, range(9))
        key_file = b.data / "jobs" / job["id"] / "inputs" / "keyframe" / "000000.png"
        before = sha(key_file)
        other = png_bytes(square_keys({0: 30.0})[0])
        held = HeldUpload(b, f"/v1/jobs/{job['id']}/inputs/keyframe/0", other)
        start_and_finish(c, job["id"])
        status, detail = held.finish()
        assert status == 409, (status, detail)
        assert "inputs are closed" in detail and "not saved" in detail
        assert sha(key_file) == before, "a done job's input was replaced"
        assert c.get(f"/v1/jobs/{job['id']}").json()["state"] == "done"
    assert not list((b.data / "jobs").rglob("*.tmp-*")), "the upload left a temp file"


def test_an_upload_that_ends_after_the_delete_leaves_nothing(make_backend) -> None:
    b: Backend = make_backend().start()
    keys = square_keys({0: 4.0, 8: 36.0})
    with b.client() as c:
        job = create_inbetween(c, keys, range(9), upload=False)
        held = HeldUpload(b, f"/v1/jobs/{job['id']}/inputs/keyframe/0", png_bytes(keys[0]))
        assert c.delete(f"/v1/jobs/{job['id']}").status_code == 200
        status, detail = held.finish()
        assert status == 404, (status, detail)
        assert "deleted while this input was being uploaded" in detail
        assert c.get(f"/v1/jobs/{job['id']}").status_code == 404
    leftovers = [p.name for p in (b.data / "jobs").rglob("*") if job["id"] in str(p)]
    assert leftovers == [], f"the deleted job's folder was made again: {leftovers}"
