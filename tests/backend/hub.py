"""A stand-in for the model hub on 127.0.0.1, speaking the part of the Hub's HTTP protocol that
huggingface_hub uses to download (read from its source: file_download.py, utils/_http.py,
hf_api.py list_repo_tree):

- HEAD/GET /{owner}/{repo}/resolve/{revision}/{path}: X-Repo-Commit; a git file answers 200 with
  ETag = its git blob id; an LFS file (.safetensors) answers 302 to a CDN on another origin with
  X-Linked-Etag = its sha256 and X-Linked-Size, as the Hub does (huggingface_hub follows no
  redirect off the Hub for metadata, and downloads from the Location);
- GET on the CDN: the bytes, with Range (206 + Content-Range) for resume;
- GET /api/models/{owner}/{repo}/tree/{revision}[/{path}]?recursive=: the file listing (type,
  oid, size, path, lfs {oid, size, pointerSize});
- errors with X-Error-Code (RepoNotFound, RevisionNotFound, EntryNotFound), which
  huggingface_hub turns into its typed errors.

Faults, per file, for the tests: hold after N bytes until released (a stalled transfer), cut the
connection after N bytes (a dropped connection), corrupt bytes under the right ETag, a size the
hub lies about. Every request is recorded. Stdlib only: the Blender tests import it too.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

HOLD_LIMIT_S = 120.0  # a held transfer goes on by itself after this (a test that forgot it)
CHUNK = 64 * 1024
_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Fault:
    hold_after: int | None = None  # stop after this byte offset until hub.release is set
    cut_after: int | None = None  # close the connection at this byte offset
    times: int = 1  # how many transfers the hold or cut hits
    corrupt: bool = False  # serve other bytes under the file's ETag
    claimed_size: int | None = None  # the size the hub says the file has


@dataclass
class HubFile:
    data: bytes
    lfs: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else git_blob_id(self.data)


@dataclass(frozen=True)
class Seen:
    server: str  # "hub" or "cdn"
    method: str
    path: str
    range: str | None
    sent: int = 0  # body bytes sent
    auth: str | None = None  # the Authorization header it came with


@dataclass
class StandInHub:
    repos: dict[str, dict[str, HubFile]] = field(default_factory=dict)
    faults: dict[tuple[str, str], Fault] = field(default_factory=dict)
    extra_listing: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    held: threading.Event = field(default_factory=threading.Event)  # a transfer is held now
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _servers: list[ThreadingHTTPServer] = field(default_factory=list)

    # ---- content ----------------------------------------------------------------------------

    def add(self, repo: str, path: str, data: bytes, lfs: bool | None = None) -> HubFile:
        lfs = path.endswith(".safetensors") if lfs is None else lfs
        item = HubFile(data, lfs)
        self.repos.setdefault(repo, {})[path] = item
        return item

    def commit(self, repo: str) -> str:
        return hashlib.sha1(repo.encode()).hexdigest()

    def by_sha256(self, sha: str) -> tuple[str, str, HubFile] | None:
        for repo, files in self.repos.items():
            for path, item in files.items():
                if item.lfs and item.sha256 == sha:
                    return repo, path, item
        return None

    def requests(self, method: str | None = None, path_end: str = "") -> list[Seen]:
        with self._lock:
            return [
                s
                for s in self.seen
                if (method is None or s.method == method) and s.path.endswith(path_end)
            ]

    # ---- serving ----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return self._url(0)

    @property
    def cdn_url(self) -> str:
        return self._url(1)

    def _url(self, i: int) -> str:
        host, port = self._servers[i].server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> StandInHub:
        for role in ("hub", "cdn"):
            server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self, role))
            server.daemon_threads = True
            self._servers.append(server)
            threading.Thread(
                target=server.serve_forever, name=f"stand-in-{role}", daemon=True
            ).start()
        return self

    def stop(self) -> None:
        self.release.set()
        for server in self._servers:
            server.shutdown()
            server.server_close()

    def __enter__(self) -> StandInHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def record(self, seen: Seen) -> None:
        with self._lock:
            self.seen.append(seen)

    def take_fault(self, repo: str, path: str) -> Fault:
        """The file's fault for this transfer (a hold or cut counts down once per transfer)."""
        with self._lock:
            fault = self.faults.get((repo, path))
            if fault is None:
                return Fault()
            live = fault.times > 0
            fault.times -= 1
            return fault if live else Fault(corrupt=fault.corrupt, claimed_size=fault.claimed_size)


