"""Start a local backend, or reuse the one already running on the same data folder.

The backend writes DATA/backend.json (pid, port, url, token) once it listens; a second Blender
reads it and connects instead of starting another server and fighting over the port.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import stat
import subprocess
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from .http import BackendClient, BackendError, BackendUnreachable, Connection

READY_FILE = "backend.json"
# A local backend exits after this long with no request and no job left, so a closed Blender
# leaves no server behind (the backend's --idle-exit).
IDLE_EXIT_S = 600.0
# The backend's exit status when another backend already holds the data folder (backend.server).
ALREADY_RUNNING_EXIT = 3


class LaunchError(Exception):
    """The backend could not be started; the message says why and what to do."""


@dataclass(frozen=True)
class LaunchSpec:
    python: Path  # the backend environment's interpreter
    root: Path  # folder holding the `backend` package (the extension's root)
    data_dir: Path
    models_dir: Path
    device: str = "auto"
    extra_args: tuple[str, ...] = field(default_factory=tuple)
    idle_exit_s: float = IDLE_EXIT_S  # 0: never


@dataclass(frozen=True)
class Running:
    connection: Connection
    pid: int
    started_here: bool


class UntrustedReadyFile(LaunchError):
    """The ready file is not one our own backend wrote: nothing is sent to what it names."""


def read_ready(data_dir: Path) -> dict | None:
    """The ready file of a backend whose process is alive; None when there is none.
    UntrustedReadyFile when the file is not this user's private file or names a URL off this
    machine: its token and address are then not used."""
    path = data_dir / READY_FILE
    try:
        st = os.lstat(path)
        info = json.loads(path.read_text())
        pid = int(info.get("pid", 0))
    except (OSError, ValueError, TypeError, AttributeError):
        return None
    problem = _ready_file_problem(st, info)
    if problem is not None:
        raise UntrustedReadyFile(
            f"the backend's ready file {path} {problem}, so Framesmith does not trust it (it"
            " holds the backend's token): delete it, and make the data folder yours alone"
        )
    return info if _alive(pid) else None


def _ready_file_problem(st: os.stat_result, info: dict) -> str | None:
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        return f"belongs to another user (uid {st.st_uid})"
    if hasattr(os, "getuid") and stat.S_IMODE(st.st_mode) & 0o077:
        return f"can be read or written by other users (mode {stat.S_IMODE(st.st_mode):o})"
    if not _is_loopback_url(str(info.get("url", ""))):
        return f"names {info.get('url')!r}, which is not an address on this machine"
    return None


def _is_loopback_url(url: str) -> bool:
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or parts.username or parts.password:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def find_running(data_dir: Path, timeout: float = 5.0) -> Running | None:
    """The backend serving `data_dir`, if its ready file is trusted and the process answering
    at its URL is that backend (same pid and data folder); None otherwise."""
    info = read_ready(data_dir)
    if info is None:
        return None
    pid = int(info["pid"])
    if process_serves(pid, data_dir) is False:
        return None  # the pid now belongs to another program: the token is not sent to it
    connection = ready_connection(info, timeout)
    try:
        health = BackendClient(connection).health()
    except (BackendUnreachable, BackendError):
        return None
    if not answers_as(health, pid, data_dir):
        return None
    return Running(connection, pid, started_here=False)


def ready_connection(info: dict, timeout: float = 30.0) -> Connection:
    """How to reach the backend a trusted ready file names (its certificate's fingerprint
    with it, for a backend serving HTTPS with --tls-self-signed)."""
    fingerprint = info.get("fingerprint")
    return Connection(
        info["url"],
        info["token"],
        timeout=timeout,
        fingerprint=fingerprint if isinstance(fingerprint, str) else "",
    )


def process_serves(pid: int, data_dir: Path) -> bool | None:
    """Whether process `pid` is a backend serving `data_dir`, from its command line; None where
    the system does not show command lines (/proc)."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except FileNotFoundError:
        return None if not Path("/proc/self/cmdline").exists() else False
    except OSError:
        return None
    if "backend" not in args or "serve" not in args or "--data" not in args:
        return False
    given = args[args.index("--data") + 1] if args.index("--data") + 1 < len(args) else ""
    return _same_folder(given, data_dir, _process_cwd(pid))


