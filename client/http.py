"""A small stdlib HTTP client for the backend's v1 API. Blocking: call it from a worker thread.

One client may serve several threads at once: each request borrows a keep-alive connection to
itself from the client's pool (an http.client connection is not thread-safe) and gives it back
once the answer is read, so a thread never shares a connection with another.
"""

from __future__ import annotations

import http.client
import json
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

from .tls import (
    CertificateMismatch,
    PinnedHTTPSConnection,
    is_loopback_host,
    pinned_context,
    pinned_fingerprint,
    trust_store_context,
)

API_VERSION = "v1"  # the backend API this client speaks: `api` in GET /v1/health

# The backend (uvicorn) closes a keep-alive connection after 5 s idle; one idle for longer than
# this is not reused, so a request rarely meets a connection the server is just closing.
IDLE_REUSE_S = 2.0
MAX_IDLE = 8  # idle connections a client keeps


class BackendError(Exception):
    """The backend answered with an error; `detail` is its sentence for the user."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"backend error {status}: {detail}")
        self.status = status
        self.detail = detail


class BackendUnreachable(Exception):
    """No backend answered at the URL (not running, wrong port, network down)."""


class UnsafeConnection(BackendUnreachable):
    """The client would not send the token this way (plain HTTP across a network, a
    certificate that is not the pinned or a trusted one); nothing of the request was sent."""


@dataclass(frozen=True)
class Connection:
    url: str  # e.g. http://127.0.0.1:8765
    token: str
    timeout: float = 30.0
    # An https:// backend with a self-signed certificate: its SHA-256 fingerprint (AB:CD:...),
    # trusted instead of the system's certificate authorities.
    fingerprint: str = ""
    # Send the token over plain http:// to an address off this machine (readable on the way).
    allow_unencrypted: bool = False


@dataclass(frozen=True)
class _Target:
    https: bool
    host: str
    port: int | None
    host_header: str  # as the URL spells it, port included: the backend checks it
    prefix: str  # a path before /v1 (a backend behind a reverse proxy)


@dataclass
class _Idle:
    conn: http.client.HTTPConnection
    since: float


def api_mismatch(health: Any, url: str = "") -> str | None:
    """None when a GET /v1/health answer speaks this client's API; else what to do about it."""
    theirs = health.get("api") if isinstance(health, dict) else None
    if theirs == API_VERSION:
        return None
    where = f" at {url}" if url else ""
    if not theirs:
        return (
            f"the server{where} does not say which Framesmith API it speaks: check the backend"
            " URL in the add-on preferences"
        )
    return (
        f"the backend{where} speaks API {theirs} (Framesmith {health.get('version', '?')}) and"
        f" this add-on speaks {API_VERSION}: use an add-on and a backend of the same Framesmith"
        " version (after updating the add-on, stop a local backend in the Backend panel so that"
        " the new one starts)"
    )