class _Handler(BaseHTTPRequestHandler):
    hub: StandInHub
    role: str  # "hub" or "cdn"

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    def _serve(self, head: bool) -> None:
        path = urllib.parse.urlsplit(self.path).path
        if self.role == "cdn":
            self._cdn(urllib.parse.unquote(path.strip("/")), head)
        elif path.startswith("/api/models/"):
            self._tree(path, head)
        elif "/resolve/" in path:
            self._resolve(path, head)
        else:
            self._error(404, "RepoNotFound", head)

    # -- the hub ----------------------------------------------------------------------

    def _repo(self, repo: str, revision: str, head: bool) -> dict[str, HubFile] | None:
        files = self.hub.repos.get(repo)
        if files is None:
            self._error(404, "RepoNotFound", head)
        elif revision not in ("main", self.hub.commit(repo)):
            self._error(404, "RevisionNotFound", head)
            return None
        return files

    def _resolve(self, path: str, head: bool) -> None:
        repo_part, _, rest = path.strip("/").partition("/resolve/")
        revision, _, file_path = rest.partition("/")
        repo, file_path = urllib.parse.unquote(repo_part), urllib.parse.unquote(file_path)
        revision = urllib.parse.unquote(revision)
        files = self._repo(repo, revision, head)
        item = None if files is None else files.get(file_path)
        if item is None or item.lfs:  # a git file is recorded once its body is sent
            seen = Seen("hub", self.command, path, None, auth=self.headers.get("Authorization"))
            self.hub.record(seen)
        if files is None:
            return
        if item is None:
            self._error(404, "EntryNotFound", head)
            return
        fault = self.hub.faults.get((repo, file_path)) or Fault()
        size = fault.claimed_size if fault.claimed_size is not None else len(item.data)
        common = {"X-Repo-Commit": self.hub.commit(repo), "ETag": f'"{item.etag}"'}
        if item.lfs:
            location = f"{self.hub.cdn_url}/{item.sha256}"
            self._answer(
                302,
                {**common, "Location": location, "X-Linked-Etag": f'"{item.sha256}"',
                 "X-Linked-Size": str(size), "Content-Length": "0"},
            )  # fmt: skip
            return
        self._body(repo, file_path, item, {**common}, head)

    def _tree(self, path: str, head: bool) -> None:
        m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)(/.*)?", path)
        self.hub.record(
            Seen("hub", self.command, path, None, auth=self.headers.get("Authorization"))
        )
        if m is None:
            self._error(404, "RepoNotFound", head)
            return
        repo, revision = urllib.parse.unquote(m[1]), urllib.parse.unquote(m[2])
        files = self._repo(repo, revision, head)
        if files is None:
            return
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        recursive = query.get("recursive", ["false"])[0].lower() == "true"
        under = urllib.parse.unquote((m[3] or "").strip("/"))
        listing = _listing(files, under, recursive) + self.hub.extra_listing.get(repo, [])
        data = json.dumps(listing).encode()
        self._answer(200, {"Content-Type": "application/json", "Content-Length": str(len(data))})
        if not head:
            self.wfile.write(data)

    # -- the CDN ----------------------------------------------------------------------

    def _cdn(self, sha: str, head: bool) -> None:
        found = self.hub.by_sha256(sha)
        if found is None:
            self.hub.record(Seen("cdn", self.command, self.path, self.headers.get("Range")))
            self._answer(404, {"Content-Length": "0"})
            return
        repo, path, item = found
        self._body(repo, path, item, {"ETag": f'"{item.sha256}"'}, head)

    def _body(self, repo: str, path: str, item: HubFile, headers: dict, head: bool) -> None:
        fault = self.hub.take_fault(repo, path) if not head else Fault()
        data = item.data
        if fault.corrupt:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        start = 0
        m = _RANGE.fullmatch(self.headers.get("Range") or "")
        if m and int(m[1]) < len(data):
            start = int(m[1])
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        headers |= {"Content-Length": str(len(data) - start), "Accept-Ranges": "bytes"}
        self._answer(206 if start else 200, headers)
        sent = 0 if head else self._send(data, start, fault)
        auth = self.headers.get("Authorization")
        self.hub.record(
            Seen(self.role, self.command, self.path, self.headers.get("Range"), sent, auth)
        )

    def _send(self, data: bytes, start: int, fault: Fault) -> int:
        pos = start
        try:
            while pos < len(data):
                stop = min(len(data), pos + CHUNK)
                for limit in (fault.hold_after, fault.cut_after):
                    if limit is not None and pos < limit < stop:
                        stop = limit
                self.wfile.write(data[pos:stop])
                pos = stop
                if pos == fault.hold_after:
                    self.wfile.flush()
                    self.hub.held.set()
                    self.hub.release.wait(HOLD_LIMIT_S)
                if pos == fault.cut_after:
                    self.wfile.flush()
                    self.close_connection = True
                    break
        except OSError:  # the client hung up (a canceled or killed download)
            self.close_connection = True
        return pos - start

    def _error(self, status: int, code: str, head: bool) -> None:
        data = b"" if head else json.dumps({"error": code}).encode()
        self._answer(status, {"X-Error-Code": code, "Content-Length": str(len(data))})
        if data:
            self.wfile.write(data)

    def _answer(self, status: int, headers: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()


def _handler(hub: StandInHub, role: str) -> type[BaseHTTPRequestHandler]:
    return type(f"{role.title()}Handler", (_Handler,), {"hub": hub, "role": role})


def _listing(files: dict[str, HubFile], under: str, recursive: bool) -> list[dict[str, Any]]:
    prefix = f"{under}/" if under else ""
    out: list[dict[str, Any]] = []
    folders: set[str] = set()
    for path, item in sorted(files.items()):
        if not path.startswith(prefix):
            continue
        rest = path[len(prefix) :]
        parts = rest.split("/")
        for i in range(1, len(parts)):
            folders.add(prefix + "/".join(parts[:i]))
        if not recursive and len(parts) > 1:
            continue
        entry: dict[str, Any] = {
            "type": "file",
            "oid": git_blob_id(item.data),
            "size": len(item.data),
            "path": path,
        }
        if item.lfs:
            entry["lfs"] = {"oid": item.sha256, "size": len(item.data), "pointerSize": 134}
        out.append(entry)
    for folder in sorted(folders):
        if recursive or "/" not in folder[len(prefix) :]:
            out.append({"type": "directory", "oid": git_blob_id(folder.encode()), "size": 0,
                        "path": folder})  # fmt: skip
    return out


# ---- the tiny models under the built-in catalogue's repos ---------------------------------------


def tiny_tokenizer_files(tokenizer: Path) -> dict[str, bytes]:
    """vocab.json, merges.txt and the rest, as SD1.5's repo has them, from the tiny tokenizer."""
    model = json.loads((tokenizer / "tokenizer.json").read_text())["model"]
    merges = [
        "#version: 0.2",
        *(" ".join(m) if isinstance(m, list) else m for m in model["merges"]),
    ]
    return {
        "tokenizer/vocab.json": json.dumps(model["vocab"]).encode(),
        "tokenizer/merges.txt": ("\n".join(merges) + "\n").encode(),
        "tokenizer/special_tokens_map.json": b'{"bos_token": "<|startoftext|>"}',
        "tokenizer/tokenizer_config.json": (tokenizer / "tokenizer_config.json").read_bytes(),
    }


def serve_tiny_models(hub: StandInHub, tiny: Path) -> None:
    """Put the tiny models (from `python -m backend make-tiny-models`) where the built-in
    catalogue looks: its repos and file names, with the tiny files' bytes. Each repo also holds
    what the real ones hold besides (a README, pickle weights), which no download may fetch."""
    sd = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    hub.add(
        sd,
        "v1-5-pruned-emaonly.safetensors",
        (tiny / "checkpoints/tiny-sd15-ldm.safetensors").read_bytes(),
    )
    for path, data in tiny_tokenizer_files(tiny / "checkpoints/tiny-sd15/tokenizer").items():
        hub.add(sd, path, data)
    depth = tiny / "controlnet/tiny-controlnet-depth"
    for repo in (
        "lllyasviel/control_v11f1p_sd15_depth",
        "lllyasviel/control_v11p_sd15_normalbae",
        "lllyasviel/control_v11p_sd15_lineart",
    ):
        _folder(hub, repo, depth, "diffusion_pytorch_model.fp16.safetensors")
    motion = "guoyww/animatediff-motion-adapter-v1-5-3"
    _folder(hub, motion, tiny / "motion/tiny-motion-adapter", "diffusion_pytorch_model.safetensors")
    sparse = "guoyww/animatediff-sparsectrl-rgb"
    _folder(
        hub,
        sparse,
        tiny / "sparsectrl/tiny-sparsectrl-rgb",
        "diffusion_pytorch_model.fp16.safetensors",
    )
    ip = "h94/IP-Adapter"
    hub.add(
        ip,
        "models/ip-adapter_sd15.safetensors",
        (tiny / "ip_adapter/tiny-ip-adapter-sd15.safetensors").read_bytes(),
    )
    encoder = tiny / "ip_adapter/image_encoder"
    hub.add(ip, "models/image_encoder/config.json", (encoder / "config.json").read_bytes())
    hub.add(
        ip, "models/image_encoder/model.safetensors", (encoder / "model.safetensors").read_bytes()
    )
    for repo in list(hub.repos):
        hub.add(repo, "README.md", b"# a model card\n")
        hub.add(repo, "diffusion_pytorch_model.bin", b"\x80\x02}q\x00.", lfs=True)  # a pickle


def _folder(hub: StandInHub, repo: str, folder: Path, weights_name: str) -> None:
    hub.add(repo, "config.json", (folder / "config.json").read_bytes())
    hub.add(repo, weights_name, (folder / "diffusion_pytorch_model.safetensors").read_bytes())
