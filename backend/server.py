"""`python -m backend serve`: bind, write the ready file, serve until told to stop."""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import secrets
import signal
import socket
import sys
import threading
import time
from pathlib import Path

from . import API_VERSION, __version__, device, logs, pipelines
from .files import atomic_write
from .security import Gate, GateConfig, is_loopback
from .store import JobState, Store
from .worker import Worker

log = logging.getLogger("framesmith.server")

TOKEN_ENV = "FRAMESMITH_TOKEN"
# Exit status when another backend holds the data folder: the add-on's launcher then connects
# to that one (client/launcher.py keeps the same number).
ALREADY_RUNNING_EXIT = 3


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


def _exit_when_idle(server, store: Store, gate: GateConfig, idle_s: float) -> None:
    stop = threading.Event()
    while not stop.wait(min(idle_s, 5.0)):
        busy = store.count(JobState.RUNNING) + store.count(JobState.QUEUED)
        if busy == 0 and time.monotonic() - gate.last_request >= idle_s:
            log.info("idle for %.0f s with no job left: exiting", idle_s)
            server.should_exit = True
            return


def _exit_quietly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .api import Services, create_app

    data_dir: Path = (args.data or default_data_dir()).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
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

    _lock = hold_data_lock(data_dir)
    store = Store(data_dir)
    worker = Worker(store, "cpu", lambda: services.models())
    services = Services(
        store=store,
        worker=worker,
        models_dir=models_dir,
        max_queue=args.max_queue,
        device="detecting",
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
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off")
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
