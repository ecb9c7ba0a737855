"""Start a local backend, or reuse the one already running on the same data folder.

The backend writes DATA/backend.json (pid, port, url, token) once it listens; a second Blender
reads it and connects instead of starting another server and fighting over the port.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
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


def read_ready(data_dir: Path) -> dict | None:
    try:
        info = json.loads((data_dir / READY_FILE).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and _alive(int(info.get("pid", 0))) else None


def find_running(data_dir: Path, timeout: float = 5.0) -> Running | None:
    info = read_ready(data_dir)
    if info is None:
        return None
    connection = Connection(info["url"], info["token"], timeout=timeout)
    try:
        BackendClient(connection).health()
    except (BackendUnreachable, BackendError):
        return None
    return Running(connection, int(info["pid"]), started_here=False)


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
            return Running(Connection(info["url"], info["token"]), proc.pid, started_here=True)
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
    info = read_ready(data_dir)
    if info is None:
        return False
    os.kill(int(info["pid"]), signal.SIGTERM)
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
