"""The real backend process for the benchmarks: started on 127.0.0.1 with a temp data folder,
driven over HTTP with the add-on's own client (client/http.py), every phase of a job timed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from client.http import BackendClient, Connection

from ..jobs import Pass
from .stylize_shot import Shot

REPO = Path(__file__).resolve().parents[2]
TERMINAL = {"done", "failed", "canceled"}


class ServiceError(RuntimeError):
    """The backend failed to start or a job did not finish."""


@dataclass
class ServiceProcess:
    data: Path
    models: Path
    device: str = "cpu"
    threads: int = 1
    proc: subprocess.Popen[bytes] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def start(self, timeout: float = 120.0) -> BackendClient:
        self.data.mkdir(parents=True, exist_ok=True)
        ready = self.data / "backend.json"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(self.threads)}
        with open(self.data / "stdout.log", "ab") as log:
            self.proc = subprocess.Popen(
                [
                    *(sys.executable, "-m", "backend", "serve", "--port", "0"),
                    *("--device", self.device, "--data", str(self.data)),
                    *("--models", str(self.models)),
                ],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServiceError(f"the backend exited with {self.proc.returncode}:\n{self.log()}")
            try:
                info = json.loads(ready.read_text())
            except (OSError, ValueError):
                info = {}
            if info.get("pid") == self.proc.pid:
                self.info = info
                return BackendClient(Connection(info["url"], info["token"], timeout=120.0))
            time.sleep(0.05)  # waiting for the ready file, with a deadline
        raise ServiceError(f"the backend did not become ready in {timeout:.0f} s:\n{self.log()}")

    def log(self) -> str:
        try:
            return (self.data / "stdout.log").read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


class SharedService:
    """One backend process for every part of a run that needs one, started on first use."""

    def __init__(self, data: Path, models: Path, threads: int) -> None:
        self.process = ServiceProcess(data, models, device="cpu", threads=threads)
        self.client: BackendClient | None = None
        self.start_s = 0.0

    @property
    def models(self) -> Path:
        return self.process.models

    def get(self) -> BackendClient:
        if self.client is None:
            t0 = time.perf_counter()
            self.client = self.process.start()
            self.start_s = time.perf_counter() - t0
        return self.client

    def stop(self) -> None:
        self.process.stop()
        self.client = None


@dataclass(frozen=True)
class JobTiming:
    """Wall-clock phases of one job as the client saw them (seconds)."""

    upload_s: float  # create + every input PUT
    start_s: float  # the start request
    server_s: float  # start answered -> the server marked the job done (the server's own clock)
    poll_s: float  # the server marked it done -> the client's poll saw it
    download_s: float  # every output GET
    total_s: float  # create -> last output downloaded
    outputs: dict[int, bytes]
    job: dict[str, Any]


def run_job(
    client: BackendClient,
    shot: Shot,
    params: Mapping[str, Any],
    frames: Sequence[int] | None = None,
    poll_interval: float = 0.05,
    extra: Sequence[Pass] = (),
    timeout: float = 600.0,
) -> JobTiming:
    """Create, upload, start, poll until done, download: one stylize job over HTTP.

    Uploads the inputs the job requires plus the `extra` passes (e.g. vector for fusion)."""
    frames = list(range(shot.count) if frames is None else frames)
    body = {
        "kind": "stylize",
        "frames": frames,
        "width": shot.width,
        "height": shot.height,
        "params": dict(params),
    }
    t0 = time.time()
    job = client.create_job(body)
    uploads = {Pass(name): list(missing) for name, missing in job["missing_inputs"].items()}
    for p in extra:
        uploads.setdefault(p, frames)
    for p, needed in uploads.items():
        for f in needed:
            client.upload(job["id"], p.value, f, shot.frames[f].encoded(p))
    t_uploaded = time.time()
    client.start(job["id"])
    t_started = time.time()
    deadline = time.monotonic() + timeout
    while True:
        job = client.job(job["id"])
        if job["state"] in TERMINAL:
            break
        if time.monotonic() > deadline:
            raise ServiceError(f"job {job['id']} did not finish in {timeout:.0f} s: {job}")
        time.sleep(poll_interval)  # polling, as the add-on does
    t_seen = time.time()
    if job["state"] != "done":
        raise ServiceError(f"job {job['id']} ended {job['state']}: {job['error']}")
    server_done = float(job["updated_at"])
    outputs = {f: client.output(job["id"], f) for f in frames}
    t_end = time.time()
    return JobTiming(
        upload_s=t_uploaded - t0,
        start_s=t_started - t_uploaded,
        server_s=server_done - t_started,
        poll_s=t_seen - server_done,
        download_s=t_end - t_seen,
        total_s=t_end - t0,
        outputs=outputs,
        job=job,
    )
