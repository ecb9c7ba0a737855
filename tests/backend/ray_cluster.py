"""Helpers for the Ray cluster tests: holds armed in the workers, the cluster's health, and the
sockets the cluster's processes listen on."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx

WAIT_S = 120.0
T = TypeVar("T")


@dataclass(frozen=True)
class Held:
    """A worker holding its piece (the hold fault): its process and the job it holds."""

    name: str
    pid: int
    job: str


class Holds:
    """The hold fault's folder (FRAMESMITH_FAULT_RAY_HOLD_DIR): arm a hold, see who took it,
    release it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def arm(self, name: str) -> None:
        (self.folder / f"arm-{name}").touch()

    def release(self, name: str) -> None:
        (self.folder / f"release-{name}").touch()

    def wait_held(self, name: str, timeout: float = WAIT_S) -> Held:
        return poll(lambda: self._held(name), f"no worker took hold {name}", timeout)

    def _held(self, name: str) -> Held | None:
        for p in self.folder.glob(f"held-{name}-*"):
            pid, job = p.name.removeprefix(f"held-{name}-").split("-", 1)
            return Held(name, int(pid), job)
        return None


def poll(probe: Callable[[], T | None], what: str, timeout: float = WAIT_S) -> T:
    """probe() until it returns something, with a deadline."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found is not None and found is not False:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)


def cluster_health(c: httpx.Client) -> dict[str, Any]:
    return c.get("/v1/health").raise_for_status().json()["cluster"]


def workers_ready(c: httpx.Client, count: int, timeout: float = WAIT_S) -> list[dict[str, Any]]:
    def ready() -> list[dict[str, Any]] | None:
        workers = cluster_health(c)["workers"]
        return workers if sum(w["state"] == "ready" for w in workers) >= count else None

    return poll(ready, f"{count} cluster worker(s) never became ready", timeout)


def descendants(pid: int) -> set[int]:
    """The process and every process below it (by /proc's parent ids)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        if p not in found:
            found.add(p)
            todo.extend(children.get(p, []))
    return found


def listening_addresses(pids: set[int]) -> list[str]:
    """The local addresses (hex, as /proc/net/tcp* writes them) of every TCP socket these
    processes listen on."""
    inodes: set[str] = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = str(fd.readlink()) if fd.is_symlink() else ""
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue  # gone meanwhile
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inodes:  # 0A: LISTEN
                out.append(cols[1].split(":")[0])
    return out


LOOPBACK_HEX = {
    "0100007F",  # 127.0.0.1
    "00000000000000000000000001000000",  # ::1
    "0000000000000000FFFF00000100007F",  # ::ffff:127.0.0.1
}
