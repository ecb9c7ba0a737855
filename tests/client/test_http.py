"""The add-on's stdlib HTTP client against the real backend process (no bpy needed)."""

from __future__ import annotations

import socket

import pytest

from client.http import BackendClient, BackendError, BackendUnreachable, Connection
from tests.backend.images import png_bytes, textured_square_scene
from tests.backend.server import Backend


def test_client_drives_a_job(shared_backend: Backend) -> None:
    client = BackendClient(Connection(shared_backend.url, shared_backend.token))
    assert client.health()["api"] == "v1"
    assert "pipelines" in client.models()
    keys = {0: textured_square_scene(48, 32, 4), 2: textured_square_scene(48, 32, 20)}
    body = {
        "kind": "inbetween",
        "frames": [0, 1, 2],
        "keyframes": [0, 2],
        "width": 48,
        "height": 32,
    }
    job = client.create_job(body, idempotency_key="client-test")
    assert client.create_job(body, idempotency_key="client-test")["id"] == job["id"]
    for f, img in keys.items():
        client.upload(job["id"], "keyframe", f, png_bytes(img))
    client.start(job["id"])
    with pytest.raises(BackendError) as err:
        client.output(job["id"], 9)
    assert err.value.status == 404 and "not part of job" in err.value.detail
    assert job["id"] in [j["id"] for j in client.jobs()]


def test_wrong_token_is_a_clear_error(shared_backend: Backend) -> None:
    client = BackendClient(Connection(shared_backend.url, "not-the-token-at-all"))
    with pytest.raises(BackendError) as err:
        client.health()
    assert err.value.status == 401 and "token" in err.value.detail


def test_backend_down_is_a_clear_error_not_a_hang() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = BackendClient(Connection(f"http://127.0.0.1:{port}", "t" * 20, timeout=5))
    with pytest.raises(BackendUnreachable, match="no Framesmith backend answered"):
        client.health()
