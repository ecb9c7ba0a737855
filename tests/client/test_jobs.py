"""The job runner against a real backend process started by the add-on's own launcher."""

from __future__ import annotations

import json
import os
import queue
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from client.backend import BackendConfig, BackendMode, check, connect, describe, is_loopback
from client.frames import frame_file
from client.http import API_VERSION, BackendClient, BackendUnreachable, Connection
from client.jobs import (
    Canceled,
    Created,
    Done,
    Failed,
    FrameReady,
    InputFeed,
    JobRunner,
    Message,
    Progress,
    atomic_write,
)
from client.launcher import LaunchError, read_ready, stop
from client.request import Request, from_json
from client.request_builder import ControlNetSetting, Settings, Shot, build_request
from tests.backend.images import png_bytes, png_pixels, textured_square_scene
from tests.backend.server import REPO

W, H = 48, 32


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackendConfig]:
    """A local backend started through client.backend.connect, as the add-on starts it."""
    root = tmp_path_factory.mktemp("local-backend")
    config = BackendConfig(
        mode=BackendMode.LOCAL,
        root=REPO,
        data_dir=root / "data",
        models_dir=root / "models",
        python=Path(sys.executable),
        device="cpu",
        start_timeout=60,
    )
    connect(config)
    ready = read_ready(config.data_dir)
    assert ready is not None
    pid = int(ready["pid"])
    yield config
    stop(config.data_dir)
    os.waitpid(pid, 0)


def keys_on_disk(folder: Path, frames: dict[int, int]) -> dict[tuple[str, int], Path]:
    """Keyframe PNGs of a square that moves: frame → square position."""
    folder.mkdir(parents=True, exist_ok=True)
    inputs = {}
    for frame, x in frames.items():
        path = folder / frame_file(frame)
        path.write_bytes(png_bytes(textured_square_scene(W, H, x)))
        inputs[("keyframe", frame)] = path
    return inputs


def drain(runner: JobRunner, timeout: float = 60.0) -> list[Message]:
    """Everything the runner says, up to and including its final message."""
    seen: list[Message] = []
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no final message within {timeout} s: {seen[-3:]}")
        try:
            message = runner.messages.get(timeout=remaining)
        except queue.Empty:
            continue
        seen.append(message)
        if isinstance(message, Done | Failed | Canceled):
            assert runner.join(10)
            return seen


def client_for(config: BackendConfig) -> BackendClient:
    return BackendClient(connect(config, start=False))


def test_inbetween_end_to_end_then_reattach_by_id(local: BackendConfig, tmp_path: Path) -> None:
    request = build_request(
        "inbetween",
        Settings(inbetween_method="flow"),
        Shot(W, H, frames=tuple(range(1, 8)), keyframes=(1, 5)),
    )
    inputs = keys_on_disk(tmp_path / "keys", {1: 4, 5: 20})
    out = tmp_path / "take"
    runner = JobRunner("take-e2e", lambda: client_for(local), out, request=request, inputs=inputs)
    runner.start()
    messages = drain(runner)

    created = [m for m in messages if isinstance(m, Created)]
    assert len(created) == 1 and runner.job_id == created[0].job_id
    ready = sorted(m.frame for m in messages if isinstance(m, FrameReady))
    assert ready == list(range(1, 8))
    assert any(isinstance(m, Progress) for m in messages)
    done = messages[-1]
    assert isinstance(done, Done) and done.frames == tuple(range(1, 8))
    assert sorted(p.name for p in out.iterdir()) == [frame_file(f) for f in range(1, 8)]
    # key frames come back exactly; frames after the last key hold it
    key1 = png_pixels(inputs[("keyframe", 1)].read_bytes())
    key5 = png_pixels(inputs[("keyframe", 5)].read_bytes())
    assert np.array_equal(png_pixels((out / "0001.png").read_bytes()), key1)
    assert np.array_equal(png_pixels((out / "0007.png").read_bytes()), key5)
    middle = png_pixels((out / "0003.png").read_bytes())
    assert middle.shape == (H, W, 3) and not np.array_equal(middle, key1)

    # a closed Blender loses nothing: a new runner fetches the same job by id
    again = JobRunner("take-e2e", lambda: client_for(local), tmp_path / "again", job_id=done.job_id)
    again.run()  # on this thread: the same code the background-mode operator runs
    said = list(_all(again.messages))
    final = said[-1]
    assert isinstance(final, Done) and final.job_id == done.job_id
    found = [m for m in said if isinstance(m, Created)]
    assert [from_json(m.request_json) for m in found] == [request]  # rebuilt from the job
    for f in range(1, 8):
        assert (tmp_path / "again" / frame_file(f)).read_bytes() == (
            out / frame_file(f)
        ).read_bytes()


