"""Promise 20: decoding an upload stays within its memory budget.

Small hostile files whose headers pass the pixel limits but would decode to large float arrays
are refused from their headers with a 4xx sentence, quickly, and the backend's peak memory does
not move: a 16-bit RGBA PNG over the per-image decode budget (a few hundred KB of file), a tiled
OpenEXR of a few hundred bytes whose tiles claim far more pixels than its image, and a large
body that is no image at all, refused as its first MiB passes instead of after all of it was
buffered. Images within the budget still decode and the job completes.
"""

from __future__ import annotations

import struct
import time
from pathlib import Path

import cv2
import numpy as np

from tests.backend.server import Backend, wait_for
from tests.promises.support import create_inbetween, square_keys, start
from tests.promises.test_promise_08_request_bodies_are_bounded import (
    open_request,
    status_line,
    stream_chunked,
)

BUDGET_MB = 64  # --decode-budget-mb: one image may take half
BIG = 2048  # a 16-bit RGBA PNG of BIG² costs 168 MB to decode as float: over 32 MB
PEAK_BOUND_MB = 16  # what the backend's peak memory may gain while refusing
STREAM_MB = 64


def peak_mb(pid: int) -> float:
    """Peak resident memory (VmHWM) since the last reset_peak()."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # peak RSS := current RSS


def sixteen_bit_png(side: int) -> bytes:
    ok, buf = cv2.imencode(".png", np.zeros((side, side, 4), np.uint16))
    assert ok
    return buf.tobytes()


def tiled_exr_claiming_huge_tiles(width: int, height: int, tile: tuple[int, int]) -> bytes:
    """A real tiled EXR, its tile description then rewritten (EXR headers have no checksum)."""
    import tempfile

    import OpenEXR

    desc = OpenEXR.TileDescription()
    desc.xSize, desc.ySize = 16, 16
    header = {"type": OpenEXR.tiledimage, "tiles": desc, "compression": OpenEXR.ZIP_COMPRESSION}
    channels = {c: np.zeros((height, width), np.float32) for c in "RGB"}
    with tempfile.TemporaryDirectory() as d:
        OpenEXR.File(header, channels).write(f"{d}/t.exr")
        data = Path(f"{d}/t.exr").read_bytes()
    at = data.index(b"tiles\0tiledesc\0") + len(b"tiles\0tiledesc\0") + 4
    return data[:at] + struct.pack("<II", *tile) + data[at + 8 :]


def refused_from_header(b: Backend, c, url: str, body: bytes, word: str) -> None:
    reset_peak(b.proc.pid)
    before = peak_mb(b.proc.pid)
    started = time.monotonic()
    r = c.put(url, content=body)
    took = time.monotonic() - started
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    assert word in r.json()["detail"], r.json()["detail"]
    grown = peak_mb(b.proc.pid) - before
    print(f"{len(body)} bytes refused in {took * 1000:.0f} ms; peak memory +{grown:.1f} MB")
    assert grown < PEAK_BOUND_MB, f"refusing it raised the backend's peak memory {grown:.0f} MB"
    assert took < 2.0


def test_uploads_over_the_decode_budget_are_refused_from_their_headers(make_backend) -> None:
    b: Backend = make_backend(extra_args=["--decode-budget-mb", str(BUDGET_MB)]).start()
    with b.client() as c:
        big = create_inbetween(
            c, square_keys({0: 4.0, 4: 20.0}, BIG, BIG), range(0, 5), upload=False
        )
        small = create_inbetween(c, square_keys({0: 4.0, 4: 20.0}), range(0, 5), upload=False)
        assert c.get("/v1/health").status_code == 200
        png = sixteen_bit_png(BIG)
        assert len(png) < 1024 * 1024
        refused_from_header(b, c, f"/v1/jobs/{big['id']}/inputs/keyframe/0", png, "MiB of memory")
        exr = tiled_exr_claiming_huge_tiles(64, 48, (4096, 4096))
        assert len(exr) < 2048
        refused_from_header(b, c, f"/v1/jobs/{small['id']}/inputs/keyframe/0", exr, "tiles")
        assert c.get(f"/v1/jobs/{small['id']}").json()["missing_inputs"] == {"keyframe": [0, 4]}

    with b.client() as c:  # within the budget: decoded as before, and the job completes
        job = create_inbetween(c, square_keys({0: 4.0, 4: 20.0}), range(0, 5))
        start(c, job["id"])
        assert wait_for(c, job["id"], {"done", "failed"})["state"] == "done"


def test_a_body_that_is_no_image_is_refused_before_it_is_all_received(make_backend) -> None:
    b: Backend = make_backend().start()
    with b.client() as c:
        job = create_inbetween(c, square_keys({0: 4.0, 4: 20.0}), range(0, 5), upload=False)
        assert c.get("/v1/health").status_code == 200
    reset_peak(b.proc.pid)
    before = peak_mb(b.proc.pid)
    total = STREAM_MB * 1024 * 1024
    extra = "Transfer-Encoding: chunked\r\nContent-Type: application/octet-stream\r\n"
    with open_request(b, "PUT", f"/v1/jobs/{job['id']}/inputs/keyframe/0", extra) as s:
        sent = stream_chunked(s, total)
        status, reply = status_line(s)
    assert sent < total / 4, f"the backend took {sent} bytes of a non-image before refusing"
    assert status == 400, reply
    assert b"keyframe frame 0: the keyframe image is not a PNG or OpenEXR image" in reply
    grown = peak_mb(b.proc.pid) - before
    assert grown < PEAK_BOUND_MB, f"peak memory grew {grown:.0f} MB"
