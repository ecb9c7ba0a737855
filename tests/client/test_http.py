"""The add-on's stdlib HTTP client against the real backend process (no bpy needed)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from client.http import (
    API_VERSION,
    BackendClient,
    BackendError,
    BackendUnreachable,
    Connection,
    api_mismatch,
)
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


def test_one_client_serves_many_threads(shared_backend: Backend) -> None:
    client = BackendClient(Connection(shared_backend.url, shared_backend.token))
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: client.health()["api"], range(64)))
    assert answers == [API_VERSION] * 64
    client.close()
    assert client.health()["api"] == API_VERSION  # a closed client opens a new connection


# --- keep-alive connections, against a stand-in server that counts them ----------------------


class StandIn(BaseHTTPRequestHandler):
    """Answers every GET with what it saw; HTTP/1.1, so connections stay open unless `drop`."""

    protocol_version = "HTTP/1.1"
    connections = 0
    drop = False  # close each connection after one answer, without saying so
    barrier: threading.Barrier | None = None  # hold each request until this many are in

    def setup(self) -> None:
        super().setup()
        type(self).connections += 1

    def do_GET(self) -> None:
        together = True
        if self.barrier is not None:
            try:
                self.barrier.wait()
            except threading.BrokenBarrierError:
                together = False
        seen = {"path": self.path, "host": self.headers["Host"], "together": together}
        data = json.dumps(seen).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.close_connection = self.drop

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def stand_in() -> Iterator[str]:
    StandIn.connections, StandIn.drop, StandIn.barrier = 0, False, None
    server = ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def test_requests_reuse_a_connection_and_name_the_host_as_the_url_does(stand_in: str) -> None:
    with BackendClient(Connection(stand_in + "/framesmith/", "t" * 20)) as client:
        seen = [client.health() for _ in range(3)]
    port = stand_in.rsplit(":", 1)[1]
    assert [s["path"] for s in seen] == ["/framesmith/v1/health"] * 3
    assert {s["host"] for s in seen} == {f"127.0.0.1:{port}"}
    assert StandIn.connections == 1


def test_a_connection_idle_too_long_is_not_reused(
    stand_in: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("client.http.IDLE_REUSE_S", 0.0)
    with BackendClient(Connection(stand_in, "t" * 20)) as backend:
        for _ in range(3):
            backend.health()
    assert StandIn.connections == 3


def test_a_connection_the_server_closed_is_replaced_once(stand_in: str) -> None:
    """A backend that restarted, or closed an idle connection: the request goes again on a new
    connection instead of failing."""
    StandIn.drop = True
    with BackendClient(Connection(stand_in, "t" * 20)) as backend:
        assert [backend.health()["path"] for _ in range(3)] == ["/v1/health"] * 3
    assert StandIn.connections == 3


def test_threads_never_share_a_connection(stand_in: str) -> None:
    """Four requests at once from four threads on one client: each on its own connection (the
    stand-in answers none before all four are in)."""
    StandIn.barrier = threading.Barrier(4, timeout=10)
    backend = BackendClient(Connection(stand_in, "t" * 20))
    with ThreadPoolExecutor(4) as pool:
        seen = list(pool.map(lambda _: backend.health(), range(4)))
    backend.close()
    assert all(s["together"] for s in seen), seen
    assert StandIn.connections == 4


def test_a_url_that_is_not_http_is_a_sentence_not_a_crash() -> None:
    for url in ("gpu-box:8000", "ftp://gpu-box", "http://[::1"):
        with pytest.raises(BackendUnreachable, match="not an http:// or https:// address"):
            BackendClient(Connection(url, "t" * 20)).health()


def test_the_api_version_check_says_what_to_do() -> None:
    assert api_mismatch({"api": API_VERSION}, "http://x") is None
    later = api_mismatch({"api": "v2", "version": "2.0.0"}, "http://gpu:8000")
    assert later is not None and later.startswith("the backend at http://gpu:8000 speaks API v2")
    assert f"this add-on speaks {API_VERSION}" in later and "same Framesmith version" in later
    stranger = api_mismatch({"status": "ok"}, "http://gpu:8000")
    assert stranger is not None and "check the backend URL" in stranger
