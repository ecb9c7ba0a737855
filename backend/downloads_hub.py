"""The download child: fetch one catalogue entry's files from the hub into its staging folder.

The serving process is offline for good (backend/__init__ sets HF_HUB_OFFLINE before anything
imports huggingface_hub, and the hub library reads it once), so each download runs here, in a
process of its own: `python -m backend.downloads_hub` takes the offline flags out of its
environment before it imports huggingface_hub, and then speaks the hub's HTTP protocol through
that library (HF_ENDPOINT, HF_TOKEN and the stored token are honoured as the library reads them).

Protocol with backend/downloads.py: one JSON line on stdin (Spec), then stdin stays open as the
lifeline: when it closes (the backend died or gave up), this process exits at once. Events go to
stdout as JSON lines: plan, progress, verified, done, error (see `Events`).

Staging, content-addressed by the digest each file is checked against:
    <staging>/partial/<digest>.part   bytes received so far (resumed from here, even after a
                                     restart), never seen by the registry
    <staging>/verified/<digest>       complete, checksum verified, content checked
Nothing is written to the models folder here: the backend installs verified files.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import fnmatch
import hashlib
import json
import os
import re
import shutil
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .models.catalogue import CatalogueError, downloadable, safe_relative_path
from .models.offline import OFFLINE_ENV
from .models.safetensors_header import HeaderError, read_checked_header, sniff_pickle

EXIT_FAILED = 1
EXIT_ORPHANED = 3
LOCK_WAIT_S = 10.0
PROGRESS_EVERY_S = 0.25
FREE_SPACE_MARGIN = 64 * 1024 * 1024  # left free after a download (logs, the database)
_SHA256 = re.compile(r"[0-9a-f]{64}")
_GIT_SHA1 = re.compile(r"[0-9a-f]{40}")
# Kept: the telemetry switch. Taken out: the offline flags and the one that hides stored tokens.
_KEEP = {"HF_HUB_DISABLE_TELEMETRY"}


class DownloadFailed(Exception):
    """The download cannot finish; the message is the sentence the user sees."""


@dataclass(frozen=True)
class Spec:
    name: str
    repo: str
    revision: str
    files: list[dict[str, Any]]  # catalogue files: {"path", "sha256"?} or {"pattern"}
    staging: Path
    models: Path  # where the files will be installed (free space is checked there too)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Spec:
        return cls(
            name=str(data["name"]),
            repo=str(data["repo"]),
            revision=str(data["revision"]),
            files=list(data["files"]),
            staging=Path(data["staging"]),
            models=Path(data["models"]),
        )


@dataclass(frozen=True)
class Planned:
    path: str  # in the repo, and under the entry's folder
    url: str  # where the bytes are (the hub's resolve URL or where it redirects)
    size: int
    digest: str  # hex; what the file is checked against
    algorithm: str  # "sha256" or "git-sha1"
    source: str  # where the digest comes from, for the sentence when it does not match

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, self.algorithm: self.digest}


@dataclass
class Events:
    """JSON lines on stdout; progress is sent by a ticker so a stalled transfer still reports."""

    out: IO[str]
    done: int = 0
    _sent: int = -1
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)

    def send(self, event: str, **data: Any) -> None:
        with self._lock:
            self.out.write(json.dumps({"event": event, **data}) + "\n")
            self.out.flush()

    def tick(self) -> None:
        if self.done != self._sent:
            self._sent = self.done
            self.send("progress", done=self.done)

    def run_ticker(self) -> None:
        while not self._stop.wait(PROGRESS_EVERY_S):
            self.tick()

    def stop(self) -> None:
        self._stop.set()
        self.tick()


class CountingFile:
    """The partial file as http_get writes it, reporting its size after every change."""

    def __init__(self, file: IO[bytes], report: Callable[[int], None]) -> None:
        self._file = file
        self._report = report

    def write(self, data: bytes) -> int:
        written = self._file.write(data)
        self._report(self._file.tell())
        return written

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def truncate(self, size: int | None = None) -> int:
        result = self._file.truncate(size)
        self._report(self._file.tell())
        return result


# ---- what to fetch -------------------------------------------------------------------------


def expected_digest(catalogue_sha256: str | None, etag: str | None) -> tuple[str, str, str]:
    """(algorithm, hex digest, where it comes from) for one file."""
    if catalogue_sha256:
        return "sha256", catalogue_sha256.lower(), "the catalogue"
    tag = (etag or "").lower()
    if _SHA256.fullmatch(tag):
        return "sha256", tag, "the hub's LFS ETag"
    if _GIT_SHA1.fullmatch(tag):
        return "git-sha1", tag, "the hub's ETag (its git blob id)"
    raise DownloadFailed(
        f"the hub gave no checksum for this file (ETag {etag!r}), so it cannot be verified: add"
        " its sha256 to the catalogue entry"
    )


def plan_files(spec: Spec, hub: Any) -> list[Planned]:
    """Every file of the entry with its size, URL and digest, all from one commit."""
    commit = None
    wanted: list[tuple[str, str | None]] = []
    for item in spec.files:
        if "pattern" in item:
            wanted += [(p, None) for p in hub.matching(spec.revision, item["pattern"])]
        else:
            wanted.append((item["path"], item.get("sha256")))
    planned: list[Planned] = []
    for path, sha256 in dict.fromkeys(wanted):
        meta = hub.metadata(path, commit or spec.revision)
        commit = commit or meta.commit_hash  # the first answer pins the rest to its commit
        if meta.size is None:
            raise DownloadFailed(f"the hub did not say how large {path} is")
        try:
            algorithm, digest, source = expected_digest(sha256, meta.etag)
        except DownloadFailed as exc:
            raise DownloadFailed(f"{path}: {exc}") from None
        planned.append(Planned(path, meta.location, meta.size, digest, algorithm, source))
    return planned


def check_free_space(spec: Spec, planned: list[Planned], have: int) -> None:
    """Refuse before the first byte when the staging or the models folder cannot hold it."""
    total = sum(p.size for p in planned)
    needs = [(spec.staging, total - have)]
    spec.models.mkdir(parents=True, exist_ok=True)
    if os.stat(spec.models).st_dev != os.stat(spec.staging).st_dev:
        needs.append((spec.models, total))  # installing copies it across file systems
    for folder, need in needs:
        free = shutil.disk_usage(folder).free
        if need + FREE_SPACE_MARGIN > free:
            raise DownloadFailed(
                f"not enough free disk space for {spec.name}: it needs {_gb(need)} more in"
                f" {folder} and {_gb(free)} is free; free some space, then download it again"
            )


def _gb(size: int) -> str:
    return f"{size / 1e9:.2f} GB" if size >= 1e8 else f"{size / 1e6:.1f} MB"


# ---- one file ------------------------------------------------------------------------------


def file_digest(path: Path, algorithm: str) -> str:
    h = hashlib.sha256() if algorithm == "sha256" else hashlib.sha1()  # sha1: git blob ids
    if algorithm == "git-sha1":
        h.update(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def check_content(path: Path, name: str) -> None:
    """What the file claims to be: safetensors (never a pickle), JSON or UTF-8 text."""
    lower = name.lower()
    try:
        if lower.endswith(".safetensors"):
            if kind := sniff_pickle(path):
                raise DownloadFailed(f"{name} is {kind}, not safetensors: it was not installed")
            read_checked_header(path)
        elif lower.endswith(".json"):
            json.loads(path.read_text(encoding="utf-8"))
        else:
            path.read_text(encoding="utf-8")
    except (HeaderError, ValueError, RecursionError) as exc:
        raise DownloadFailed(f"{name} is not what its name says ({exc}): not installed") from None


def fetch(hub: Any, item: Planned, staging: Path, events: Events) -> None:
    """Bring one file into staging/verified, resuming a partial file of the same digest."""
    verified = staging / "verified" / item.digest
    if verified.is_file() and verified.stat().st_size == item.size:
        events.done += item.size
        return
    part = staging / "partial" / f"{item.digest}.part"
    part.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.is_file() else 0
    if have > item.size:
        have = 0
    before = events.done

    def report(size: int) -> None:
        events.done = before + size

    with open(part, "ab" if have else "wb") as f:
        report(have)
        hub.get(item, CountingFile(f, report), have)
    got = file_digest(part, item.algorithm)
    if got != item.digest:
        part.unlink()
        raise DownloadFailed(
            f"{item.path} does not match its checksum: {item.algorithm} {got} where"
            f" {item.source} says {item.digest}. The file was deleted and nothing was installed;"
            " try again, and if it fails again the file on the hub is not the one the catalogue"
            " names"
        )
    check_content(part, item.path)
    verified.parent.mkdir(parents=True, exist_ok=True)
    os.replace(part, verified)
    events.send("verified", path=item.path, digest=item.digest)


# ---- the hub, through huggingface_hub ------------------------------------------------------


class Hub:
    """The few hub calls a download needs, through huggingface_hub (imported by the caller
    once the offline flags are gone)."""

    def __init__(self, repo: str) -> None:
        import huggingface_hub
        from huggingface_hub.file_download import http_get
        from huggingface_hub.utils import build_hf_headers

        self.repo = repo
        self._hf = huggingface_hub
        self._http_get = http_get
        self._headers = build_hf_headers()

    def matching(self, revision: str, pattern: str) -> list[str]:
        """Repo files matching `pattern` that may be downloaded, from the hub's listing."""
        found: list[str] = []
        tree = self._hf.HfApi().list_repo_tree(self.repo, revision=revision, recursive=True)
        for item in tree:
            path = getattr(item, "path", "")
            if not isinstance(item, self._hf.hf_api.RepoFile):
                continue
            if not fnmatch.fnmatchcase(path, pattern) or not downloadable(path):
                continue
            try:
                found.append(safe_relative_path(path, f"the hub's listing of {self.repo}"))
            except CatalogueError as exc:
                raise DownloadFailed(str(exc)) from None
        if not found:
            raise DownloadFailed(
                f"no .safetensors, .json or .txt file of {self.repo} matches {pattern!r}"
            )
        return sorted(found)

    def metadata(self, path: str, revision: str) -> Any:
        url = self._hf.hf_hub_url(self.repo, path, revision=revision)
        return self._hf.get_hf_file_metadata(url, retry_on_errors=True)

    def get(self, item: Planned, file: CountingFile, have: int) -> None:
        headers = self._headers
        if _origin(item.url) != _origin(self._hf.constants.ENDPOINT):
            # a signed CDN address: the token stays with the hub (as hf_hub_download does)
            headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
        self._http_get(
            item.url,
            file,
            resume_size=have,
            headers=headers,
            expected_size=item.size,
            displayed_filename=item.path,
        )


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port


def hub_failure(exc: Exception, spec: Spec) -> str:
    """A sentence for what the hub library raised."""
    from huggingface_hub import errors

    where = f"{spec.repo} ({os.environ.get('HF_ENDPOINT') or 'huggingface.co'})"
    if isinstance(exc, errors.GatedRepoError):
        return (
            f"{where} is gated: accept its licence on the hub and set HF_TOKEN (or log in with"
            " `hf auth login`) where the backend runs"
        )
    if isinstance(exc, errors.RepositoryNotFoundError):
        return f"the repository {where} was not found (or needs a token)"
    if isinstance(exc, errors.RevisionNotFoundError):
        return f"{where} has no revision {spec.revision!r}"
    if isinstance(exc, errors.RemoteEntryNotFoundError):
        return f"a file of {spec.name} is not in {where} at {spec.revision}: {exc}".split("\n")[0]
    if isinstance(exc, errors.HfHubHTTPError):
        return f"the hub answered with an error for {spec.name}: {exc}".split("\n")[0]
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return f"the disk filled up while {spec.name} was downloading: free some space and retry"
    reason = str(exc).split("\n")[0] or type(exc).__name__
    return f"could not download {spec.name} from {where}: {reason}"


# ---- the process ---------------------------------------------------------------------------


def go_online() -> None:
    for key in OFFLINE_ENV:
        if key not in _KEEP:
            os.environ.pop(key, None)
    if "huggingface_hub" in sys.modules:  # read its flags already: it would stay offline
        raise RuntimeError("huggingface_hub was imported before the download went online")