def answers_as(health: object, pid: int, data_dir: Path) -> bool:
    """Whether a GET /v1/health answer comes from backend `pid` serving `data_dir`."""
    if not isinstance(health, dict) or health.get("pid") != pid:
        return False
    return _same_folder(str(health.get("data_dir", "")), data_dir, None)


def _same_folder(given: str, data_dir: Path, cwd: Path | None) -> bool:
    if not given:
        return False
    path = Path(given)
    if not path.is_absolute():
        if cwd is None:
            return False
        path = cwd / path
    try:
        return path.resolve() == data_dir.resolve()
    except OSError:
        return False


def _process_cwd(pid: int) -> Path | None:
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return None


def launch(spec: LaunchSpec, timeout: float = 120.0, poll: float = 0.1) -> Running:
    if not spec.python.is_file():
        raise LaunchError(
            f"the backend Python {spec.python} does not exist; set it in the add-on preferences"
        )
    if not (spec.root / "backend" / "__main__.py").is_file():
        raise LaunchError(f"no backend package under {spec.root}")
    spec.data_dir.mkdir(parents=True, exist_ok=True)
    log_path = spec.data_dir / "launcher.log"
    args = [
        str(spec.python), "-m", "backend", "serve", "--port", "0",
        "--data", str(spec.data_dir), "--models", str(spec.models_dir),
        "--device", spec.device, "--idle-exit", f"{spec.idle_exit_s:g}", *spec.extra_args,
    ]  # fmt: skip
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            args,
            cwd=spec.root,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # outlives Blender; stops on its own idle timeout
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            if proc.returncode == ALREADY_RUNNING_EXIT:
                # Another Blender started one on this data folder a moment ago: use that one.
                return _wait_for_other(spec.data_dir, deadline, poll, log_path)
            raise LaunchError(f"the backend exited with code {proc.returncode}: {_tail(log_path)}")
        info = read_ready(spec.data_dir)
        if info is not None and int(info.get("pid", 0)) == proc.pid:
            return Running(ready_connection(info), proc.pid, started_here=True)
        time.sleep(poll)  # waiting for the child's ready file, with a deadline
    proc.terminate()
    raise LaunchError(f"the backend did not start within {timeout:.0f} s: {_tail(log_path)}")


def _wait_for_other(data_dir: Path, deadline: float, poll: float, log_path: Path) -> Running:
    while time.monotonic() < deadline:
        running = find_running(data_dir)
        if running is not None:
            return running
        time.sleep(poll)  # the other backend is still starting; with a deadline
    raise LaunchError(f"another backend holds {data_dir} but never became ready: {_tail(log_path)}")


def ensure_backend(spec: LaunchSpec, timeout: float = 120.0) -> Running:
    return find_running(spec.data_dir) or launch(spec, timeout)


def stop(data_dir: Path) -> bool:
    """Stop the backend serving `data_dir`; False (and no signal sent) when none is running or
    the ready file's pid is not that backend (a stale file, the pid now another program's)."""
    try:
        info = read_ready(data_dir)
    except UntrustedReadyFile:
        return False
    if info is None:
        return False
    pid = int(info["pid"])
    serves = process_serves(pid, data_dir)
    if serves is None:  # no command lines to read: ask the process that answers
        try:
            health = BackendClient(ready_connection(info, timeout=5.0)).health()
        except (BackendUnreachable, BackendError):
            return False
        serves = answers_as(health, pid, data_dir)
    if not serves:
        return False
    os.kill(pid, signal.SIGTERM)
    return True


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _tail(path: Path, lines: int = 8) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"
