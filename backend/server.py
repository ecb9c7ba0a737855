"""`python -m backend serve`: bind, write the ready file, serve until told to stop."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import secrets
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import uvicorn

from . import API_VERSION, __version__, device, logs, pipelines
from .api.app import create_app
from .api.services import Services
from .cluster.options import BadClusterOption, parse_cluster
from .cluster.runner import ClusterUnavailable, ClusterWorker
from .connections import (
    HANDSHAKE_BOUNDED_LOOP,
    HEADER_TIMEOUT_S,
    connection_cap,
    guarded_http_protocol,
    raise_open_files_limit,
)
from .data_folder import (
    PRIVATE_UMASK,
    READY_FILE,
    ReadyFile,
    default_data_dir,
    hold_data_lock,
    make_private,
)
from .downloads import open_downloads
from .models.catalogue import CatalogueError
from .security import ASGIApp, Gate, GateConfig, is_loopback
from .serve_options import TOKEN_ENV
from .store import JobState, Store
from .store_schema import DamagedStore
from .tls import TlsError, TlsFiles, certificate_names, given_pair, self_signed
from .vision.imageio import set_decode_budget
from .worker import Worker

log = logging.getLogger("framesmith.server")

# A job waiting for its inputs keeps an idle-exiting backend up while it got one (or was made)
# this recently: the add-on renders a take for minutes before its last upload, and a Blender
# that died mid-take must not keep the backend up for ever.
AWAITING_KEEPS_ALIVE_S = 3600.0
TLS_DIR = "tls"  # in the data folder: the self-signed certificate and its key


class CannotStart(Exception):
    """serve stops before it listens; the message says why (printed, exit status 2)."""


@dataclass(frozen=True)
class Folders:
    data: Path
    models: Path
    log: Path


def prepare_folders(args: argparse.Namespace) -> Folders:
    data_dir: Path = (args.data or default_data_dir()).resolve()
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    make_private(data_dir)
    models_dir: Path = (args.models or data_dir / "models").resolve()
    models_dir.mkdir(parents=True, exist_ok=True)
    return Folders(data_dir, models_dir, logs.setup(data_dir))


def choose_token(host: str, given: str | None) -> str:
    """The token clients must send: --token, else $FRAMESMITH_TOKEN, else a random one (only
    on a loopback address: one reachable from the network needs a token its users know)."""
    token = given or os.environ.get(TOKEN_ENV)
    if not is_loopback(host) and not token:
        raise CannotStart(
            f"refusing to listen on {host} without a token: anyone on the network could"
            f" drive this machine's GPU. Pass --token or set {TOKEN_ENV}."
        )
    if token is not None and len(token) < 16:
        raise CannotStart("the token must be at least 16 characters")
    return token or secrets.token_urlsafe(32)


def build_services(args: argparse.Namespace, folders: Folders) -> Services:
    """The store and worker the routes share (the worker is started by serve)."""
    try:
        store = Store(folders.data)
    except DamagedStore as exc:
        raise CannotStart(f"cannot start: {exc}") from exc
    worker = Worker(store, "cpu", lambda: services.models())
    services = Services(
        store=store,
        worker=worker,
        models_dir=folders.models,
        max_queue=args.max_queue,
        device="detecting",
        max_awaiting=max(1, args.max_awaiting),
        extra_models=extra_model_folders(args.extra_models),
    )
    try:
        services.downloads = open_downloads(
            args.catalogue, folders.models, folders.data, services.scan_models
        )
    except CatalogueError as exc:
        raise CannotStart(f"cannot start: {exc}") from exc
    return services


def extra_model_folders(given: list[Path]) -> tuple[Path, ...]:
    """--extra-models folders, resolved; one missing now is scanned when it appears (a drive
    not plugged in must not stop the backend)."""
    folders = tuple(p.expanduser().resolve() for p in given)
    for folder in folders:
        if not folder.is_dir():
            log.warning("extra models folder %s is not there (yet): it is skipped", folder)
    return folders


def transport_problem(args: argparse.Namespace) -> str | None:
    """Why the TLS options cannot serve as given, or None. Plain HTTP on a network address is
    one such reason unless --insecure-http says the user accepts it."""
    given = args.tls_cert is not None or args.tls_key is not None
    if given and (args.tls_cert is None or args.tls_key is None):
        return "--tls-cert and --tls-key go together: pass the certificate and its key"
    if given and args.tls_self_signed:
        return "--tls-self-signed makes its own certificate: leave out --tls-cert and --tls-key"
    tls = given or args.tls_self_signed
    if tls and args.insecure_http:
        return "--insecure-http contradicts the TLS options: leave it out to serve HTTPS"
    if not tls and not is_loopback(args.host) and not args.insecure_http:
        return (
            f"refusing to serve plain HTTP on {args.host}: the token, every render and every"
            " result would cross the network readable by anyone on it, who could then drive"
            " this backend. Serve HTTPS with --tls-cert FILE --tls-key FILE or with"
            " --tls-self-signed, or pass --insecure-http to accept that risk"
        )
    return None


def tls_files(args: argparse.Namespace, data_dir: Path) -> TlsFiles | None:
    """The certificate to serve with (made or checked now), or None for plain HTTP."""
    try:
        if args.tls_cert is not None:
            return given_pair(args.tls_cert, args.tls_key)
        if args.tls_self_signed:
            names = certificate_names(args.host, args.allow_host)
            return self_signed(data_dir / TLS_DIR, names)
    except TlsError as exc:
        raise CannotStart(str(exc)) from exc
    return None


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: a free one)."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise CannotStart(f"cannot listen on {host}:{port}: {exc}") from exc
    sock.listen(128)
    return sock


@dataclass
class Listening:
    """What serve set up before it answers: the bound socket and what the app runs on."""

    services: Services
    gate: GateConfig
    sock: socket.socket
    tls: TlsFiles | None
    lock: TextIO  # the data folder's lock, held while the process runs


def set_up(args: argparse.Namespace, folders: Folders) -> Listening:
    """Everything that may refuse to start (CannotStart), in the order the user hears of it."""
    token = choose_token(args.host, args.token)
    problem = transport_problem(args)
    if problem is not None:
        raise CannotStart(problem)
    if args.decode_budget_mb < 1:
        raise CannotStart("--decode-budget-mb must be at least 1")
    set_decode_budget(args.decode_budget_mb * 1024 * 1024)
    lock = hold_data_lock(folders.data)
    tls = tls_files(args, folders.data)
    services = build_services(args, folders)
    gate = GateConfig(
        token=token,
        bind_host=args.host,
        extra_hosts=tuple(args.allow_host),
        max_upload_bytes=args.max_upload_mb * 1024 * 1024,
    )
    sock = bind_socket(args.host, args.port)
    gate.port = sock.getsockname()[1]
    gate.refresh_hosts()
    join_cluster(args, services, folders)
    return Listening(services, gate, sock, tls, lock)


def join_cluster(args: argparse.Namespace, services: Services, folders: Folders) -> None:
    """--ray: jobs run on a Ray cluster, started or joined now; without it, nothing changes."""
    if args.ray is None:
        return
    try:
        spec = parse_cluster(args.ray, args.ray_threads)
        cluster = ClusterWorker(
            services.store, spec, folders.models, args.device, services.extra_models
        )
        cluster.connect()
    except (BadClusterOption, ClusterUnavailable) as exc:
        raise CannotStart(str(exc)) from exc
    services.worker = cluster


def write_ready_file(path: Path, host: str, at: Listening, folders: Folders) -> ReadyFile:
    host_for_url = f"[{host}]" if at.sock.family == socket.AF_INET6 else host
    ready = ReadyFile(path)
    ready.write(
        {
            "pid": os.getpid(),
            "host": host,
            "port": at.gate.port,
            "url": f"{'https' if at.tls else 'http'}://{host_for_url}:{at.gate.port}",
            "token": at.gate.token,
            "fingerprint": at.tls.fingerprint if at.tls else None,
            "version": __version__,
            "api": API_VERSION,
            "data": str(folders.data),
            "models": str(folders.models),
            "log": str(folders.log),
            "started_at": time.time(),
        }
    )
    return ready


def warm_up(services: Services, requested_device: str) -> None:
    """Pick the device, import the pipelines and scan the models folder, off the request path."""
    try:
        resolved = device.resolve(requested_device)
    except SystemExit as exc:
        log.error("%s; falling back to the CPU", exc)
        resolved = "cpu"
    services.worker.device = resolved
    services.device = device.describe(resolved)
    log.info("device: %s", services.device)
    services.worker.ready.set()
    for kind in pipelines.kinds():
        pipelines.load(kind)
    try:  # once, here; later only on request (GET /v1/models?rescan=true)
        services.scan_models()
    except Exception:
        log.exception("the models folder could not be scanned")


def say_how_it_is_reached(args: argparse.Namespace, at: Listening) -> None:
    if at.tls is not None:
        log.info(
            "serving HTTPS with %s certificate %s; its SHA-256 fingerprint: %s",
            "the self-signed" if at.tls.self_signed else "the",
            at.tls.cert,
            at.tls.fingerprint,
        )
    elif not is_loopback(args.host):
        log.warning(
            "serving plain HTTP on %s (--insecure-http): anyone who can watch this network can"
            " read the token, every render and every result, and then drive this backend with"
            " the token; serve HTTPS (--tls-cert/--tls-key or --tls-self-signed) unless a TLS"
            " proxy or a network you trust carries the traffic",
            args.host,
        )


def serve(args: argparse.Namespace) -> int:
    # Everything this process creates is private from its first byte: the ready file's temp
    # copy (the token), the database (prompts), logs, job folders and frames (renders).
    os.umask(PRIVATE_UMASK)
    folders = prepare_folders(args)
    try:
        at = set_up(args, folders)
    except CannotStart as exc:
        print(exc, file=sys.stderr)
        return 2
    server = uvicorn_server(Gate(create_app(at.services), at.gate), at.tls)
    at.services.worker.start()
    threading.Thread(
        target=warm_up, args=(at.services, args.device), name="warm-up", daemon=True
    ).start()
    say_how_it_is_reached(args, at)
    ready = write_ready_file(args.ready_file or folders.data / READY_FILE, args.host, at, folders)
    log.info(
        "Framesmith backend %s listening on %s:%d (data %s)",
        __version__,
        args.host,
        at.gate.port,
        folders.data,
    )
    try:
        run(server, at, args.idle_exit)
    finally:
        at.services.worker.stop()
        ready.remove()
        at.services.store.close()
        log.info("backend stopped")
    return 0


def uvicorn_server(app: ASGIApp, tls: TlsFiles | None) -> uvicorn.Server:
    """uvicorn with the connection guard (sized by the open-files limit, raised first) and,
    with a certificate, its own TLS."""
    open_files = raise_open_files_limit()
    max_connections = connection_cap(open_files)
    log.info("open files limit %d: at most %d connections at once", open_files, max_connections)
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="off",
        http=guarded_http_protocol(max_connections, HEADER_TIMEOUT_S),
        timeout_keep_alive=5,
        loop=HANDSHAKE_BOUNDED_LOOP if tls else "auto",
        ssl_certfile=str(tls.cert) if tls else None,
        ssl_keyfile=str(tls.key) if tls and tls.key else None,
    )
    return uvicorn.Server(config)


def run(server: uvicorn.Server, at: Listening, idle_exit_s: float) -> None:
    """Serve on the bound socket until SIGINT or SIGTERM (or the idle exit)."""
    if idle_exit_s > 0:
        threading.Thread(
            target=_exit_when_idle,
            args=(server, at.services.store, at.gate, idle_exit_s),
            name="idle-exit",
            daemon=True,
        ).start()
    # uvicorn stops gracefully on SIGTERM and then raises it again; under the default handler that
    # would end the process before the clean-up in serve (worker, ready file, database).
    signal.signal(signal.SIGTERM, _exit_quietly)
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=[at.sock])


def _exit_when_idle(server: uvicorn.Server, store: Store, gate: GateConfig, idle_s: float) -> None:
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
