"""Pins: the upload limit a backend gets when nobody names one.

Every other upload-limit test passes its own --max-upload-mb, so a default raised a thousandfold
went unseen. Here the default itself is read from the serve command's parser, and a backend
started without the option refuses an upload declared one byte over that default.
"""

from __future__ import annotations

import argparse
import socket

from backend.security import GateConfig
from backend.serve_options import add_arguments
from tests.backend.server import Backend
from tests.promises.support import create_inbetween, square_keys

MIB = 1024 * 1024
DEFAULT_UPLOAD_MB = 512  # README: "--max-upload-mb (default 512)"


def serve_defaults() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args([])


def test_the_serve_command_limits_uploads_to_512_mb_by_default() -> None:
    assert serve_defaults().max_upload_mb == DEFAULT_UPLOAD_MB
    assert GateConfig(token="t").max_upload_bytes == DEFAULT_UPLOAD_MB * MIB


def declared_upload_reply(b: Backend, path: str, declared: int) -> bytes:
    """The reply to a PUT that declares `declared` body bytes and then sends none (the write
    side is closed, so a backend that would wait for the body sees it end instead)."""
    with socket.create_connection(("127.0.0.1", b.info["port"]), timeout=30) as s:
        head = (
            f"PUT {path} HTTP/1.1\r\nHost: {b.host_header}\r\n"
            f"Authorization: Bearer {b.token}\r\nContent-Length: {declared}\r\n\r\n"
        )
        s.sendall(head.encode())
        s.shutdown(socket.SHUT_WR)
        reply = b""
        while part := s.recv(65536):
            reply += part
    return reply


def test_a_backend_started_without_a_limit_refuses_an_upload_over_the_default(
    shared_backend: Backend,
) -> None:
    assert not any("max-upload" in a for a in shared_backend.extra_args)
    with shared_backend.client() as c:
        job = create_inbetween(c, square_keys({0: 4.0, 1: 8.0}), [0, 1], upload=False)
    path = f"/v1/jobs/{job['id']}/inputs/keyframe/0"
    reply = declared_upload_reply(shared_backend, path, DEFAULT_UPLOAD_MB * MIB + 1)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:300]
    assert str(DEFAULT_UPLOAD_MB * MIB).encode() in reply, reply[:300]
