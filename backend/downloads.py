"""Model downloads: the catalogue with what is installed, and one download at a time in the
background (a thread of its own, never the worker's GPU queue).

Each download runs `python -m backend.downloads_hub` (the serving process stays offline for
good), reads its events for progress, and, when every file is verified, moves them into the
models folder (downloads_install.py) and has the registry rescan, so the model is usable at once.
A download that fails keeps its staged bytes, so the next try (or the next backend) resumes;
a canceled one removes them. Downloads live in memory: after a restart, asking again resumes.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import os
import queue
import secrets
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .downloads_install import Layout, StagedFile, discard, install, is_installed
from .models.catalogue import PIPELINE_MODES, CatalogueEntry, ModelKind, load_catalogue

log = logging.getLogger("framesmith.downloads")

PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # holds the `backend` package
KEEP_FINISHED = 100  # finished downloads remembered for GET /v1/downloads/{id}


class DownloadState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELED = "canceled"


FINAL_STATES = frozenset((DownloadState.DONE, DownloadState.FAILED, DownloadState.CANCELED))


@dataclass
class Download:
    id: str
    name: str
    state: DownloadState = DownloadState.QUEUED
    done_bytes: int = 0
    total_bytes: int | None = None
    error: str | None = None
    canceled: threading.Event = field(default_factory=threading.Event)
    proc: subprocess.Popen[str] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "state": self.state.value,
            "done_bytes": self.done_bytes,
            "total_bytes": self.total_bytes,
            "error": self.error,
        }

    @property
    def finished(self) -> bool:
        return self.state in FINAL_STATES


class UnknownModel(KeyError):
    """No catalogue entry has this name."""


def needed_by(kind: ModelKind, installed_kinds: set[ModelKind]) -> list[str]:
    """The pipelines whose default (fullest) mode needs a model of `kind` and have none. The
    other modes are lighter or another engine (Wan2.1-VACE): offered, never needed."""
    if kind in installed_kinds:
        return []
    return sorted(p for p, modes in PIPELINE_MODES.items() if kind in next(iter(modes.values())))


class Downloads:
    def __init__(
        self,
        catalogue: Mapping[str, CatalogueEntry],
        layout: Layout,
        on_installed: Callable[[], Any],
        python: str = sys.executable,
    ) -> None:
        self.catalogue = dict(catalogue)
        self.layout = layout
        self._on_installed = on_installed
        self._python = python
        self._lock = threading.Lock()
        self._all: dict[str, Download] = {}
        self._queue: queue.Queue[Download | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    # ---- what the routes call ----------------------------------------------------------------

    def catalogue_json(self, installed_kinds: Iterable[ModelKind]) -> list[dict[str, Any]]:
        kinds = set(installed_kinds)
        out = []
        for entry in sorted(self.catalogue.values(), key=lambda e: (e.kind.value, e.name)):
            installed = is_installed(self.layout, entry)
            needs = [] if installed else needed_by(entry.kind, kinds)
            out.append(entry.to_json() | {"installed": installed, "needed_by": needs})
        return out

    def start(self, name: str) -> tuple[Download, bool]:
        """The download of `name`: (download, whether it was queued now). An active download
        of the same model is returned as it is; an installed model comes back done."""
        entry = self.catalogue.get(name)
        if entry is None:
            raise UnknownModel(name)
        with self._lock:
            for d in self._all.values():
                if d.name == name and not d.finished:
                    return d, False
            download = Download(secrets.token_hex(8), name, total_bytes=entry.total_size)
            if is_installed(self.layout, entry):
                download.state = DownloadState.DONE
                download.done_bytes = download.total_bytes or 0
            self._remember(download)
        if download.finished:
            return download, False
        self._ensure_thread()
        self._queue.put(download)
        return download, True

    def get(self, download_id: str) -> Download:
        with self._lock:
            return self._all[download_id]

    def list(self) -> list[Download]:
        with self._lock:
            return list(self._all.values())

    def cancel(self, download_id: str) -> Download:
        download = self.get(download_id)
        with self._lock:
            if download.finished:
                return download
            download.canceled.set()
            if download.state is DownloadState.QUEUED:
                download.state = DownloadState.CANCELED
            proc = download.proc
        if proc is not None:
            _terminate(proc)
        return download

    # ---- the thread --------------------------------------------------------------------------

    def _remember(self, download: Download) -> None:
        self._all[download.id] = download
        finished = [k for k, d in self._all.items() if d.finished]
        for key in finished[: max(0, len(finished) - KEEP_FINISHED)]:
            del self._all[key]

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name="downloads", daemon=True)
                self._thread.start()

    def _work(self) -> None:
        while (download := self._queue.get()) is not None:
            if download.canceled.is_set():
                continue
            try:
                self._run(download)
            except Exception as exc:  # never let one download end the thread
                log.exception("download %s (%s) failed", download.id, download.name)
                self._finish(download, DownloadState.FAILED, f"the download failed: {exc}")

    def _run(self, download: Download) -> None:
        entry = self.catalogue[download.name]
        with self._lock:
            if download.canceled.is_set():
                return
            download.state = DownloadState.RUNNING
        log.info("downloading %s from %s", entry.name, entry.repo)
        outcome = self._fetch(download, entry)
        if download.canceled.is_set():
            discard(self.layout, entry.name)
            self._finish(download, DownloadState.CANCELED, None)
        elif isinstance(outcome, str):
            self._finish(download, DownloadState.FAILED, outcome)
        else:
            installed = install(self.layout, entry, outcome)
            discard(self.layout, entry.name)
            log.info("installed %s: %s", entry.name, ", ".join(installed))
            try:
                self._on_installed()
            except Exception:
                log.exception("the models folder could not be rescanned after %s", entry.name)
            self._finish(download, DownloadState.DONE, None)

    def _finish(self, download: Download, state: DownloadState, error: str | None) -> None:
        with self._lock:
            download.state, download.error, download.proc = state, error, None
        if error:
            log.warning("download of %s %s: %s", download.name, state.value, error)

    def _fetch(self, download: Download, entry: CatalogueEntry) -> list[StagedFile] | str:
        """Run the download child to its end: the verified files, or the sentence it failed
        with."""
        spec = {
            "name": entry.name,
            "repo": entry.repo,
            "revision": entry.revision,
            "files": [f.to_json() for f in entry.files],
            "staging": str(self.layout.staging(entry.name)),
            "models": str(self.layout.models),
        }
        log_path = self.layout.log(entry.name)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as child_log:
            proc = subprocess.Popen(
                [self._python, "-m", "backend.downloads_hub"],
                cwd=PACKAGE_ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=child_log,
                text=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        with self._lock:
            download.proc = proc
            canceled = download.canceled.is_set()
        if canceled:
            _terminate(proc)
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(json.dumps(spec) + "\n")
            proc.stdin.flush()
        except OSError:
            pass  # it died already: its exit status says so below
        try:
            return self._follow(download, proc, log_path)
        finally:
            proc.stdin.close()  # the lifeline: a child still running exits now
            proc.wait()

    def _follow(
        self, download: Download, proc: subprocess.Popen[str], log_path: Path
    ) -> list[StagedFile] | str:
        assert proc.stdout is not None
        result: list[StagedFile] | str | None = None
        for line in proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            kind = event.get("event")
            with self._lock:
                if kind == "plan":
                    download.total_bytes = int(event["total"])
                    download.done_bytes = int(event.get("staged", 0))
                elif kind == "progress":
                    download.done_bytes = int(event["done"])
            if kind == "error":
                result = str(event.get("message") or "the download failed")
            elif kind == "done":
                staged = [StagedFile(f["path"], _digest(f)) for f in event["files"]]
                result = staged
        code = proc.wait()
        if result is None:
            result = (
                f"the download process stopped (exit status {code}) before it finished; see"
                f" {log_path}"
            )
        return result


def open_downloads(
    catalogue_file: Path | None, models: Path, data: Path, on_installed: Callable[[], Any]
) -> Downloads:
    """The downloads of a serving backend: the built-in catalogue with `catalogue_file`'s
    entries added or overriding (CatalogueError when that file cannot be used)."""
    return Downloads(load_catalogue(catalogue_file), Layout(models, data), on_installed)


def _digest(item: Mapping[str, Any]) -> str:
    return str(item.get("sha256") or item.get("git-sha1"))


def _terminate(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(OSError):  # it ended on its own already
        proc.terminate()
