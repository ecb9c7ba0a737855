"""`python -m backend serve`: bind, write the ready file, serve until told to stop."""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import resource
import secrets
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from . import API_VERSION, __version__, device, logs, pipelines
from .files import atomic_write
from .security import Gate, GateConfig, is_loopback
from .store import DEFAULT_MAX_AWAITING, DamagedStore, JobState, Store
from .worker import Worker

log = logging.getLogger("framesmith.server")

TOKEN_ENV = "FRAMESMITH_TOKEN"
# Exit status when another backend holds the data folder: the add-on's launcher then connects
# to that one (client/launcher.py keeps the same number).
ALREADY_RUNNING_EXIT = 3


PRIVATE_UMASK = 0o077
# Open connections: many idle sockets must neither use up the process's files nor starve the
# clients that send requests. At most MAX_CONNECTIONS (and half the open-files limit) at once;
# past that, the longest-waiting connection that has sent no request is closed to make room,
# and one that has sent no complete request head within HEADER_TIMEOUT_S is closed anyway.
MAX_CONNECTIONS = 512
HEADER_TIMEOUT_S = 5.0
MAX_OPEN_FILES = 65536  # how far the soft open-files limit is raised toward the hard one
DEFAULT_DECODE_BUDGET_MB = 2048
# A job waiting for its inputs keeps an idle-exiting backend up while it got one (or was made)
# this recently: the add-on renders a take for minutes before its last upload, and a Blender
# that died mid-take must not keep the backend up for ever.
AWAITING_KEEPS_ALIVE_S = 3600.0


def make_private(path: Path) -> None:
    """Owner-only access to a folder (0700) or file (0600) made by an older version or by hand."""
    try:
        st = path.stat()
        if st.st_uid == os.getuid() and st.st_mode & 0o077:
            os.chmod(path, 0o700 if path.is_dir() else 0o600)
    except OSError as exc:
        log.warning("could not make %s private to its owner: %s", path, exc)


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "framesmith"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port; 0 picks a free one (default)")
    p.add_argument("--data", type=Path, default=None, help="jobs, database and logs folder")
    p.add_argument("--models", type=Path, default=None, help="models folder (default DATA/models)")
    p.add_argument(
        "--token",
        default=None,
        help=f"bearer token clients must send (default: ${TOKEN_ENV}, else a random one written"
        " to the ready file); required for a non-loopback --host",
    )
    p.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="an extra Host name clients use to reach this server (repeatable)",
    )
    p.add_argument("--ready-file", type=Path, default=None, help="default DATA/backend.json")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--max-upload-mb", type=int, default=512, help="largest single upload")
    p.add_argument("--max-queue", type=int, default=64, help="queued jobs before 429")
    p.add_argument(
        "--max-awaiting",
        type=int,
        default=DEFAULT_MAX_AWAITING,
        help="jobs that may wait for their inputs at once; past it the one idle longest"
        f" expires (default {DEFAULT_MAX_AWAITING})",
    )
    p.add_argument(
        "--decode-budget-mb",
        type=int,
        default=DEFAULT_DECODE_BUDGET_MB,
        help="memory all image decodes in flight may take together; one image may take half"
        f" (default {DEFAULT_DECODE_BUDGET_MB})",
    )
    p.add_argument(
        "--idle-exit",
        type=float,
        default=0,
        metavar="SECONDS",
        help="exit after this long with no request and no queued or running job (0: never);"
        " the add-on's local backend uses it so a closed Blender leaves no server behind",
    )


