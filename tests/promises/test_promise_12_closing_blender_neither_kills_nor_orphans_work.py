"""Promise 12: closing Blender neither kills nor orphans work.

A client that disconnects mid-job (or mid-upload) finds its results by job id later, through the
add-on's own HTTP client. A backend started by the add-on's launcher exits on its own once it is
idle with no job left (and not while a job runs, even when nobody polls). A second Blender
calling the launcher at the same moment reuses the running backend through its ready and lock
files instead of starting another.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from backend.data_folder import ALREADY_RUNNING_EXIT
from backend.worker import HOLD_ENV
from client.backend import BackendConfig, BackendMode
from client.http import BackendClient, Connection
from client.launcher import LaunchSpec, Running, ensure_backend, find_running, stop
from tests.backend.images import png_bytes
from tests.backend.server import REPO
from tests.promises.support import create_inbetween, square_keys, start, wait_files

W, H = 160, 120


def spec_for(tmp_path: Path, **kw) -> LaunchSpec:
    return LaunchSpec(
        python=Path(sys.executable),
        root=REPO,
        data_dir=tmp_path / "data",
        models_dir=tmp_path / "models",
        device="cpu",
        **kw,
    )


def wait_exit(pid: int, timeout: float = 60.0) -> int:
    """Reap a backend child the launcher started; returns its exit status."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)  # polling the child's exit, with a deadline
    raise TimeoutError(f"backend {pid} did not exit")


def test_a_client_that_disconnects_finds_its_results_by_id(make_backend) -> None:
    b = make_backend().start()
    keys = square_keys({0: 4.0, 30: 100.0}, W, H)
    frames = range(0, 31)
    with b.client() as c:  # "Blender" submits, then closes while the job runs
        job_id = create_inbetween(c, keys, frames)["id"]
        assert start(c, job_id)["state"] in ("queued", "running")
        half = create_inbetween(c, keys, frames, upload=False)["id"]
    # ... and another dies half-way through an upload
    body = png_bytes(keys[0])
    with socket.create_connection(("127.0.0.1", b.info["port"])) as s:
        s.sendall(
            (
                f"PUT /v1/jobs/{half}/inputs/keyframe/0 HTTP/1.1\r\nHost: {b.host_header}\r\n"
                f"Authorization: Bearer {b.token}\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            + body[: len(body) // 2]
        )

    # A new session of the add-on's own client, knowing only the job ids.
    client = BackendClient(Connection(b.url, b.token))
    assert client.job(job_id)["state"] in ("queued", "running")
    final = wait_for_done(client, job_id)
    assert final["state"] == "done" and final["finished_frames"] == list(frames)
    assert all(client.output(job_id, f).startswith(b"\x89PNG") for f in frames)
    assert client.job(half)["missing_inputs"] == {"keyframe": [0, 30]}


def test_a_launched_backend_exits_when_idle_with_no_job_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_on_spec = BackendConfig(
        BackendMode.LOCAL, REPO, tmp_path / "d", tmp_path / "m", python=Path(sys.executable)
    ).launch_spec()
    assert add_on_spec.idle_exit_s > 0, "the add-on's local backend must have an idle exit"

    # The launched backend inherits the hook: its job stays "running" until canceled, however
    # fast this machine is.
    monkeypatch.setenv(HOLD_ENV, "3")
    spec = spec_for(tmp_path, idle_exit_s=1)
    running = ensure_backend(spec, timeout=60)
    assert running.started_here
    try:
        c = BackendClient(running.connection)
        keys = square_keys({0: 4.0, 8: 40.0})
        body = {"kind": "inbetween", "frames": list(range(9)), "keyframes": [0, 8],
                "width": 64, "height": 48, "params": {}}  # fmt: skip
        job = c.create_job(body)
        for f, img in keys.items():
            c.upload(job["id"], "keyframe", f, png_bytes(img))
        c.start(job["id"])
        out = spec.data_dir / "jobs" / job["id"] / "outputs"
        wait_files(out, 3, alive=lambda: alive(running.pid))
        # No request for three idle timeouts while the job runs: the backend must stay.
        window_ends = time.monotonic() + 3 * spec.idle_exit_s
        while time.monotonic() < window_ends:
            assert alive(running.pid), "the backend exited while a job was running"
            time.sleep(0.05)  # watching for an exit during the window
        c.cancel(job["id"])
        assert wait_for_done(c, job["id"])["state"] == "canceled"
    except BaseException:
        stop(spec.data_dir)
        raise
    assert wait_exit(running.pid) == 0  # now idle with no job left: it exits on its own
    assert find_running(spec.data_dir) is None
    assert not (spec.data_dir / "backend.json").exists()
    log = (spec.data_dir / "logs" / "backend.log").read_text()
    assert "idle for 1 s with no job left" in log


def alive(pid: int) -> bool:
    return os.waitpid(pid, os.WNOHANG)[0] == 0


def wait_for_done(c: BackendClient, job_id: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while (job := c.job(job_id))["state"] not in ("done", "failed", "canceled"):
        assert time.monotonic() < deadline, job
        time.sleep(0.05)  # polling the job, with a deadline
    return job


def test_a_second_blender_reuses_the_running_backend(tmp_path: Path) -> None:
    spec = spec_for(tmp_path)
    results: list[Running] = []
    errors: list[BaseException] = []

    def blender() -> None:
        try:
            results.append(ensure_backend(spec, timeout=60))
        except BaseException as exc:
            errors.append(exc)

    both = [threading.Thread(target=blender) for _ in range(2)]
    for t in both:
        t.start()
    for t in both:
        t.join(90)
    try:
        assert errors == [] and len(results) == 2, errors
        assert len({r.pid for r in results}) == 1, "two backends were started"
        assert len({r.connection.url for r in results}) == 1
        third = ensure_backend(spec, timeout=60)
        assert not third.started_here and third.pid == results[0].pid
        assert BackendClient(third.connection).health()["api"] == "v1"
        log = (spec.data_dir / "launcher.log").read_text()
        assert third.connection.token not in log, "the token leaked into the launcher log"
    finally:
        assert stop(spec.data_dir)
    assert wait_exit(results[0].pid) == 0  # SIGTERM: a clean stop, its ready file removed
    assert not (spec.data_dir / "backend.json").exists()


def test_a_second_backend_on_the_same_data_folder_refuses(make_backend) -> None:
    """The lock behind the reuse: the OS holds it for the first backend's lifetime."""
    first = make_backend("same").start()
    second = subprocess.run(
        [sys.executable, "-m", "backend", "serve", "--data", str(first.data), "--device", "cpu"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == ALREADY_RUNNING_EXIT, second.stderr
    assert f"pid {first.proc.pid}" in second.stderr and first.url in second.stderr
    assert first.token not in second.stderr, "the token must never be printed"
    info = json.loads((first.data / "backend.json").read_text())
    assert info["pid"] == first.proc.pid
    with first.client() as c:
        assert c.get("/v1/health").status_code == 200
