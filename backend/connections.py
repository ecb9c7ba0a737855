"""Open connections: many idle sockets must neither use up the process's files nor starve the
clients that send requests.

At most MAX_CONNECTIONS (and half the open-files limit) at once; past that, the longest-waiting
connection that has sent no request is closed to make room, and one that has sent no complete
request head within HEADER_TIMEOUT_S is closed anyway.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from typing import Any

try:
    from uvloop import Loop as _BaseLoop
except ImportError:  # uvicorn without uvloop runs asyncio's own loop
    from asyncio import SelectorEventLoop as _BaseLoop  # type: ignore[assignment]

log = logging.getLogger("framesmith.server")

MAX_CONNECTIONS = 512
HEADER_TIMEOUT_S = 5.0
MAX_OPEN_FILES = 65536  # how far the soft open-files limit is raised toward the hard one
# uvicorn's `loop` option for HTTPS: the loop class below, by its import path.
HANDSHAKE_BOUNDED_LOOP = f"{__name__}:HandshakeBoundedLoop"


def raise_open_files_limit() -> int:
    """Raise the soft RLIMIT_NOFILE toward the hard limit (a desktop's default 1024 is low for
    a server); returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = MAX_OPEN_FILES if hard == resource.RLIM_INFINITY else min(hard, MAX_OPEN_FILES)
    if want > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-files limit from %d to %d: %s", soft, want, exc)
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def connection_cap(open_files: int) -> int:
    return max(8, min(MAX_CONNECTIONS, open_files // 2))


def guarded_http_protocol(max_connections: int, header_timeout: float) -> type:
    """uvicorn's HTTP protocol, plus a cap on open connections and a deadline for the first
    request head (uvicorn times out idle keep-alive connections, not silent new ones)."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as Base
    except ImportError:  # uvicorn without httptools
        from uvicorn.protocols.http.h11_impl import H11Protocol as Base  # type: ignore[assignment]
    silent: dict[Any, None] = {}  # connections with no request yet, oldest first

    class Guarded(Base):  # type: ignore[misc, valid-type]
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            silent[self] = None
            self._deadline = self.loop.call_later(header_timeout, self._check_spoke)
            if len(self.connections) > max_connections:
                self._make_room()

        def connection_lost(self, exc: Exception | None) -> None:
            silent.pop(self, None)
            self._deadline.cancel()
            super().connection_lost(exc)

        def _check_spoke(self) -> None:
            silent.pop(self, None)
            if self.cycle is None:
                self._drop()

        def _make_room(self) -> None:
            for conn in list(silent):
                silent.pop(conn, None)
                if conn.cycle is None:
                    conn._drop()
                    return
            self._drop()  # every other connection is busy with a request: refuse this one

        def _drop(self) -> None:
            silent.pop(self, None)
            self.connections.discard(self)  # counted free now, before the loop says it closed
            if not self.transport.is_closing():
                self.transport.close()

    return Guarded


class HandshakeBoundedLoop(_BaseLoop):  # type: ignore[misc, valid-type]
    """uvicorn's event loop (uvloop where installed) whose TLS servers give a client
    HEADER_TIMEOUT_S to finish its handshake, as plain HTTP gives it to send a request head.
    The loop's own default, 60 s, would let silent connections, which the guard above sees only
    once their handshake is done, hold the process's files twelve times as long."""

    async def create_server(self, *args: Any, **kw: Any) -> asyncio.Server:
        if kw.get("ssl") is not None:
            kw.setdefault("ssl_handshake_timeout", HEADER_TIMEOUT_S)
        return await super().create_server(*args, **kw)
