"""Start the real backend process on a free loopback port and talk to it over real HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Backend:
    data: Path
    models: Path
    env: dict[str, str] = field(default_factory=dict)
    extra_args: list[str] = field(default_factory=list)
    proc: subprocess.Popen | None = None
    info: dict = field(default_factory=dict)
    log_file: Path | None = None

    @property
    def url(self) -> str:
        return self.info["url"]

    @property
    def token(self) -> str:
        return self.info["token"]

    @property
    def host_header(self) -> str:
        return f"127.0.0.1:{self.info['port']}"

    def start(self, timeout: float = 60.0) -> Backend:
        ready = self.data / "backend.json"
        self.log_file = self.data / "stdout.log"
        self.data.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **self.env}
        out = open(self.log_file, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "backend",
                "serve",
                "--port",
                "0",
                "--device",
                "cpu",
                "--data",
                str(self.data),
                "--models",
                str(self.models),
                *self.extra_args,
            ],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"backend exited with {self.proc.returncode}:\n{self.output()}")
            try:
                info = json.loads(ready.read_text())
            except (OSError, ValueError):
                info = {}
            if info.get("pid") == self.proc.pid:
                self.info = info
                return self
            time.sleep(0.05)  # polling the ready file, with a deadline
        raise RuntimeError(f"backend did not become ready:\n{self.output()}")

    def output(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file else ""

    def client(self, token: str | None = "default", **kw) -> httpx.Client:
        headers = {}
        if token == "default":
            token = self.token
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return httpx.Client(base_url=self.url, headers=headers, timeout=30.0, **kw)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def wait_for(client: httpx.Client, job_id: str, states: set[str], timeout: float = 120.0) -> dict:
    """Poll a job until it reaches one of `states` (the real client polls the same way)."""
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/v1/jobs/{job_id}").raise_for_status().json()
        if job["state"] in states:
            return job
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} stuck in {job['state']}: {job}")
        time.sleep(0.05)


def wait_until(client: httpx.Client, job_id: str, predicate, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/v1/jobs/{job_id}").raise_for_status().json()
        if predicate(job):
            return job
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id}: condition not reached: {job}")
        time.sleep(0.05)


def start_and_finish(client: httpx.Client, job_id: str) -> dict:
    """Start a job whose inputs are all uploaded and wait until it is done (asserted)."""
    r = client.post(f"/v1/jobs/{job_id}/start")
    assert r.status_code == 202, r.text
    done = wait_for(client, job_id, {"done", "failed", "canceled"})
    assert done["state"] == "done", done
    return done


def outputs(client: httpx.Client, job: dict) -> dict[int, bytes]:
    """Every frame of a finished job, as the PNG bytes the backend serves."""
    out = {}
    for f in job["frames"]:
        r = client.get(f"/v1/jobs/{job['id']}/outputs/{f}")
        assert r.status_code == 200, r.text
        out[f] = r.content
    return out


def run_bench(*args: str, timeout: float = 600) -> str:
    """`python -m backend bench ARGS` on one thread, as a user runs it; its stdout, after
    asserting it exited 0 (the output's tail in the message otherwise)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "backend", "bench", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout
