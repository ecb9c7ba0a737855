"""Long shots: what a job holds does not grow with the shot.

Render-assisted in-betweening keeps a few frames whatever the distance between the keys (key 1's
tracks wait on disk, in the job's scratch folder, which goes with the job's run); the worker
keeps decoded inputs of the current chunk's own frames only; the shot-wide depth range is found
reading one frame at a time, bit for bit as from every frame at once (np.percentile's own
figures, from counts of the samples' bit patterns). Memory is measured with
tracemalloc (numpy reports its buffers to it): counted bytes, not timings. The benchmark
(`python -m backend bench memory`) measures whole processes at 640×360 and 1080p.
"""

from __future__ import annotations

import threading
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from backend.jobs import Pass
from backend.pipelines.base import Chunk
from backend.pipelines.inbetween_guided import GuidedInterpolator
from backend.store import Store
from backend.vision.passes import depth_range, depth_range_streamed
from backend.vision.quantiles import streamed_percentiles
from backend.worker import HOLD_ENV, JobContext
from tests.backend.images import exr_bytes, png_bytes
from tests.backend.server import wait_for, wait_until
from tests.backend.test_inbetween_guided import Frame, H, Layer, W, _texture, render


def gliding_shot(frames: int) -> list[Frame]:
    """A near square gliding over a farther one, slow enough to cross the frame in any length."""
    step = 56.0 / (frames - 1)
    near = Layer(_texture(20, 20, 2), 5.0, tuple((4 + round(step * f), 20) for f in range(frames)))
    far = Layer(_texture(18, 18, 3), 10.0, tuple((60 - round(step * f / 2), 30) for f in range(frames)))  # fmt: skip
    return render([near, far], frames)


def _keys(shot: list[Frame]) -> tuple[np.ndarray, np.ndarray]:
    return shot[0].image.astype(np.float32) / 255.0, shot[-1].image.astype(np.float32) / 255.0


def _peak_bytes(shot: list[Frame]) -> int:
    """tracemalloc's peak while every frame between the shot's end keys is made in turn."""
    k1 = len(shot) - 1

    def guides(f: int) -> tuple[np.ndarray, np.ndarray]:
        return shot[f].vector, shot[f].depth[..., None]

    tracemalloc.start()
    try:
        with GuidedInterpolator(*_keys(shot), 0, k1, range(1, k1), guides) as interp:
            for t in range(1, k1):
                interp.at(t)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_render_assisted_memory_does_not_grow_with_the_distance_between_keys() -> None:
    near, far = _peak_bytes(gliding_shot(9)), _peak_bytes(gliding_shot(41))
    # Tracks of every in-between held in memory: about 0.2 MB a frame here, so 41 frames would
    # peak over 5 MB above 9 frames. Held on disk: the same few frames either way.
    assert far < 1.2 * near, (near, far)


def test_render_assisted_frames_asked_out_of_order_are_the_same_frames() -> None:
    shot = gliding_shot(12)

    def guides(f: int) -> tuple[np.ndarray, np.ndarray]:
        return shot[f].vector, shot[f].depth[..., None]

    with GuidedInterpolator(*_keys(shot), 0, 11, range(1, 11), guides) as interp:
        ascending = {t: interp.at(t) for t in range(1, 11)}
        for t in (7, 3, 3, 10, 1):  # back to key 0, the walk starts again
            assert interp.at(t).tobytes() == ascending[t].tobytes(), t
    with pytest.raises(ValueError, match="not one of this interval's targets"):
        GuidedInterpolator(*_keys(shot), 0, 11, (2, 4), guides).at(3)


