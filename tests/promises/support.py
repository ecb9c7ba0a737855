"""Helpers shared by the promise tests: jobs over real HTTP, facts about files, process gauges."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from tests.backend.images import png_bytes, textured_square_scene

W, H = 64, 48
TERMINAL = frozenset({"done", "failed", "canceled"})


def square_keys(xs: Mapping[int, float], w: int = W, h: int = H) -> dict[int, np.ndarray]:
    """Keyframe images: a textured square at horizontal position xs[frame]."""
    return {f: textured_square_scene(w, h, x) for f, x in xs.items()}


def create_inbetween(
    c: httpx.Client,
    keys: Mapping[int, np.ndarray],
    frames: Iterable[int],
    *,
    params: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
    upload: bool = True,
) -> dict:
    """Create an in-between job and (unless upload=False) upload its keyframes."""
    first = next(iter(keys.values()))
    body = {
        "kind": "inbetween",
        "frames": list(frames),
        "keyframes": sorted(keys),
        "width": first.shape[1],
        "height": first.shape[0],
        "params": dict(params or {}),
    }
    r = c.post("/v1/jobs", json=body, headers=dict(headers or {}))
    assert r.status_code in (200, 201), r.text
    job = r.json()
    if upload:
        for frame, img in keys.items():
            up = c.put(f"/v1/jobs/{job['id']}/inputs/keyframe/{frame}", content=png_bytes(img))
            assert up.status_code == 200, up.text
    return job


def start(c: httpx.Client, job_id: str) -> dict:
    r = c.post(f"/v1/jobs/{job_id}/start")
    assert r.status_code == 202, r.text
    return r.json()


@dataclass(frozen=True)
class FileFacts:
    sha256: str
    inode: int
    mtime_ns: int


def file_facts(folder: Path) -> dict[str, FileFacts]:
    """Content hash, inode and mtime of every file in a folder: a rewrite changes the inode."""
    out: dict[str, FileFacts] = {}
    for p in sorted(folder.iterdir()):
        if not p.is_file():
            continue
        st = os.stat(p, follow_symlinks=False)
        out[p.name] = FileFacts(
            hashlib.sha256(p.read_bytes()).hexdigest(), st.st_ino, st.st_mtime_ns
        )
    return out


def frame_files(folder: Path) -> list[Path]:
    """Finished frame files (temp files excluded)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix == ".png" and ".tmp-" not in p.name)


def wait_files(folder: Path, count: int, alive: Callable[[], bool], timeout: float = 60.0) -> int:
    """Poll a folder until it holds `count` finished frames; returns how many it holds."""
    deadline = time.monotonic() + timeout
    while True:
        n = len(frame_files(folder))
        if n >= count:
            return n
        if not alive():
            raise AssertionError(f"the backend died before {folder} held {count} frames")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{folder} holds {n} frames, not {count}")
        time.sleep(0.002)  # polling the folder, with a deadline


def rss_kb(pid: int) -> int:
    """Resident memory of a process (VmRSS, kB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for process {pid}")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))
