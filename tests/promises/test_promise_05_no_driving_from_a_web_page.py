"""Promise 5: no driving from a web page.

DNS rebinding and cross-site requests are refused even when they carry the right token: a Host
header that does not name this server exactly (foreign, empty, missing, IPv6, port-mangled), any
Origin header (including `Origin: null`), cross-site fetch metadata, and the content types an
HTML form can send without a preflight. A refused request changes nothing.
"""

from __future__ import annotations

import socket

import pytest

from tests.backend.server import Backend

JOB = {"kind": "inbetween", "frames": [0, 1, 2], "keyframes": [0, 2], "width": 64, "height": 48}


def status_of_raw(b: Backend, request_head: str) -> int:
    """Send a hand-written request (for headers an HTTP client library will not send)."""
    with socket.create_connection(("127.0.0.1", b.info["port"]), timeout=30) as s:
        s.sendall(request_head.encode("latin-1"))
        reply = s.recv(4096)
    return int(reply.split(b"\r\n", 1)[0].split()[1])


def bad_hosts(port: int) -> list[str]:
    return [
        "evil.example",
        f"evil.example:{port}",
        f"127.0.0.1.evil.example:{port}",
        f"localhost:{port}@evil.example",
        # IPv6: the server listens on IPv4 loopback only
        f"[::1]:{port}",
        f"[::ffff:127.0.0.1]:{port}",
        f"[0:0:0:0:0:0:0:1]:{port}",
        "[::1]",
        # port-mangled, or an unusual spelling of the address
        "127.0.0.1",
        "localhost",
        f"127.0.0.1:{port + 1}",
        f"127.0.0.1:0{port}",
        f"127.0.0.1:{port}0",
        f"127.0.0.1:+{port}",
        f"127.0.0.1:{port}:{port}",
        f"127.0.0.1.:{port}",
        f"localhost.:{port}",
        f"127.1:{port}",
        f"2130706433:{port}",
        f"0x7f000001:{port}",
    ]


def test_only_this_servers_exact_host_is_accepted(shared_backend: Backend) -> None:
    b = shared_backend
    port = b.info["port"]
    auth = f"Authorization: Bearer {b.token}\r\n"
    with b.client() as c:
        for good in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}"):
            assert c.get("/v1/health", headers={"Host": good}).status_code == 200, good
        for host in bad_hosts(port):
            r = c.get("/v1/health", headers={"Host": host})
            assert r.status_code == 421, (host, r.status_code)
            assert "--allow-host" in r.json()["detail"]
    head = "GET /v1/health HTTP/1.1\r\n{host}" + auth + "Connection: close\r\n\r\n"
    # Malformed at the protocol level: uvicorn's h11 parser refuses these itself (400), its
    # httptools parser lets them reach our gate (421). Either way they never reach a route.
    refused = (400, 421)
    assert status_of_raw(b, head.format(host="")) in refused, "a missing Host"
    assert status_of_raw(b, head.format(host="Host: \r\n")) == 421, "an empty Host"
    two = f"Host: 127.0.0.1:{port}\r\nHost: evil.example\r\n"
    assert status_of_raw(b, head.format(host=two)) in refused, "a second Host"
    http10 = "GET /v1/health HTTP/1.0\r\n" + auth + "\r\n"
    assert status_of_raw(b, http10) == 421, "HTTP/1.0 without Host"


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "null"},
        {"Origin": "http://evil.example"},
        {"Origin": "http://127.0.0.1"},
        {"Origin": ""},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Sec-Fetch-Site": "same-origin"},
        {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"},
    ],
    ids=lambda h: " ".join(f"{k}={v or 'empty'}" for k, v in h.items()),
)
def test_browser_requests_are_refused(shared_backend: Backend, headers: dict[str, str]) -> None:
    with shared_backend.client() as c:
        before = len(c.get("/v1/jobs").json())
        for method, path, body in (
            ("GET", "/v1/health", None),
            ("OPTIONS", "/v1/jobs", None),  # a CORS preflight
            ("POST", "/v1/jobs", JOB),
        ):
            r = c.request(method, path, json=body, headers=headers)
            assert r.status_code == 403, (method, headers, r.status_code)
            assert "access-control-allow-origin" not in r.headers
        assert len(c.get("/v1/jobs").json()) == before, "a refused request created a job"
        # fetch metadata of a request that is not from a web page is fine
        assert c.get("/v1/health", headers={"Sec-Fetch-Site": "none"}).status_code == 200


@pytest.mark.parametrize(
    "content_type",
    [
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "text/plain",
        "text/plain; charset=utf-8",
        "Text/Plain",
        "application/x-www-form-urlencoded ; charset=utf-8",
    ],
)
def test_form_content_types_are_refused(shared_backend: Backend, content_type: str) -> None:
    with shared_backend.client() as c:
        before = len(c.get("/v1/jobs").json())
        job = c.post("/v1/jobs", json=JOB).json()
        cases = (
            ("POST", "/v1/jobs", b'{"kind": "inbetween"}'),
            ("PUT", f"/v1/jobs/{job['id']}/inputs/keyframe/0", b"\x89PNG\r\n\x1a\n"),
            ("POST", f"/v1/jobs/{job['id']}/cancel", b""),
            ("DELETE", f"/v1/jobs/{job['id']}", b""),
        )
        for method, path, body in cases:
            r = c.request(method, path, content=body, headers={"Content-Type": content_type})
            assert r.status_code == 415, (method, path, content_type, r.status_code)
            assert "application/json" in r.json()["detail"]
        after = c.get(f"/v1/jobs/{job['id']}").json()
        assert after["state"] == "awaiting_inputs" and after["missing_inputs"]["keyframe"] == [0, 2]
        assert len(c.get("/v1/jobs").json()) == before + 1
