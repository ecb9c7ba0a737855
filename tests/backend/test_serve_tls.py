"""The backend over HTTPS (issue 13): a real backend process on 127.0.0.1 with a certificate the
test made, driven by the add-on's client; and the start-up rules that keep the token off a
network in the clear."""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backend.connections import HEADER_TIMEOUT_S
from backend.serve_options import TOKEN_ENV
from client.backend import BackendConfig, BackendMode, connect
from client.http import BackendClient, Connection, UnsafeConnection
from client.launcher import find_running
from tests.backend.certificates import fingerprint, self_signed, signed_by_test_authority
from tests.backend.images import png_bytes, png_pixels, textured_square_scene
from tests.backend.server import REPO, Backend

TOKEN = "a-token-for-the-network-" + "x" * 16
W, H = 48, 32
SELF_SIGNED_NOTE = "its SHA-256 fingerprint: "


def run_flow_job(client: BackendClient) -> None:
    """An in-between (flow) job from two keyframes, through every route a take uses."""
    keys = {0: textured_square_scene(W, H, 4), 2: textured_square_scene(W, H, 20)}
    body = {"kind": "inbetween", "frames": [0, 1, 2], "keyframes": [0, 2], "width": W, "height": H}
    assert client.check_job(body) == {"ok": True, "problems": []}
    job = client.create_job(body, idempotency_key="over-tls")
    for frame, image in keys.items():
        client.upload(job["id"], "keyframe", frame, png_bytes(image))
    client.start(job["id"])
    deadline = time.monotonic() + 120
    while (job := client.job(job["id"]))["state"] not in ("done", "failed", "canceled"):
        assert time.monotonic() < deadline, job
        time.sleep(0.05)  # polling the job as the add-on does, with a deadline
    assert job["state"] == "done", job
    for frame in job["frames"]:
        assert png_pixels(client.output(job["id"], frame)).shape[:2] == (H, W)


def test_a_job_runs_end_to_end_over_https_with_a_pinned_certificate(
    make_backend, tmp_path: Path
) -> None:
    cert = self_signed(tmp_path / "certs")
    b: Backend = make_backend(
        extra_args=["--tls-cert", str(cert.cert), "--tls-key", str(cert.key)]
    ).start()
    assert b.url.startswith("https://127.0.0.1:") and b.info["fingerprint"] == cert.fingerprint
    remote = BackendConfig(
        mode=BackendMode.REMOTE,
        root=REPO,
        data_dir=tmp_path,
        models_dir=tmp_path,
        url=b.url,
        token=b.token,
        fingerprint=cert.fingerprint.replace(":", " ").lower(),  # pasted in another spelling
    )
    run_flow_job(BackendClient(connect(remote)))
    other = self_signed(tmp_path / "other", "someone-else")
    with pytest.raises(UnsafeConnection) as refused:
        BackendClient(Connection(b.url, b.token, fingerprint=other.fingerprint)).health()
    assert cert.fingerprint in str(refused.value) and other.fingerprint in str(refused.value)


