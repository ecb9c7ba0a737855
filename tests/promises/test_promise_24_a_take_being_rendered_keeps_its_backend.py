"""Promise 24: a take being rendered keeps its backend, and a lost backend is said.

A local backend exits when idle, but a job waiting for its inputs is work: Blender may render
a take for longer than the idle timeout before its last upload. The backend stays up, takes the
inputs, finishes the job, and only then exits on its own. If the backend goes away while Blender
is still rendering, the add-on's runner says so in a sentence within its grace period instead
of waiting for the next render.
"""

from __future__ import annotations

import time
from pathlib import Path

from client.http import BackendClient, Connection
from client.jobs import FINAL, Failed, InputFeed, JobRunner, Message, Progress
from client.request_builder import Settings, Shot, build_request
from tests.backend.images import png_bytes
from tests.backend.server import Backend, start_and_finish
from tests.promises.support import create_inbetween, square_keys

IDLE_S = 1


def wait_log(b: Backend, text: str, timeout: float = 30.0) -> None:
    log = b.data / "logs" / "backend.log"
    deadline = time.monotonic() + timeout
    while text not in (log.read_text() if log.exists() else ""):
        assert b.proc.poll() is None, f"the backend exited:\n{b.output()[-2000:]}"
        assert time.monotonic() < deadline, f"no {text!r} in the log"
        time.sleep(0.05)  # polling the log, with a deadline


def test_a_job_waiting_for_inputs_keeps_an_idle_backend_up(make_backend) -> None:
    b: Backend = make_backend(extra_args=["--idle-exit", str(IDLE_S)]).start()
    keys = square_keys({0: 4.0, 8: 36.0})
    with b.client() as c:
        job = create_inbetween(c, keys, range(9), upload=False)
    # No request for longer than the idle timeout: the backend stays for the waiting job.
    wait_log(b, f"idle for {IDLE_S} s, but 1 job(s) wait for inputs: staying up")
    assert b.proc.poll() is None
    with b.client() as c:
        for f, img in keys.items():
            up = c.put(f"/v1/jobs/{job['id']}/inputs/keyframe/{f}", content=png_bytes(img))
            assert up.status_code == 200, up.text
        start_and_finish(c, job["id"])
    assert b.proc.wait(30) == 0, "the backend did not exit once idle with no job left"
    assert f"idle for {IDLE_S} s with no job left: exiting" in b.output()


def test_the_runner_says_when_the_backend_went_away_mid_take(make_backend, tmp_path: Path) -> None:
    b: Backend = make_backend().start()
    connection = Connection(b.url, b.token, timeout=5.0)
    key = tmp_path / "key0.png"
    key.write_bytes(png_bytes(square_keys({0: 4.0})[0]))
    feed = InputFeed(expected=2)
    request = build_request("inbetween", Settings(), Shot(64, 48, tuple(range(9)), (0, 8)))
    runner = JobRunner(
        "take-1", lambda: BackendClient(connection), tmp_path / "out", request=request,
        inputs=feed, poll_interval=0.05, reconnect_grace=1.0, heartbeat_interval=0.2,
    )  # fmt: skip
    runner.start()
    feed.put("keyframe", 0, key)  # the first render is sent; the second is still rendering
    _wait_uploaded(runner)
    b.kill9()  # the backend goes away while Blender renders
    final = _final_message(runner, timeout=30.0)
    assert isinstance(final, Failed) and final.unreachable, final
    assert "stopped answering while Blender was rendering the take" in final.message
    assert "run the take again" in final.message
    feed.close()


def _wait_uploaded(runner: JobRunner, timeout: float = 30.0) -> None:
    """Until the runner says the first input was sent (the backend answered its upload)."""
    deadline = time.monotonic() + timeout
    while True:
        message = runner.messages.get(timeout=max(0.01, deadline - time.monotonic()))
        assert not isinstance(message, FINAL), message
        if isinstance(message, Progress) and message.stage == "uploading" and message.done == 1:
            return


def _final_message(runner: JobRunner, timeout: float) -> Message:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        assert left > 0, "the runner is still waiting for a backend that went away"
        message = runner.messages.get(timeout=left)
        if isinstance(message, FINAL):
            return message