class ReadyFile:
    """Tells a launcher where we are: pid, port, token. Private to the user (mode 0600)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, info: dict) -> None:
        atomic_write(self.path, json.dumps(info, indent=2).encode())
        os.chmod(self.path, 0o600)

    def remove(self) -> None:
        try:
            if json.loads(self.path.read_text()).get("pid") == os.getpid():
                self.path.unlink()
        except (OSError, ValueError):
            pass


def hold_data_lock(data_dir: Path) -> object:
    """One backend per data folder; the OS drops the lock when the process dies, even by kill -9."""
    lock = open(data_dir / "backend.lock", "a+")  # noqa: SIM115 - held for the process lifetime
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:  # pid and address only: the ready file also holds the token, never printed
            info = json.loads((data_dir / "backend.json").read_text())
            where = f"pid {info.get('pid')} at {info.get('url')}"
        except (OSError, ValueError, AttributeError):
            where = "still starting"
        print(
            f"another Framesmith backend is already running on {data_dir}: {where}",
            file=sys.stderr,
        )
        raise SystemExit(ALREADY_RUNNING_EXIT) from None
    return lock


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


def _exit_when_idle(server, store: Store, gate: GateConfig, idle_s: float) -> None:
    """Exit after idle_s with no authorised request and no work: a queued or running job, or
    one waiting for inputs that got one within AWAITING_KEEPS_ALIVE_S."""
    stop = threading.Event()
    said_waiting = False
    while not stop.wait(min(idle_s, 5.0)):
        if time.monotonic() - gate.last_request < idle_s:
            said_waiting = False
            continue
        if store.count(JobState.RUNNING) + store.count(JobState.QUEUED):
            continue
        waiting = store.count_awaiting_active(time.time() - max(idle_s, AWAITING_KEEPS_ALIVE_S))
        if waiting == 0:
            log.info("idle for %.0f s with no job left: exiting", idle_s)
            server.should_exit = True
            return
        if not said_waiting:
            log.info("idle for %.0f s, but %d job(s) wait for inputs: staying up", idle_s, waiting)
            said_waiting = True


def _exit_quietly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .api import Services, create_app

    # Everything this process creates is private from its first byte: the ready file's temp
    # copy (the token), the database (prompts), logs, job folders and frames (renders).
    os.umask(PRIVATE_UMASK)
    data_dir: Path = (args.data or default_data_dir()).resolve()
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    make_private(data_dir)
    models_dir: Path = (args.models or data_dir / "models").resolve()
    models_dir.mkdir(parents=True, exist_ok=True)
    log_path = logs.setup(data_dir)

    token = args.token or os.environ.get(TOKEN_ENV)
    if not is_loopback(args.host) and not token:
        print(
            f"refusing to listen on {args.host} without a token: anyone on the network could"
            f" drive this machine's GPU. Pass --token or set {TOKEN_ENV}.",
            file=sys.stderr,
        )
        return 2
    if token is not None and len(token) < 16:
        print("the token must be at least 16 characters", file=sys.stderr)
        return 2
    token = token or secrets.token_urlsafe(32)

    if args.decode_budget_mb < 1:
        print("--decode-budget-mb must be at least 1", file=sys.stderr)
        return 2
    from .vision.imageio import set_decode_budget

    set_decode_budget(args.decode_budget_mb * 1024 * 1024)
    _lock = hold_data_lock(data_dir)
    try:
        store = Store(data_dir)
    except DamagedStore as exc:
        print(f"cannot start: {exc}", file=sys.stderr)
        return 2
    worker = Worker(store, "cpu", lambda: services.models())
    services = Services(
        store=store,
        worker=worker,
        models_dir=models_dir,
        max_queue=args.max_queue,
        device="detecting",
        max_awaiting=max(1, args.max_awaiting),
    )
    gate_config = GateConfig(
        token=token,
        bind_host=args.host,
        extra_hosts=tuple(args.allow_host),
        max_upload_bytes=args.max_upload_mb * 1024 * 1024,
    )
    app = Gate(create_app(services), gate_config)

    family = socket.AF_INET6 if ":" in args.host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host.strip("[]"), args.port))
    except OSError as exc:
        print(f"cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    sock.listen(128)
    port = sock.getsockname()[1]
    gate_config.port = port
    gate_config.refresh_hosts()

    def warm_up() -> None:
        try:
            resolved = device.resolve(args.device)
        except SystemExit as exc:
            log.error("%s; falling back to the CPU", exc)
            resolved = "cpu"
        worker.device = resolved
        services.device = device.describe(resolved)
        log.info("device: %s", services.device)
        worker.ready.set()
        for kind in pipelines.kinds():
            pipelines.load(kind)
        try:  # once, here; later only on request (GET /v1/models?rescan=true)
            services.scan_models()
        except Exception:
            log.exception("the models folder could not be scanned")

    worker.start()
    threading.Thread(target=warm_up, name="warm-up", daemon=True).start()

    host_for_url = f"[{args.host}]" if family == socket.AF_INET6 else args.host
    ready = ReadyFile(args.ready_file or data_dir / "backend.json")
    ready.write(
        {
            "pid": os.getpid(),
            "host": args.host,
            "port": port,
            "url": f"http://{host_for_url}:{port}",
            "token": token,
            "version": __version__,
            "api": API_VERSION,
            "data": str(data_dir),
            "models": str(models_dir),
            "log": str(log_path),
            "started_at": time.time(),
        }
    )
    log.info(
        "Framesmith backend %s listening on %s:%d (data %s)", __version__, args.host, port, data_dir
    )
    open_files = raise_open_files_limit()
    max_connections = max(8, min(MAX_CONNECTIONS, open_files // 2))
    log.info("open files limit %d: at most %d connections at once", open_files, max_connections)
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="off",
        http=guarded_http_protocol(max_connections, HEADER_TIMEOUT_S),
        timeout_keep_alive=5,
    )
    server = uvicorn.Server(config)
    if args.idle_exit > 0:
        threading.Thread(
            target=_exit_when_idle,
            args=(server, store, gate_config, args.idle_exit),
            name="idle-exit",
            daemon=True,
        ).start()
    # uvicorn stops gracefully on SIGTERM and then raises it again; under the default handler that
    # would end the process before the clean-up below (worker, ready file, database).
    signal.signal(signal.SIGTERM, _exit_quietly)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        worker.stop()
        ready.remove()
        store.close()
        log.info("backend stopped")
    return 0
