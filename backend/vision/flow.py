"""Optical flow between two images (OpenCV DIS) and the checks built on it.

A flow field is float32 HxWx2: the pixel displacement from image a to image b, x to the right,
y down, so pixel (x, y) of a shows up at (x + u, y + v) in b.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

Preset = Literal["ultrafast", "fast", "medium"]

_PRESETS: dict[str, int] = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}

# DIS refuses smaller images (measured with OpenCV 5.0: both sides must reach 12).
MIN_FLOW_SIZE = 12


def to_gray_u8(image: np.ndarray) -> np.ndarray:
    """The single 8-bit channel DIS works on.

    Accepts uint8 or float 0..1, HxW or HxWxC with C in 1..4. With alpha (C == 2 or 4), the
    colour is composited over mid grey and averaged with the alpha itself, so dark, light and
    grey strokes on a transparent background all stand out from it.
    """
    img = image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image
    img = img.astype(np.float32, copy=False)
    if img.ndim == 2:
        gray = img
    else:
        channels = img.shape[2]
        has_alpha = channels in (2, 4)
        colour = img[..., : channels - 1] if has_alpha else img
        if colour.shape[2] >= 3:
            luma = 0.299 * colour[..., 0] + 0.587 * colour[..., 1] + 0.114 * colour[..., 2]
        else:
            luma = colour[..., 0]
        if has_alpha:
            alpha = img[..., -1]
            over_grey = luma * alpha + 0.5 * (1.0 - alpha)
            gray = 0.5 * over_grey + 0.5 * alpha
        else:
            gray = luma
    return np.clip(np.rint(gray * 255.0), 0, 255).astype(np.uint8)


def dis_flow(a: np.ndarray, b: np.ndarray, preset: Preset = "medium") -> np.ndarray:
    """Dense flow from a to b (HxWx2 float32, pixels) with OpenCV's DIS."""
    if preset not in _PRESETS:
        raise ValueError(f"unknown DIS preset {preset!r}; use one of {sorted(_PRESETS)}")
    ga, gb = to_gray_u8(a), to_gray_u8(b)
    if ga.shape != gb.shape:
        raise ValueError(f"images differ in size: {ga.shape} and {gb.shape}")
    if min(ga.shape) < MIN_FLOW_SIZE:
        raise ValueError(f"optical flow needs images of at least {MIN_FLOW_SIZE}×{MIN_FLOW_SIZE}")
    dis = cv2.DISOpticalFlow_create(_PRESETS[preset])
    flow = dis.calc(np.ascontiguousarray(ga), np.ascontiguousarray(gb), None)
    return flow.astype(np.float32, copy=False)


def flow_both_ways(
    a: np.ndarray, b: np.ndarray, preset: Preset = "medium"
) -> tuple[np.ndarray, np.ndarray]:
    """(flow a→b, flow b→a)."""
    return dis_flow(a, b, preset), dis_flow(b, a, preset)


def backward_warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Sample image at x + flow(x) (bilinear, edges replicated): b warped onto a by flow a→b."""
    h, w = flow.shape[:2]
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    map_x = xs + flow[..., 0]
    map_y = ys + flow[..., 1]
    src = np.ascontiguousarray(image.astype(np.float32, copy=False))
    warped = cv2.remap(src, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if warped.ndim == 2 and image.ndim == 3:
        warped = warped[..., None]
    return warped


def consistency_error(f_ab: np.ndarray, f_ba: np.ndarray) -> np.ndarray:
    """|f_ab(x) + f_ba(x + f_ab(x))| in pixels: near 0 where the two flows agree."""
    back = backward_warp(f_ba, f_ab)
    return np.linalg.norm(f_ab + back, axis=2).astype(np.float32)


def occlusion_mask(
    f_ab: np.ndarray, f_ba: np.ndarray, rel: float = 0.01, abs_px: float = 0.5
) -> np.ndarray:
    """True where a pixel of a is probably hidden in b (forward/backward check).

    The usual test: |f + f_back|² > rel·(|f|² + |f_back|²) + abs_px, i.e. the tolerance grows
    with the motion because flow is less precise on fast motion.
    """
    back = backward_warp(f_ba, f_ab)
    err2 = np.sum((f_ab + back) ** 2, axis=2)
    mag2 = np.sum(f_ab**2, axis=2) + np.sum(back**2, axis=2)
    return err2 > rel * mag2 + abs_px


def photometric_error(a: np.ndarray, b: np.ndarray, f_ab: np.ndarray) -> np.ndarray:
    """Mean absolute difference over channels between a and b warped back onto a (HxW)."""
    warped = backward_warp(b, f_ab)
    a3 = a if a.ndim == 3 else a[..., None]
    return np.mean(np.abs(a3.astype(np.float32) - warped), axis=2)