def test_render_assisted_tracks_wait_in_the_jobs_scratch_folder_and_go_with_its_run(
    make_backend,
) -> None:
    shot = gliding_shot(9)
    frames = list(range(9))
    # The worker holds the job after two frames: key 0, then the first in-between.
    b = make_backend("scratch", env={HOLD_ENV: "2"}).start()
    with b.client() as c:
        body = {"kind": "inbetween", "frames": frames, "keyframes": [0, 8], "width": W,
                "height": H, "params": {"method": "render"}}  # fmt: skip
        job = c.post("/v1/jobs", json=body).raise_for_status().json()
        put = f"/v1/jobs/{job['id']}/inputs"
        for k in (0, 8):
            c.put(f"{put}/keyframe/{k}", content=png_bytes(shot[k].image)).raise_for_status()
        for f in frames:
            vector = {name: shot[f].vector[..., i] for i, name in enumerate("XYZW")}
            c.put(f"{put}/vector/{f}", content=exr_bytes(vector)).raise_for_status()
            c.put(f"{put}/depth/{f}", content=exr_bytes({"Z": shot[f].depth})).raise_for_status()
        c.post(f"/v1/jobs/{job['id']}/start").raise_for_status()
        wait_until(c, job["id"], lambda j: len(j["finished_frames"]) == 2)

        folder = b.data / "jobs" / job["id"]
        spilled = sorted(p.name for p in (folder / "scratch").iterdir())
        assert len(spilled) == 7 and all(n.endswith(".npy") for n in spilled), spilled
        assert sorted(p.name for p in (folder / "outputs").iterdir()) == [
            "000000.png",
            "000001.png",
        ]
        c.post(f"/v1/jobs/{job['id']}/cancel").raise_for_status()
        assert wait_for(c, job["id"], {"canceled", "done", "failed"})["state"] == "canceled"
        assert not (folder / "scratch").exists()


def test_a_chunk_keeps_only_its_own_frames_decoded(tmp_path: Path) -> None:
    store = Store(tmp_path / "data")
    job, _ = store.create_job(kind="stylize", width=W, height=H, frames=tuple(range(6)),
                              keyframes=(), params={}, idempotency_key=None, request_hash="x")  # fmt: skip
    for f in range(6):
        depth = np.full((H, W), 2.0 + f, np.float32)
        store.save_input(job.id, Pass.DEPTH, f, "exr", exr_bytes({"Z": depth}))
    ctx = JobContext(store, job, "cpu", dict, threading.Event(), lambda: None)
    ctx.set_chunk(0, 2, Chunk(0, (1, 2), (0, 1, 2)))
    own = ctx.input(Pass.DEPTH, 1)
    assert ctx.input(Pass.DEPTH, 1) is own  # read again within the chunk: kept
    other = ctx.input(Pass.DEPTH, 5)
    again = ctx.input(Pass.DEPTH, 5)
    assert again is not other and np.array_equal(again, other)  # another chunk's: not kept
    ctx.set_chunk(1, 2, Chunk(1, (3, 4, 5), (2, 3, 4, 5)))
    assert ctx.input(Pass.DEPTH, 1) is not own  # the chunk moved on
    store.close()


def test_the_depth_range_streamed_is_the_depth_range_of_every_frame_at_once() -> None:
    rng = np.random.default_rng(3)
    frames = []
    for f in range(7):
        depth = np.exp(rng.normal(1.0 + 0.1 * f, 0.6, (40, 56))).astype(np.float32)
        depth[:, :8] = 1e10  # sky
        depth[0, 0] = 0.5 if f == 2 else depth[0, 0]  # one near outlier
        frames.append(depth[..., None])
    reads = []

    def read():
        reads.append(1)
        return iter(frames)

    expected = depth_range(iter(frames))
    assert depth_range_streamed(read) == expected and len(reads) == 1  # few samples: kept
    reads.clear()
    assert depth_range_streamed(read, held_samples=100) == expected and len(reads) == 2
    sky = [np.full((4, 4, 1), 1e10, np.float32)]
    assert depth_range_streamed(lambda: iter(sky), held_samples=0) == depth_range(sky)


def test_streamed_percentiles_are_numpys_bit_for_bit() -> None:
    rng = np.random.default_rng(5)
    for trial in range(300):
        size = int(rng.integers(1, 400))
        if trial % 3 == 0:
            values = rng.choice([1.5, 2.25, 7.0, 1e8], size)  # ties
        elif trial % 3 == 1:
            values = np.exp(rng.normal(0.0, 5.0, size))  # many octaves
        else:
            values = rng.uniform(3.0, 3.0001, size)  # one octave, close values
        batches = np.array_split(values.astype(np.float32), int(rng.integers(1, 5)))
        q = [0.0, 1.0, 37.3, 99.0, 100.0]
        got = streamed_percentiles(lambda batches=batches: iter(batches), q, held=0)
        expected = np.percentile(np.concatenate(batches), q)
        assert got is not None and got.tobytes() == expected.tobytes(), (trial, got, expected)
    assert streamed_percentiles(lambda: iter([np.zeros(0, np.float32)]), [1.0], held=0) is None
