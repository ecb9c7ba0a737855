"""A small stdlib HTTP client for the backend's v1 API. Blocking: call it from a worker thread."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any


class BackendError(Exception):
    """The backend answered with an error; `detail` is its sentence for the user."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"backend error {status}: {detail}")
        self.status = status
        self.detail = detail


class BackendUnreachable(Exception):
    """No backend answered at the URL (not running, wrong port, network down)."""


@dataclass(frozen=True)
class Connection:
    url: str  # e.g. http://127.0.0.1:8765
    token: str
    timeout: float = 30.0


class BackendClient:
    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self._base = connection.url.rstrip("/")
        # Never route loopback traffic through a system proxy.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    # --- routes ------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return self._json("GET", "/v1/health")

    def models(self) -> dict[str, Any]:
        return self._json("GET", "/v1/models")

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
        all_headers = {"Authorization": f"Bearer {self.connection.token}", **(headers or {})}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            all_headers["Content-Type"] = "application/json"
        elif raw is not None:
            data = raw
            all_headers["Content-Type"] = "application/octet-stream"
        req = urllib.request.Request(
            self._base + path, data=data, method=method, headers=all_headers
        )
        try:
            with self._opener.open(req, timeout=self.connection.timeout) as resp:
                return resp.read()
        except urllib.error.HTTPError as exc:
            raise BackendError(exc.code, _detail(exc)) from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise BackendUnreachable(
                f"no Framesmith backend answered at {self._base} ({reason}); start it from the"
                " add-on preferences or check the URL"
            ) from None


def _seg(value: str) -> str:
    return urllib.parse.quote(str(value), safe="")


def _detail(exc: urllib.error.HTTPError) -> str:
    try:
        payload = json.loads(exc.read() or b"{}")
    except ValueError:
        return exc.reason or f"HTTP {exc.code}"
    detail = payload.get("detail") if isinstance(payload, dict) else None
    return str(detail) if detail else f"HTTP {exc.code}"
