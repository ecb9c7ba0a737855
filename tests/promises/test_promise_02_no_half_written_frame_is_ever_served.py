"""Promise 2: no half-written frame is ever served.

A real crash between writing a frame's temp file and renaming it into place (the backend kills
itself there through a fault hook) leaves no frame under the final name; the temp file is swept
when the backend starts again and the job completes. Temp files a crash would leave (half a
PNG, for an output and for an input) are never listed, served or counted as uploaded.
"""

from __future__ import annotations

import signal

import numpy as np

from backend.files import DIE_BEFORE_RENAME_ENV, TMP_MARK
from backend.store_files import frame_name
from tests.backend.images import png_bytes, png_pixels
from tests.backend.server import wait_for
from tests.promises.support import H, W, create_inbetween, frame_files, square_keys, start

KEYS = {0: 4.0, 10: 40.0}
FRAMES = range(0, 11)
CRASH_FRAME = 5


def temp_files(folder) -> list:
    return sorted(p for p in folder.rglob(f"*{TMP_MARK}*"))


def test_crash_between_write_and_rename_leaves_nothing_visible(make_backend) -> None:
    keys = square_keys(KEYS)
    b = make_backend("crash", env={DIE_BEFORE_RENAME_ENV: frame_name(CRASH_FRAME, "png")})
    b.start()
    with b.client() as c:
        job_id = create_inbetween(c, keys, FRAMES)["id"]
        start(c, job_id)
    assert b.proc.wait(60) == -signal.SIGKILL
    out = b.data / "jobs" / job_id / "outputs"
    left = temp_files(out)
    assert [p.name.split(TMP_MARK)[0] for p in left] == [frame_name(CRASH_FRAME, "png")]
    assert left[0].stat().st_size > 0, "the crash came after the temp file was written"
    assert not (out / frame_name(CRASH_FRAME, "png")).exists()
    assert [p.name for p in frame_files(out)] == [frame_name(f, "png") for f in range(CRASH_FRAME)]

    b.env = {}
    b.start()
    # The resumed worker may already be writing its own temp files: look for the crash's one.
    assert not left[0].exists(), "stray temp files must be swept at start"
    with b.client() as c:
        final = wait_for(c, job_id, {"done", "failed", "canceled"})
        assert final["state"] == "done", final
        assert temp_files(b.data / "jobs") == []
        assert final["finished_frames"] == list(FRAMES)
        r = c.get(f"/v1/jobs/{job_id}/outputs/{CRASH_FRAME}")
        assert r.status_code == 200
        assert png_pixels(r.content).shape == (H, W, 3)


def test_temp_files_are_never_served_or_counted(make_backend) -> None:
    keys = square_keys(KEYS)
    b = make_backend("planted").start()
    whole = png_bytes(keys[0])
    half = whole[: len(whole) // 2]
    with b.client() as c:
        job = create_inbetween(c, keys, FRAMES, upload=False)
        job_dir = b.data / "jobs" / job["id"]
        planted = [
            job_dir / "outputs" / f"{frame_name(3, 'png')}{TMP_MARK}1a2b3c4d",
            job_dir / "inputs" / "keyframe" / f"{frame_name(0, 'png')}{TMP_MARK}5e6f7a8b",
        ]
        for p in planted:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(half)

        seen = c.get(f"/v1/jobs/{job['id']}").json()
        assert seen["finished_frames"] == []
        assert seen["missing_inputs"] == {"keyframe": [0, 10]}
        r = c.get(f"/v1/jobs/{job['id']}/outputs/3")
        assert r.status_code == 404 and "not finished" in r.json()["detail"]
        r = c.post(f"/v1/jobs/{job['id']}/start")
        assert r.status_code == 400 and "keyframe" in r.json()["detail"]
    b.stop()

    b.start()
    assert not any(p.exists() for p in planted), "planted temp files must be swept at start"
    with b.client() as c:
        for f, img in keys.items():
            c.put(f"/v1/jobs/{job['id']}/inputs/keyframe/{f}", content=png_bytes(img))
        start(c, job["id"])
        assert wait_for(c, job["id"], {"done", "failed"})["state"] == "done"
        r = c.get(f"/v1/jobs/{job['id']}/outputs/0")
        assert np.array_equal(png_pixels(r.content), keys[0])
