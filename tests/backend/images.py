"""Real image files for tests: PNG through OpenCV, EXR through the OpenEXR package."""

from __future__ import annotations

import tempfile
from pathlib import Path

import cv2
import numpy as np


def png_bytes(rgb: np.ndarray) -> bytes:
    if rgb.ndim == 3 and rgb.shape[2] == 4:
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGBA2BGRA)
    elif rgb.ndim == 3:
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    else:
        bgr = rgb
    ok, buf = cv2.imencode(".png", bgr)
    assert ok
    return buf.tobytes()


def png_pixels(data: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert img is not None, "not a PNG"
    if img.ndim == 3 and img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def exr_bytes(channels: dict[str, np.ndarray]) -> bytes:
    import OpenEXR

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "x.exr"
        header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
        OpenEXR.File(header, {k: v.astype(np.float32) for k, v in channels.items()}).write(
            str(path)
        )
        return path.read_bytes()


def textured_square_scene(width: int, height: int, x: float, size: int = 16) -> np.ndarray:
    """A textured square at horizontal position x on a textured background (uint8 RGB)."""
    yy, xx = np.mgrid[0:height, 0:width]
    bg = np.stack(
        [
            128 + 60 * np.sin(xx / 5.0) * np.cos(yy / 7.0),
            128 + 50 * np.cos(xx / 9.0 + yy / 4.0),
            100 + 40 * np.sin((xx + yy) / 6.0),
        ],
        axis=-1,
    )
    img = bg.copy()
    x0, y0 = round(x), (height - size) // 2
    sy, sx = np.mgrid[0:size, 0:size]
    patch = np.stack([220 - 3 * sx, 40 + 5 * sy, 60 + 4 * ((sx + sy) % 8)], axis=-1)
    x1 = min(width, x0 + size)
    img[y0 : y0 + size, x0:x1] = patch[:, : x1 - x0]
    return np.clip(img, 0, 255).astype(np.uint8)
