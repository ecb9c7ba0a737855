"""The job runner against a real backend process started by the add-on's own launcher."""

from __future__ import annotations

import os
import queue
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from client.backend import BackendConfig, BackendMode, check, connect, is_loopback
from client.frames import frame_file
from client.http import BackendClient, BackendUnreachable, Connection
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
from client.request import Settings, Shot, build_request, from_json
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
    assert isinstance(final, Failed) and "keyframe frame 1" in final.message


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
