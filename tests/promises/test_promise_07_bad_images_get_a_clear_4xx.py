"""Promise 7: bad images get a clear 4xx and the backend stays up.

Truncated PNGs, decompression-bomb headers (a 65535×65535 PNG and EXR in a few hundred bytes),
wrong formats, sizes that do not match the job, NaN and Inf in EXR passes: each is answered
with a 4xx whose sentence names the problem, nothing is stored, the backend's memory stays
bounded, and the next valid job completes. Blender's 1e10 depth background is accepted.
"""

from __future__ import annotations

import struct
import zlib

import cv2
import httpx
import numpy as np

from tests.backend.images import exr_bytes, png_bytes, textured_square_scene
from tests.backend.server import Backend, wait_for
from tests.promises.support import H, W, create_inbetween, rss_kb, square_keys, start

BOMB_SIDE = 65535
# Memory the backend may gain over a barrage of ~100 hostile uploads, once warm. Decoding one
# bomb would take 65535² × 3 bytes ≈ 12 GiB, so any decode of one shows far above this.
RSS_BOUND_MB = 100
ROUNDS = 5


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload))
    )


def png_with_header(width: int, height: int, idat: bytes) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def exr_with_data_window(exr: bytes, width: int, height: int) -> bytes:
    """A real EXR whose header claims another size (EXR headers carry no checksum)."""
    marker = b"dataWindow\x00box2i\x00" + struct.pack("<i", 16)
    at = exr.index(marker) + len(marker)
    return exr[:at] + struct.pack("<iiii", 0, 0, width - 1, height - 1) + exr[at + 16 :]


def jpeg_bytes(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", rgb)
    assert ok
    return buf.tobytes()


def bad_uploads() -> list[tuple[str, str, bytes, str]]:
    """(label, pass, body, a word the refusal must contain)."""
    good = png_bytes(textured_square_scene(W, H, 4))
    depth = np.full((H, W), 5.0, np.float32)
    nan_depth, inf_depth = depth.copy(), depth.copy()
    nan_depth[3, 4] = np.nan
    inf_depth[5, 6] = np.inf
    vector = np.zeros((H, W), np.float32)
    nan_vector = vector.copy()
    nan_vector[1, 1] = np.nan
    vec = {"R": nan_vector, "G": vector, "B": vector, "A": vector}
    tiny_idat = zlib.compress(b"\0" * 64)
    return [
        ("truncated PNG", "keyframe", good[: len(good) // 2], "truncated"),
        ("PNG cut in its header", "keyframe", good[:20], "truncated"),
        ("PNG bomb header", "keyframe", png_with_header(BOMB_SIDE, BOMB_SIDE, tiny_idat), "65535"),
        ("PNG bomb, wide", "keyframe", png_with_header(BOMB_SIDE, 1, tiny_idat), "65535"),
        ("EXR bomb header", "depth", exr_with_data_window(exr_bytes({"V": depth}), BOMB_SIDE, BOMB_SIDE), "65535"),
        ("PNG with bad CRC", "keyframe", good[:29] + b"\0\0\0\0" + good[33:], "checksum"),
        ("GIF", "keyframe", b"GIF89a" + b"\0" * 64, "not a PNG or OpenEXR"),
        ("JPEG", "keyframe", jpeg_bytes(textured_square_scene(W, H, 4)), "JPEG"),
        ("random bytes", "keyframe", bytes(range(256)) * 4, "not a PNG or OpenEXR"),
        ("PNG for a depth pass", "depth", good, "OpenEXR"),
        ("keyframe of another size", "keyframe", png_bytes(textured_square_scene(W + 8, H, 4)), f"{W + 8}×{H}"),
        ("depth of another size", "depth", exr_bytes({"V": np.full((H, W * 2), 5.0, np.float32)}), f"{W * 2}×{H}"),
        ("NaN in depth", "depth", exr_bytes({"V": nan_depth}), "nan"),
        ("Inf in depth", "depth", exr_bytes({"V": inf_depth}), "inf"),
        ("NaN in motion vectors", "vector", exr_bytes(vec), "nan"),
    ]  # fmt: skip


def test_bad_images_get_a_clear_4xx_and_the_backend_stays_up(make_backend) -> None:
    b: Backend = make_backend().start()
    keys = square_keys({0: 4.0, 4: 20.0})
    with b.client() as c:
        job = create_inbetween(c, keys, range(0, 5), upload=False)
        base = f"/v1/jobs/{job['id']}/inputs"
        warm_up(c, base)  # decoders loaded before memory is measured
        rss_before = rss_kb(b.proc.pid)
        for _ in range(ROUNDS):
            for label, pass_name, body, word in bad_uploads():
                r = c.put(f"{base}/{pass_name}/0", content=body)
                assert 400 <= r.status_code < 500, (label, r.status_code, r.text)
                detail = r.json()["detail"]
                assert word.lower() in detail.lower(), (label, detail)
                assert detail.startswith(f"{pass_name} frame 0: "), (label, detail)
        grown_mb = (rss_kb(b.proc.pid) - rss_before) / 1024
        print(f"backend RSS grew {grown_mb:.1f} MB over {ROUNDS} rounds of bad uploads")
        assert grown_mb < RSS_BOUND_MB, f"backend memory grew {grown_mb:.0f} MB"

        # Nothing refused was stored: keyframe 0 is still missing, the depth is the warm-up one.
        assert c.get(f"/v1/jobs/{job['id']}").json()["missing_inputs"] == {"keyframe": [0, 4]}
        assert b.proc.poll() is None
        for f, img in keys.items():
            assert c.put(f"{base}/keyframe/{f}", content=png_bytes(img)).status_code == 200
        start(c, job["id"])
        assert wait_for(c, job["id"], {"done", "failed"})["state"] == "done"


def warm_up(c: httpx.Client, base: str) -> None:
    depth = np.full((H, W), 5.0, np.float32)
    depth[:4, :4] = 1e10  # Blender's depth background: accepted
    r = c.put(f"{base}/depth/0", content=exr_bytes({"V": depth}))
    assert r.status_code == 200, r.text
    r = c.put(f"{base}/depth/1", content=exr_bytes({"V": np.full((H, W), 1e10, np.float32)}))
    assert r.status_code == 200, "a frame of pure background depth is accepted"