@contextlib.contextmanager
def staging_lock(staging: Path) -> Iterator[None]:
    staging.mkdir(parents=True, exist_ok=True)
    with open(staging / "lock", "a+") as lock:
        # A child of a backend that was just killed exits on its own (its lifeline closed);
        # give it a moment before calling the staging busy.
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise DownloadFailed(
                        "another download of this model is still running"
                    ) from None
                time.sleep(0.1)  # polling a lock, with a deadline
        yield


def run(spec: Spec, events: Events, hub_factory: Callable[[str], Any] = Hub) -> None:
    with staging_lock(spec.staging):
        hub = hub_factory(spec.repo)
        planned = plan_files(spec, hub)
        have = sum(_staged(spec.staging, p) for p in planned)
        total = sum(p.size for p in planned)
        events.send("plan", files=[p.to_json() for p in planned], total=total, staged=have)
        check_free_space(spec, planned, have)
        ticker = threading.Thread(target=events.run_ticker, name="progress", daemon=True)
        ticker.start()
        try:
            for item in planned:
                fetch(hub, item, spec.staging, events)
        finally:
            events.stop()
        events.send("done", files=[p.to_json() for p in planned])


def _staged(staging: Path, item: Planned) -> int:
    for path in (staging / "verified" / item.digest, staging / "partial" / f"{item.digest}.part"):
        if path.is_file():
            return min(path.stat().st_size, item.size)
    return 0


def _exit_when_orphaned() -> None:
    sys.stdin.read()  # returns when the backend closes the pipe, or dies
    os._exit(EXIT_ORPHANED)


def main() -> int:
    spec = Spec.from_json(json.loads(sys.stdin.readline()))
    threading.Thread(target=_exit_when_orphaned, name="lifeline", daemon=True).start()
    events = Events(sys.stdout)
    go_online()
    try:
        run(spec, events)
    except DownloadFailed as exc:
        events.send("error", message=str(exc))
        return EXIT_FAILED
    except Exception as exc:  # the hub library's errors, the network's, the disk's
        events.send("error", message=hub_failure(exc, spec))
        return EXIT_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