def test_the_same_take_is_not_submitted_twice(local: BackendConfig, tmp_path: Path) -> None:
    request = build_request("inbetween", Settings(), Shot(W, H, frames=(1, 2, 3), keyframes=(1, 3)))
    inputs = keys_on_disk(tmp_path / "keys", {1: 4, 3: 12})
    ids = []
    for folder in ("a", "b"):
        runner = JobRunner("same-take", lambda: client_for(local), tmp_path / folder,
                           request=request, inputs=inputs)  # fmt: skip
        runner.run()
        ids.append(next(m.job_id for m in _all(runner.messages) if isinstance(m, Created)))
    assert ids[0] == ids[1]


def test_cancel_mid_job(local: BackendConfig, tmp_path: Path) -> None:
    n = 2000  # long enough (seconds) that the cancel lands while the backend is running
    request = build_request(
        "inbetween",
        Settings(inbetween_method="crossfade"),
        Shot(W, H, frames=tuple(range(1, n + 1)), keyframes=(1, n)),
    )
    inputs = keys_on_disk(tmp_path / "keys", {1: 4, n: 20})
    runner = JobRunner(
        "take-cancel", lambda: client_for(local), tmp_path / "out", request=request, inputs=inputs
    )
    runner.start()
    deadline = time.monotonic() + 60
    while True:
        message = runner.messages.get(timeout=max(deadline - time.monotonic(), 0.01))
        if isinstance(message, FrameReady):
            break
        assert not isinstance(message, Done | Failed | Canceled), message
    runner.cancel()
    final = drain(runner)[-1]
    assert isinstance(final, Canceled) and final.job_id == runner.job_id
    assert 1 <= final.frames_fetched < n

    client = client_for(local)
    deadline = time.monotonic() + 30
    while (job := client.job(runner.job_id))["state"] != "canceled":
        assert time.monotonic() < deadline, job
        time.sleep(0.05)  # polling the backend's state, with a deadline
    assert len(job["finished_frames"]) < n
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".tmp")]