class BackendClient:
    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self._base = connection.url.rstrip("/")
        self._target = _target(self._base)
        self._lock = threading.Lock()
        self._idle: list[_Idle] = []
        self._generation = 0  # close() bumps it: connections lent before are not taken back
        self._tls: ssl.SSLContext | None = None

    def __enter__(self) -> BackendClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- routes ------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return self._json("GET", "/v1/health")

    def models(self, rescan: bool = False) -> dict[str, Any]:
        """What the backend's last scan of its models folder found; `rescan`: scan it again
        first (after the user added models: the backend never rescans on its own)."""
        return self._json("GET", "/v1/models?rescan=true" if rescan else "/v1/models")

    def check_job(self, body: dict[str, Any]) -> dict[str, Any]:
        """Whether the backend could run a job created with `body`: {"ok", "problems"}."""
        return self._json("POST", "/v1/jobs/check", body=body)

    def create_job(self, body: dict[str, Any], idempotency_key: str | None = None) -> dict:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._json("POST", "/v1/jobs", body=body, headers=headers)

    def upload(self, job_id: str, pass_name: str, frame: int, data: bytes) -> dict[str, Any]:
        path = f"/v1/jobs/{_seg(job_id)}/inputs/{_seg(pass_name)}/{int(frame)}"
        return self._json("PUT", path, raw=data)

    def start(self, job_id: str) -> dict[str, Any]:
        return self._json("POST", f"/v1/jobs/{_seg(job_id)}/start")

    def job(self, job_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/jobs/{_seg(job_id)}")

    def output(self, job_id: str, frame: int) -> bytes:
        return self._request("GET", f"/v1/jobs/{_seg(job_id)}/outputs/{int(frame)}")

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._json("POST", f"/v1/jobs/{_seg(job_id)}/cancel")

    def jobs(self, limit: int = 100) -> list[dict[str, Any]]:
        return self._json("GET", f"/v1/jobs?limit={int(limit)}")

    def delete(self, job_id: str) -> dict[str, Any]:
        return self._json("DELETE", f"/v1/jobs/{_seg(job_id)}")

    def catalogue(self) -> dict[str, Any]:
        """The models the backend can download: {"models": [entry + "installed", ...]}."""
        return self._json("GET", "/v1/catalogue")

    def start_download(self, name: str) -> dict[str, Any]:
        return self._json("POST", "/v1/downloads", body={"name": name})

    def download(self, download_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/downloads/{_seg(download_id)}")

    def cancel_download(self, download_id: str) -> dict[str, Any]:
        return self._json("POST", f"/v1/downloads/{_seg(download_id)}/cancel")

    def close(self) -> None:
        """Close the idle connections (one still in use closes when its request ends). The
        client stays usable: a later request opens a new connection."""
        with self._lock:
            idle, self._idle = self._idle, []
            self._generation += 1
        for held in idle:
            held.conn.close()

    # --- plumbing ----------------------------------------------------------------------------

    def _json(self, method: str, path: str, **kw: Any) -> Any:
        return json.loads(self._request(method, path, **kw) or b"null")

    def _request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> bytes:
        target = self._target
        if target is None:
            raise BackendUnreachable(
                f"the backend URL {self._base!r} is not an http:// or https:// address; set it"
                " in the add-on preferences"
            )
        self._refuse_unsafe(target)
        all_headers = {
            "Host": target.host_header,
            "Authorization": f"Bearer {self.connection.token}",
            **(headers or {}),
        }
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            all_headers["Content-Type"] = "application/json"
        elif raw is not None:
            data = raw
            all_headers["Content-Type"] = "application/octet-stream"
        status, reason, payload = self._exchange(method, target.prefix + path, data, all_headers)
        if 300 <= status < 400:
            raise BackendError(
                status,
                f"the backend URL {self._base} redirects elsewhere; set the address it"
                " redirects to in the add-on preferences",
            )
        if status >= 400:
            raise BackendError(status, _detail(status, reason, payload))
        return payload

    def _exchange(
        self, method: str, path: str, data: bytes | None, headers: dict[str, str]
    ) -> tuple[int, str, bytes]:
        """One request on a connection of its own; (status, reason, body)."""
        for attempt in (1, 2):
            conn, generation, reused = self._borrow()
            try:
                conn.request(method, path, body=data, headers=headers)
                response = conn.getresponse()
                payload = response.read()
            except CertificateMismatch as exc:
                raise UnsafeConnection(str(exc)) from None
            except ssl.SSLCertVerificationError as exc:
                conn.close()
                raise UnsafeConnection(_untrusted(self._base, exc)) from None
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                if reused and attempt == 1 and isinstance(exc, ConnectionError):
                    continue  # the server closed it while it sat idle: again, on a new one
                reason = str(exc) or type(exc).__name__
                raise BackendUnreachable(
                    f"no Framesmith backend answered at {self._base} ({reason}); start it from"
                    " the add-on preferences or check the URL"
                ) from None
            self._give_back(conn, generation, response.will_close)
            return response.status, response.reason, payload
        raise AssertionError("unreachable")

    def _borrow(self) -> tuple[http.client.HTTPConnection, int, bool]:
        """A connection no other request is using (an idle one, else a new one), the pool's
        generation, and whether the connection was used before."""
        now = time.monotonic()
        with self._lock:
            generation = self._generation
            if self._idle and now - self._idle[-1].since < IDLE_REUSE_S:
                return self._idle.pop().conn, generation, True
            stale, self._idle = self._idle, []  # the newest is too old: so are the others
        for held in stale:
            held.conn.close()
        return self._open(), generation, False

    def _give_back(self, conn: http.client.HTTPConnection, generation: int, closing: bool) -> None:
        if not closing:
            with self._lock:
                if generation == self._generation and len(self._idle) < MAX_IDLE:
                    self._idle.append(_Idle(conn, time.monotonic()))
                    return
        conn.close()

    def _open(self) -> http.client.HTTPConnection:
        target = self._target
        assert target is not None
        timeout = self.connection.timeout
        if not target.https:
            return http.client.HTTPConnection(target.host, target.port, timeout=timeout)
        pin = self.connection.fingerprint.strip()
        with self._lock:
            if self._tls is None:
                self._tls = pinned_context() if pin else trust_store_context()
            tls = self._tls
        if pin:
            return PinnedHTTPSConnection(
                target.host,
                target.port,
                fingerprint=pinned_fingerprint(pin),
                context=tls,
                timeout=timeout,
            )
        return http.client.HTTPSConnection(target.host, target.port, timeout=timeout, context=tls)

    def _refuse_unsafe(self, target: _Target) -> None:
        """Decided from the URL and the options alone, before any connection is opened."""
        if not target.https:
            if self.connection.allow_unencrypted or is_loopback_host(target.host):
                return
            raise UnsafeConnection(
                f"refusing to send the token to {self._base} over plain HTTP: anyone on the"
                " network between here and there could read it and then drive the backend. Serve"
                " the backend over HTTPS (serve --tls-cert/--tls-key or --tls-self-signed) and"
                " use an https:// URL, or tick Allow Unencrypted (unsafe) in the preferences"
            )
        if self.connection.fingerprint.strip():
            try:
                pinned_fingerprint(self.connection.fingerprint)
            except ValueError as exc:
                raise UnsafeConnection(
                    f"the backend's certificate fingerprint in the preferences is wrong: {exc}"
                ) from None


def _target(url: str) -> _Target | None:
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return _Target(
        https=parts.scheme == "https",
        host=parts.hostname,
        port=port,
        host_header=parts.netloc.rpartition("@")[2],
        prefix=parts.path,
    )


def _untrusted(url: str, exc: ssl.SSLCertVerificationError) -> str:
    return (
        f"the backend at {url} presented a certificate this system does not trust"
        f" ({exc.verify_message or exc.reason}); the token was not sent. For a backend with a"
        " self-signed certificate (serve --tls-self-signed), paste the SHA-256 fingerprint it"
        " printed at start into the add-on preferences"
    )


def _seg(value: str) -> str:
    return urllib.parse.quote(str(value), safe="")


def _detail(status: int, reason: str, payload: bytes) -> str:
    try:
        answer = json.loads(payload or b"{}")
    except ValueError:
        return reason or f"HTTP {status}"
    detail = answer.get("detail") if isinstance(answer, dict) else None
    return str(detail) if detail else f"HTTP {status}"