def test_https_is_verified_against_the_systems_trust_store(
    make_backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert = signed_by_test_authority(tmp_path / "certs")
    b: Backend = make_backend(
        extra_args=["--tls-cert", str(cert.cert), "--tls-key", str(cert.key)]
    ).start()
    with pytest.raises(UnsafeConnection, match="does not trust"):
        BackendClient(Connection(b.url, b.token)).health()
    assert cert.authority is not None
    monkeypatch.setenv("SSL_CERT_FILE", str(cert.authority))  # the test CA joins the store
    assert BackendClient(Connection(b.url, b.token)).health()["api"] == "v1"
    localhost = b.url.replace("127.0.0.1", "localhost")  # the certificate's other name
    assert BackendClient(Connection(localhost, b.token)).health()["api"] == "v1"


def test_a_silent_connection_gets_no_longer_for_its_handshake_than_for_a_request(
    make_backend, tmp_path: Path
) -> None:
    """Promise 19 over TLS: a connection that never starts its handshake is closed as soon as a
    plain-HTTP one that sends no request (not after the event loop's own 60 s)."""
    cert = self_signed(tmp_path / "certs")
    b: Backend = make_backend(
        extra_args=["--tls-cert", str(cert.cert), "--tls-key", str(cert.key)]
    ).start()
    with socket.create_connection(("127.0.0.1", b.info["port"]), timeout=60) as silent:
        started = time.monotonic()
        with contextlib.suppress(ConnectionResetError):  # closed with a reset: as closed
            assert silent.recv(1) == b""
        held = time.monotonic() - started
    assert held < HEADER_TIMEOUT_S + 5, f"a silent TLS connection was held {held:.1f} s"


def serve(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, TOKEN_ENV: TOKEN}
    return subprocess.run(
        [sys.executable, "-m", "backend", "serve", "--data", str(tmp_path / "data"), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_plain_http_on_a_network_address_refuses_to_start(tmp_path: Path, host: str) -> None:
    r = serve(tmp_path, "--host", host, "--port", "0")
    assert r.returncode == 2, r.stderr
    assert f"refusing to serve plain HTTP on {host}" in r.stderr
    assert "--tls-self-signed" in r.stderr and "--insecure-http" in r.stderr
    assert not (tmp_path / "data" / "backend.json").exists()


def test_insecure_http_starts_and_says_why_at_every_start(make_backend) -> None:
    b: Backend = make_backend(
        extra_args=["--host", "0.0.0.0", "--insecure-http"], env={TOKEN_ENV: TOKEN}
    )
    for _ in range(2):
        b.start()
        assert b.url.startswith("http://") and b.info["fingerprint"] is None
        b.stop()
    warning = "serving plain HTTP on 0.0.0.0 (--insecure-http): anyone who can watch"
    assert b.output().count(warning) == 2, b.output()
    assert "read the token" in b.output()


def test_a_loopback_backend_serves_plain_http_without_a_warning(shared_backend: Backend) -> None:
    assert shared_backend.url.startswith("http://127.0.0.1:")
    assert "plain HTTP" not in shared_backend.output()


def test_the_self_signed_certificate_is_printed_private_and_reused(make_backend) -> None:
    b: Backend = make_backend(extra_args=["--tls-self-signed", "--allow-host", "gpu.example"])
    b.start()
    pem = b.data / "tls" / "self-signed.pem"
    made = b.info["fingerprint"]
    assert made == fingerprint(pem) and f"{SELF_SIGNED_NOTE}{made}" in b.output()
    assert stat.S_IMODE(pem.stat().st_mode) == 0o600
    assert stat.S_IMODE(pem.parent.stat().st_mode) == 0o700
    names = subprocess.run(
        ["openssl", "x509", "-in", str(pem), "-noout", "-ext", "subjectAltName"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "DNS:gpu.example" in names and "IP Address:127.0.0.1" in names, names
    assert BackendClient(Connection(b.url, b.token, fingerprint=made)).health()["api"] == "v1"
    running = find_running(b.data)  # a launcher on this machine, from the ready file alone
    assert running is not None and running.connection.fingerprint == made
    kept = (pem.read_bytes(), pem.stat().st_ino)

    b.stop()
    b.start()
    assert b.info["fingerprint"] == made
    assert (pem.read_bytes(), pem.stat().st_ino) == kept
    assert b.output().count(f"{SELF_SIGNED_NOTE}{made}") == 2

    b.stop()
    b.extra_args += ["--allow-host", "render.example"]  # a name the certificate lacks
    b.start()
    assert b.info["fingerprint"] != made and fingerprint(pem) == b.info["fingerprint"]
    assert "does not name all of" in b.output()


def test_tls_options_that_cannot_work_refuse_to_start(tmp_path: Path) -> None:
    one, two = self_signed(tmp_path / "one", "one"), self_signed(tmp_path / "two", "two")
    cases = {
        "go together": ["--tls-cert", str(one.cert)],
        "makes its own certificate": [
            "--tls-self-signed", "--tls-cert", str(one.cert), "--tls-key", str(one.key),
        ],
        "contradicts": ["--tls-self-signed", "--insecure-http"],
        "cannot serve HTTPS with the certificate": [
            "--tls-cert", str(one.cert), "--tls-key", str(two.key),
        ],
    }  # fmt: skip
    for said, args in cases.items():
        r = serve(tmp_path, "--port", "0", *args)
        assert r.returncode == 2 and said in r.stderr, (args, r.stderr)
