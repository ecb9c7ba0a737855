"""The gate in front of every route: Host and Origin checks, bearer token, body size bounds.

A pure ASGI middleware wrapped around the whole app, so nothing (not even /openapi.json or a 404)
answers before these checks, and a request body is bounded before anything buffers it.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from starlette.exceptions import HTTPException

from .jobs import Pass
from .vision.image_headers import image_start, not_an_image
from .vision.imageio import label

log = logging.getLogger("framesmith.http")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# A body that is no image is refused once it passes this many bytes. Not at its first chunk: a
# body over the upload limit is refused as such (413), and that limit may be as low as 1 MiB.
SNIFF_GRACE_BYTES = 1024 * 1024
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data", "text/plain")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class GateConfig:
    token: str
    port: int = 0  # set once the socket is bound
    bind_host: str = "127.0.0.1"
    extra_hosts: tuple[str, ...] = ()  # names a proxy or remote client uses to reach us
    max_json_bytes: int = 4 * 1024 * 1024
    max_upload_bytes: int = 512 * 1024 * 1024
    upload_path_prefix: str = "/v1/jobs/"
    upload_path_marker: str = "/inputs/"
    allowed_hosts: set[str] = field(default_factory=set)
    last_request: float = field(default_factory=time.monotonic)  # for the idle exit

    def refresh_hosts(self) -> None:
        bound = self.bind_host.strip("[]")
        if is_loopback(bound):
            # "localhost" and the address we listen on; not the other family's loopback: a Host
            # naming [::1] cannot have reached an IPv4 socket from an honest client.
            names = {"localhost", "127.0.0.1" if bound == "localhost" else bound}
        else:
            names = set()
            if bound not in ("0.0.0.0", "::"):
                names.add(bound)
        names = {f"[{n}]" if ":" in n else n for n in names}
        names.update(self.extra_hosts)
        self.allowed_hosts = {f"{n}:{self.port}".lower() for n in names}

    def body_limit(self, method: str, path: str) -> int:
        if (
            method == "PUT"
            and path.startswith(self.upload_path_prefix)
            and self.upload_path_marker in path
        ):
            return self.max_upload_bytes
        return self.max_json_bytes


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        # Closing the connection stops the client's upload; kept open, the server would have to
        # read (and throw away) the rest of the body.
        super().__init__(
            413,
            f"request body is larger than the limit of {limit} bytes",
            headers={"connection": "close"},
        )


class NotAnImage(HTTPException):
    """An upload whose first bytes are no PNG or OpenEXR: refused before the rest is received."""

    def __init__(self, detail: str) -> None:
        super().__init__(400, detail, headers={"connection": "close"})


class Gate:
    def __init__(self, app: ASGIApp, config: GateConfig) -> None:
        self.app = app
        self.config = config

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":
            await _close_websocket(send)
            return
        started = time.perf_counter()
        status_box = [0]

        async def send_logged(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_box[0] = message["status"]
            await send(message)

        try:
            refusal = self._refusal(scope)
            if refusal is not None:
                status, detail, extra = refusal
                await _send_json(send_logged, status, detail, extra)
                return
            # only a client with the token keeps an idle backend up
            self.config.last_request = time.monotonic()
            limit = self.config.body_limit(scope["method"], scope["path"])
            bounded = _bounded(receive, limit)
            if limit == self.config.max_upload_bytes and scope["method"] == "PUT":
                bounded = _image_sniffing(bounded, scope["path"])
            await self.app(scope, bounded, send_logged)
        finally:
            log.info(
                "%s %s %s %d %.1fms",
                _client(scope),
                printable(str(scope.get("method"))),
                printable(str(scope.get("path"))),
                status_box[0],
                (time.perf_counter() - started) * 1000,
            )

    def _refusal(self, scope: Scope) -> tuple[int, str, dict[str, str]] | None:
        headers = _headers(scope)
        host = headers.get("host", "")
        if host.lower() not in self.config.allowed_hosts:
            expected = sorted(self.config.allowed_hosts)[0] if self.config.allowed_hosts else "?"
            return (
                421,
                f"Host header {host!r} does not name this server (expected e.g. {expected});"
                " if you reach the backend under another name, start it with --allow-host NAME",
                {},
            )
        if "origin" in headers:
            return (
                403,
                "requests from web pages are refused (Origin header present); the backend"
                " serves the Blender add-on and scripts only",
                {},
            )
        site = headers.get("sec-fetch-site")
        if site is not None and site != "none":
            return 403, f"cross-site request refused (Sec-Fetch-Site: {site})", {}
        if scope["method"] in ("POST", "PUT", "PATCH", "DELETE"):
            ctype = headers.get("content-type", "").split(";")[0].strip().lower()
            if ctype in FORM_TYPES:
                return (
                    415,
                    f"content type {ctype!r} is refused; send application/json or raw image bytes",
                    {},
                )
        auth = headers.get("authorization", "")
        scheme, _, presented = auth.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            presented.strip().encode(), self.config.token.encode()
        ):
            return (
                401,
                "missing or wrong token: send 'Authorization: Bearer <token>' with the token"
                " from the backend's ready file or its --token option",
                {"www-authenticate": "Bearer"},
            )
        length = headers.get("content-length")
        limit = self.config.body_limit(scope["method"], scope["path"])
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                return 400, "Content-Length is not a number", {}
            if declared > limit:
                return (
                    413,
                    f"request body of {declared} bytes is over the limit of {limit}",
                    {"connection": "close"},
                )
        return None


def _bounded(receive: Receive, limit: int) -> Receive:
    """Count body bytes as they arrive (chunked or lying Content-Length) and stop at the limit."""
    received = 0

    async def wrapped() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLarge(limit)
        return message

    return wrapped


def _image_sniffing(receive: Receive, path: str) -> Receive:
    """Check an upload's magic bytes as its first bytes arrive: a body that cannot be a PNG or
    OpenEXR is refused once it passes SNIFF_GRACE_BYTES, not after hundreds of MB are buffered.
    A shorter one is left to the route, whose probe refuses it in the same words."""
    head = b""
    received = 0
    verdict: bool | None = None

    async def wrapped() -> Message:
        nonlocal head, received, verdict
        message = await receive()
        if verdict is True or message["type"] != "http.request":
            return message
        body = message.get("body", b"")
        received += len(body)
        if verdict is None:
            head += body[: 8 - len(head)]
            verdict = image_start(head)
        if verdict is False and received > SNIFF_GRACE_BYTES:
            raise NotAnImage(_not_an_image_detail(path, head))
        return message

    return wrapped


def _not_an_image_detail(path: str, head: bytes) -> str:
    """The route's wording, "<pass> frame <n>: the <pass> pass is not a PNG or OpenEXR ..."."""
    parts = path.split("/")  # "", "v1", "jobs", id, "inputs", pass, frame
    pass_name, frame = (parts[5], parts[6]) if len(parts) == 7 else ("upload", "?")
    try:
        what = label(Pass(pass_name))
    except ValueError:
        what = "the upload"
    return f"{pass_name} frame {frame}: {not_an_image(head, what)}"


def printable(text: str, limit: int = 2000) -> str:
    """Text from a request made safe for one log line: control characters (a decoded %0A in a
    path) written as escapes, so a request can never forge a line; long text shortened."""
    out = "".join(
        c if c.isprintable() and c != "\\" else c.encode("unicode_escape").decode("ascii")
        for c in text[:limit]
    )
    return out + ("..." if len(text) > limit else "")


def _headers(scope: Scope) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in scope.get("headers", []):
        name = k.decode("latin-1").lower()
        value = v.decode("latin-1")
        # a repeated Host/Origin/Authorization header is suspicious: keep the first, and make the
        # Host check fail by joining them
        out[name] = f"{out[name]},{value}" if name in out else value
    return out


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "-"


async def _send_json(send: Send, status: int, detail: str, extra: dict[str, str]) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *((k.encode(), v.encode()) for k, v in extra.items()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _close_websocket(send: Send) -> None:
    await send({"type": "websocket.close", "code": 1008})
