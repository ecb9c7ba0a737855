"""The client's side of issue 13: the token never leaves this machine unprotected.

A certificate that is not the pinned one is refused right after the TLS handshake, before a byte
of the request is written (a TLS server of the test's own records what arrives); plain HTTP to
another machine is refused from the URL alone, before anything is looked up or connected.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from client.http import BackendClient, BackendUnreachable, Connection, UnsafeConnection
from tests.backend.certificates import ServerCertificate, self_signed

TOKEN = "t0ken-that-must-never-leak-" + "x" * 12
WRONG = "AB" * 32
ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
    b"Connection: close\r\n\r\n{}"
)


@dataclass
class Recorder:
    """One TLS connection, served on 127.0.0.1: every decrypted byte the client sends is kept,
    and a complete request head is answered with 200 {}."""

    listener: socket.socket
    context: ssl.SSLContext
    received: bytearray = field(default_factory=bytearray)
    thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.listener.getsockname()[1]}"

    def serve_one(self) -> None:
        conn, _ = self.listener.accept()
        conn.settimeout(30)
        try:
            with self.context.wrap_socket(conn, server_side=True) as tls:
                while b"\r\n\r\n" not in self.received:
                    chunk = tls.recv(65536)
                    if not chunk:
                        return
                    self.received += chunk
                tls.sendall(ANSWER)
        except OSError:  # the client hung up mid-handshake or without a TLS goodbye
            return


@contextmanager
def recording_server(cert: ServerCertificate) -> Iterator[Recorder]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert.cert, cert.key)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        recorder = Recorder(listener, context)
        recorder.thread = threading.Thread(target=recorder.serve_one, daemon=True)
        recorder.thread.start()
        yield recorder
        recorder.thread.join(30)
        assert not recorder.thread.is_alive()


def colons(hex_digits: str) -> str:
    return ":".join(hex_digits[i : i + 2] for i in range(0, len(hex_digits), 2))


def test_a_wrong_fingerprint_is_refused_before_any_byte_of_the_token(tmp_path: Path) -> None:
    cert = self_signed(tmp_path)
    with recording_server(cert) as server:
        client = BackendClient(Connection(server.url, TOKEN, timeout=30, fingerprint=WRONG))
        with pytest.raises(UnsafeConnection) as refused:
            client.health()
    said = str(refused.value)
    # Both fingerprints named: the one presented (known only from the handshake) and the pin.
    assert cert.fingerprint in said and colons(WRONG) in said, said
    assert "token was not sent" in said
    assert bytes(server.received) == b"", "request bytes reached the server"


def test_the_pinned_fingerprint_lets_the_request_through(tmp_path: Path) -> None:
    """The recorder does see a request (and its token) when the pin matches, in any spelling."""
    cert = self_signed(tmp_path)
    pasted = cert.fingerprint.replace(":", "").lower()
    with recording_server(cert) as server:
        client = BackendClient(Connection(server.url, TOKEN, timeout=30, fingerprint=pasted))
        assert client.health() == {}
    assert f"Bearer {TOKEN}".encode() in server.received


def test_without_a_pin_an_unknown_certificate_is_refused(tmp_path: Path) -> None:
    cert = self_signed(tmp_path)
    with recording_server(cert) as server, pytest.raises(UnsafeConnection, match="does not trust"):
        BackendClient(Connection(server.url, TOKEN, timeout=30)).health()
    assert bytes(server.received) == b""


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Every name lookup the client makes; each fails, so nothing leaves this machine."""
    seen: list[tuple] = []

    def refuse(*args: object, **kw: object) -> list:
        seen.append(args)
        raise socket.gaierror(socket.EAI_NONAME, "not looked up in this test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return seen


def test_plain_http_to_another_machine_is_refused_from_the_url(lookups: list[tuple]) -> None:
    client = BackendClient(Connection("http://gpu.framesmith.invalid:8765", TOKEN, timeout=5))
    with pytest.raises(UnsafeConnection, match="over plain HTTP") as refused:
        client.health()
    assert "Allow Unencrypted" in str(refused.value)
    assert lookups == [], "the client looked the name up before refusing"


def test_allow_unencrypted_lets_plain_http_go_to_another_machine(lookups: list[tuple]) -> None:
    connection = Connection(
        "http://gpu.framesmith.invalid:8765", TOKEN, timeout=5, allow_unencrypted=True
    )
    with pytest.raises(BackendUnreachable) as failed:
        BackendClient(connection).health()
    assert not isinstance(failed.value, UnsafeConnection)
    assert lookups and lookups[0][0] == "gpu.framesmith.invalid"


@pytest.mark.parametrize("url", ["http://127.0.0.1:9", "http://localhost:9", "http://[::1]:9"])
def test_plain_http_on_this_machine_needs_no_option(url: str, lookups: list[tuple]) -> None:
    with pytest.raises(BackendUnreachable) as failed:
        BackendClient(Connection(url, TOKEN, timeout=5)).health()
    assert not isinstance(failed.value, UnsafeConnection)


def test_a_fingerprint_that_is_not_one_is_named(lookups: list[tuple]) -> None:
    client = BackendClient(Connection("https://gpu.framesmith.invalid", TOKEN, fingerprint="AB:CD"))
    with pytest.raises(UnsafeConnection, match="not a SHA-256 fingerprint"):
        client.health()
    assert lookups == []