def test_backend_down_fails_fast_with_a_sentence(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead = Connection(f"http://127.0.0.1:{port}", "t" * 20, timeout=5)
    request = build_request("inbetween", Settings(), Shot(W, H, (1, 2), (1, 2)))
    runner = JobRunner("down", lambda: BackendClient(dead), tmp_path, request=request, inputs={})
    started = time.monotonic()
    runner.start()
    final = drain(runner, timeout=30)[-1]
    assert isinstance(final, Failed) and final.job_id is None and final.unreachable
    assert "no Framesmith backend answered" in final.message
    assert time.monotonic() - started < 10


def test_launch_errors_become_failed_messages(tmp_path: Path) -> None:
    config = BackendConfig(
        BackendMode.LOCAL, REPO, tmp_path / "data", tmp_path / "models", python=tmp_path / "py"
    )
    runner = JobRunner(
        "nopython",
        lambda: BackendClient(connect(config)),
        tmp_path,
        request=build_request("inbetween", Settings(), Shot(W, H, (1, 2), (1, 2))),
    )
    runner.run()
    final = list(_all(runner.messages))[-1]
    assert isinstance(final, Failed) and "preferences" in final.message
    with pytest.raises(LaunchError):
        connect(config)


def test_backend_refusals_are_reported_in_its_words(local: BackendConfig, tmp_path: Path) -> None:
    request = build_request("inbetween", Settings(), Shot(W * 2, H, (1, 2), (1, 2)))
    inputs = keys_on_disk(tmp_path, {1: 4, 2: 8})  # W×H images for a 2W×H job
    runner = JobRunner("wrong-size", lambda: client_for(local), tmp_path / "o",
                       request=request, inputs=inputs)  # fmt: skip
    runner.run()
    final = list(_all(runner.messages))[-1]
    assert isinstance(final, Failed)
    # both keys are refused; uploaded in parallel, either refusal may come back first
    assert final.message.startswith(("keyframe frame 1: ", "keyframe frame 2: ")), final.message
    assert "48×32 pixels but the job is 96×32" in final.message


def test_remote_config_and_status_lines(local: BackendConfig) -> None:
    running = connect(local, start=False)
    remote = BackendConfig(
        BackendMode.REMOTE, REPO, Path("/nonexistent"), Path("/nonexistent"),
        url=running.url, token=running.token,
    )  # fmt: skip
    lines = check(connect(remote))
    assert lines[0].startswith("Backend ") and " on cpu" in lines[0]
    assert any(line.startswith("inbetween: ready for flow") for line in lines)
    assert is_loopback(running.url) and not is_loopback("http://gpu-box.studio.lan:8000")
    with pytest.raises(BackendUnreachable, match="token"):
        connect(BackendConfig(BackendMode.REMOTE, REPO, Path(), Path(), url=running.url))
    with pytest.raises(BackendUnreachable, match="http"):
        connect(BackendConfig(BackendMode.REMOTE, REPO, Path(), Path(), url="gpu", token="x"))


def test_check_backend_says_when_the_api_versions_differ() -> None:
    health = {"api": "v2", "version": "2.0.0", "device": "cpu", "pipelines": {}}
    lines = describe(health, {}, "http://gpu-box:8000")
    assert lines[0] == "Backend 2.0.0 (API v2) on cpu"
    assert lines[1].startswith("The backend at http://gpu-box:8000 speaks API v2")
    assert len(describe({**health, "api": API_VERSION}, {})) == 1


def next_message(runner: JobRunner, timeout: float = 30.0) -> Message:
    return runner.messages.get(timeout=timeout)


def test_inputs_stream_in_while_the_runner_runs(local: BackendConfig, tmp_path: Path) -> None:
    """Blender renders one key per timer tick: the job exists before the first key is written,
    each key is uploaded as it comes, and the job starts once the feed is closed."""
    request = build_request("inbetween", Settings(), Shot(W, H, frames=(1, 2, 3), keyframes=(1, 3)))
    feed = InputFeed(expected=2)
    runner = JobRunner("streamed", lambda: client_for(local), tmp_path / "o",
                       request=request, inputs=feed)  # fmt: skip
    runner.start()
    created = next_message(runner)
    assert isinstance(created, Created)
    assert client_for(local).job(created.job_id)["state"] == "awaiting_inputs"
    for frame, x in ((1, 4), (3, 12)):
        ((key, path),) = keys_on_disk(tmp_path / "keys", {frame: x}).items()
        feed.put(*key, path)
        uploaded = next_message(runner)
        assert isinstance(uploaded, Progress) and uploaded.stage == "uploading"
        assert (uploaded.done, uploaded.total) == ((1, 2) if frame == 1 else (2, 2))
    feed.close()
    final = drain(runner)[-1]
    assert isinstance(final, Done) and final.frames == (1, 2, 3)
    with pytest.raises(RuntimeError, match="closed"):
        feed.put("keyframe", 2, path)


def test_abort_fails_the_take_and_cancels_it_on_the_backend(
    local: BackendConfig, tmp_path: Path
) -> None:
    """A render that fails on Blender's side ends the take with its message; the half-fed job is
    canceled on the backend, not left waiting for inputs."""
    request = build_request("inbetween", Settings(), Shot(W, H, frames=(1, 2, 3), keyframes=(1, 3)))
    runner = JobRunner("aborted", lambda: client_for(local), tmp_path / "o",
                       request=request, inputs=InputFeed(expected=2))  # fmt: skip
    runner.start()
    created = next_message(runner)
    assert isinstance(created, Created)
    runner.abort("rendering frame 3 failed: out of memory")
    final = drain(runner)[-1]
    assert isinstance(final, Failed) and final.message.endswith("out of memory")
    assert not final.unreachable
    assert client_for(local).job(created.job_id)["state"] == "canceled"


def test_cancelling_a_job_that_just_finished_is_not_a_failure(
    local: BackendConfig, tmp_path: Path
) -> None:
    """The backend answers 409 to a cancel that arrives after the job ended: the take stops as
    asked, and the job keeps its frames for a re-import."""
    request = build_request("inbetween", Settings(), Shot(W, H, frames=(1, 2, 3), keyframes=(1, 3)))
    inputs = keys_on_disk(tmp_path / "keys", {1: 4, 3: 12})
    first = JobRunner("late", lambda: client_for(local), tmp_path / "a",
                      request=request, inputs=inputs)  # fmt: skip
    first.run()
    done = list(_all(first.messages))[-1]
    assert isinstance(done, Done)
    late = JobRunner("late", lambda: client_for(local), tmp_path / "b", job_id=done.job_id)
    late.cancel()
    late.run()
    final = list(_all(late.messages))[-1]
    assert isinstance(final, Canceled), final
    assert client_for(local).job(done.job_id)["state"] == "done"


def test_reattached_job_that_never_got_its_inputs_fails_with_a_sentence(
    local: BackendConfig, tmp_path: Path
) -> None:
    request = build_request("inbetween", Settings(), Shot(W, H, frames=(1, 2), keyframes=(1, 2)))
    job = client_for(local).create_job(request.job_body())
    runner = JobRunner("orphan", lambda: client_for(local), tmp_path, job_id=job["id"])
    runner.run()
    final = list(_all(runner.messages))[-1]
    assert isinstance(final, Failed) and "run the take again" in final.message


def test_atomic_write_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "0001.png"
    atomic_write(target, b"one")
    atomic_write(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in target.parent.iterdir()] == ["0001.png"]


def _all(q: queue.Queue[Message]) -> Iterator[Message]:
    while True:
        try:
            yield q.get_nowait()
        except queue.Empty:
            return


# --- parallel uploads ---------------------------------------------------------------------------


class UploadGate:
    """Wraps a client's upload method: records every call, counts the uploads in flight, and
    holds the calls for `held` frames until `release()`, or (with `open_at`) until that many
    are in flight at once. A hold that outlives `patience` lets go, so a broken runner fails
    the test's assertions instead of hanging it."""

    def __init__(
        self,
        client: BackendClient,
        held: Callable[[int], bool] = lambda frame: True,
        open_at: int | None = None,
        patience: float = 10.0,
    ) -> None:
        self.calls: list[tuple[str, int]] = []
        self.in_flight = 0
        self.peak = 0
        self._state = threading.Condition()
        self._open = False
        real = client.upload

        def may_go() -> bool:
            return self._open or (open_at is not None and self.peak >= open_at)

        def upload(job_id: str, pass_name: str, frame: int, data: bytes) -> dict:
            with self._state:
                self.calls.append((pass_name, frame))
                self.in_flight += 1
                self.peak = max(self.peak, self.in_flight)
                self._state.notify_all()
                if held(frame) and not self._state.wait_for(may_go, timeout=patience):
                    self._open = True
            try:
                return real(job_id, pass_name, frame, data)
            finally:
                with self._state:
                    self.in_flight -= 1
                    self._state.notify_all()

        client.upload = upload  # type: ignore[method-assign]

    def wait_in_flight(self, count: int, timeout: float = 30.0) -> bool:
        with self._state:
            return self._state.wait_for(lambda: self.in_flight >= count, timeout)

    def release(self) -> None:
        with self._state:
            self._open = True
            self._state.notify_all()


def many_keys(tmp_path: Path, count: int) -> tuple[Request, dict[tuple[str, int], Path]]:
    """An in-between on every other frame: `count` keyframes to upload."""
    keys = tuple(range(1, 2 * count, 2))
    request = build_request(
        "inbetween", Settings(), Shot(W, H, tuple(range(1, keys[-1] + 1)), keys)
    )
    return request, keys_on_disk(tmp_path / "keys", {k: 2 + k for k in keys})


def final_message(runner: JobRunner, timeout: float = 30.0) -> Message:
    """The runner's final message, without waiting for its thread to end."""
    while not isinstance(message := next_message(runner, timeout), Done | Failed | Canceled):
        pass
    return message


def test_uploads_overlap_and_the_job_starts_after_the_last(
    local: BackendConfig, tmp_path: Path
) -> None:
    request, inputs = many_keys(tmp_path, 8)
    client = client_for(local)
    gate = UploadGate(client, open_at=4)  # each upload waits until four are in flight
    started_with: list[tuple[int, int]] = []
    start = client.start

    def counted_start(job_id: str) -> dict:
        started_with.append((len(gate.calls), gate.in_flight))
        return start(job_id)

    client.start = counted_start  # type: ignore[method-assign]
    runner = JobRunner("parallel", lambda: client, tmp_path / "o", request=request,
                       inputs=inputs, poll_interval=0.05)  # fmt: skip
    runner.start()
    messages = drain(runner)
    assert isinstance(messages[-1], Done), messages[-1]
    assert gate.peak == 4  # four at once, never more
    assert sorted(gate.calls) == sorted(inputs)
    assert started_with == [(8, 0)]  # started once, after every upload had returned
    counts = [m.done for m in messages if isinstance(m, Progress) and m.stage == "uploading"]
    assert counts == list(range(1, 9))


def test_a_failed_upload_fails_the_take_and_nothing_more_is_sent(
    local: BackendConfig, tmp_path: Path
) -> None:
    """Two uploaders: the first holds key 1 while the second sends key 3, which the backend
    refuses; no later key is sent, the take fails in the backend's words before the held upload
    ends, and the half-fed job is canceled on the backend."""
    request, inputs = many_keys(tmp_path, 8)
    inputs[("keyframe", 3)].write_bytes(png_bytes(textured_square_scene(W * 2, H, 4)))
    client = client_for(local)
    gate = UploadGate(client, held=lambda frame: frame == 1)
    runner = JobRunner("upload-error", lambda: client, tmp_path / "o", request=request,
                       inputs=inputs, poll_interval=0.05, upload_workers=2)  # fmt: skip
    runner.start()
    final = final_message(runner)
    assert isinstance(final, Failed) and not final.unreachable
    assert final.message.startswith("keyframe frame 3:"), final.message
    assert sorted(gate.calls) == [("keyframe", 1), ("keyframe", 3)]
    gate.release()
    assert runner.join(30)
    assert sorted(gate.calls) == [("keyframe", 1), ("keyframe", 3)]
    assert client_for(local).job(runner.job_id)["state"] == "canceled"


def test_cancel_mid_upload_stops_at_once_and_sends_nothing_more(
    local: BackendConfig, tmp_path: Path
) -> None:
    request, inputs = many_keys(tmp_path, 8)
    client = client_for(local)
    gate = UploadGate(client)
    runner = JobRunner("cancel-uploads", lambda: client, tmp_path / "o", request=request,
                       inputs=inputs, poll_interval=0.05)  # fmt: skip
    runner.start()
    assert gate.wait_in_flight(4)
    runner.cancel()
    final = final_message(runner)  # while the four uploads in flight are still held
    assert isinstance(final, Canceled) and final.job_id == runner.job_id
    assert len(gate.calls) == 4
    gate.release()
    assert runner.join(30)
    assert len(gate.calls) == 4  # the held ones finished; none started after the cancel
    assert client_for(local).job(runner.job_id)["state"] == "canceled"


# --- the check before anything is rendered ------------------------------------------------------


class CountingFeed(InputFeed):
    """An input feed that counts how often the runner asked it for an input."""

    reads = 0

    def next(self, timeout: float) -> tuple[str, int, Path] | None:
        self.reads += 1
        return super().next(timeout)


def test_a_model_that_is_not_installed_fails_before_any_input_is_read(
    local: BackendConfig, tmp_path: Path
) -> None:
    settings = Settings(
        prompt="ink",
        checkpoint="sd15-not-installed",
        controlnets=(ControlNetSetting("depth", enabled=True),),
    )
    request = build_request("stylize", settings, Shot(W, H, (1, 2)))
    feed = CountingFeed(expected=4)
    client = client_for(local)
    before = {j["id"] for j in client.jobs()}
    runner = JobRunner("no-model", lambda: client_for(local), tmp_path / "o",
                       request=request, inputs=feed)  # fmt: skip
    runner.start()
    said = drain(runner)
    final = said[-1]
    assert isinstance(final, Failed) and final.job_id is None and not final.unreachable
    assert final.message.startswith("models missing: ") and "sd15-not-installed" in final.message
    assert [m for m in said if not isinstance(m, Failed)] == []
    assert feed.reads == 0
    assert {j["id"] for j in client.jobs()} == before
    assert runner.ready.is_set()  # set when the runner ends, too: nobody waits on it forever


class FutureBackend(BaseHTTPRequestHandler):
    """A stand-in for a backend of a later API: its health says v2, every other route is 404."""

    asked: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.asked.append(f"GET {self.path}")
        if self.path == "/v1/health":
            self.answer(200, {"api": "v2", "version": "2.0.0", "device": "cpu", "pipelines": {}})
        else:
            self.answer(404, {"detail": "Not Found"})

    def do_POST(self) -> None:
        self.asked.append(f"POST {self.path}")
        self.answer(404, {"detail": "Not Found"})

    def answer(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def future_backend() -> Iterator[str]:
    FutureBackend.asked = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FutureBackend)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def test_a_backend_of_another_api_version_is_refused_first(
    future_backend: str, tmp_path: Path
) -> None:
    request = build_request("inbetween", Settings(), Shot(W, H, (1, 2, 3), (1, 3)))
    feed = CountingFeed(expected=2)
    connection = Connection(future_backend, "t" * 20, timeout=5)
    runner = JobRunner("v2", lambda: BackendClient(connection), tmp_path,
                       request=request, inputs=feed)  # fmt: skip
    runner.start()
    final = drain(runner)[-1]
    assert isinstance(final, Failed) and final.job_id is None and not final.unreachable
    assert f"speaks API v2 (Framesmith 2.0.0) and this add-on speaks {API_VERSION}" in (
        final.message
    )
    assert "same Framesmith version" in final.message
    assert FutureBackend.asked == ["GET /v1/health"]
    assert feed.reads == 0 and runner.ready.is_set()


def test_a_request_the_backend_can_run_passes_the_check_and_sets_ready(
    local: BackendConfig, tmp_path: Path
) -> None:
    request = build_request("inbetween", Settings(), Shot(W, H, (1, 2, 3), (1, 3)))
    feed = InputFeed(expected=2)
    runner = JobRunner("checked", lambda: client_for(local), tmp_path / "o",
                       request=request, inputs=feed)  # fmt: skip
    assert not runner.ready.is_set()
    runner.start()
    assert runner.ready.wait(30)
    assert runner.alive  # waiting for the inputs Blender is about to render
    assert isinstance(next_message(runner), Created)
    for key, path in keys_on_disk(tmp_path / "keys", {1: 4, 3: 12}).items():
        feed.put(*key, path)
    feed.close()
    assert isinstance(drain(runner)[-1], Done)
