"""Optical flow between two images (OpenCV DIS) and the checks built on it.

A flow field is float32 HxWx2: the pixel displacement from image a to image b, x to the right,
y down, so pixel (x, y) of a shows up at (x + u, y + v) in b.
"""

from __future__ import annotations

import math
from typing import Literal

import cv2
import numpy as np

from .motion import initial_flows
from .pixels import to_uint8

Preset = Literal["ultrafast", "fast", "medium"]

_PRESETS: dict[str, int] = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}

FINE_SIDE = 512

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
    return to_uint8(gray)


def _dis(
    ga: np.ndarray, gb: np.ndarray, preset: Preset, init: np.ndarray | None, fine: bool = False
) -> np.ndarray:
    dis = cv2.DISOpticalFlow_create(_PRESETS[preset])
    if fine:
        # The presets stop refining at half size or less: fine refines on down to a picture
        # FINE_SIDE long, full size for small pictures, at no extra cost for large ones.
        finest = max(0, math.ceil(math.log2(max(ga.shape) / FINE_SIDE)))
        dis.setFinestScale(min(dis.getFinestScale(), finest))
    # DIS refines a flow it is given (same size, float32, 2 channels) instead of starting at 0.
    flow = None if init is None else np.ascontiguousarray(init, dtype=np.float32).copy()
    flow = dis.calc(np.ascontiguousarray(ga), np.ascontiguousarray(gb), flow)
    return flow.astype(np.float32, copy=False)


def _check_pair(ga: np.ndarray, gb: np.ndarray, preset: str) -> None:
    if preset not in _PRESETS:
        raise ValueError(f"unknown DIS preset {preset!r}; use one of {sorted(_PRESETS)}")
    if ga.shape != gb.shape:
        raise ValueError(f"images differ in size: {ga.shape} and {gb.shape}")
    if min(ga.shape) < MIN_FLOW_SIZE:
        raise ValueError(f"optical flow needs images of at least {MIN_FLOW_SIZE}×{MIN_FLOW_SIZE}")


def dis_flow(
    a: np.ndarray, b: np.ndarray, preset: Preset = "medium", init: np.ndarray | None = None
) -> np.ndarray:
    """Dense flow from a to b (HxWx2 float32, pixels) with OpenCV's DIS, refined from init when
    given. a and b are images (see to_gray_u8) or already 8-bit single-channel pictures."""
    ga = a if a.dtype == np.uint8 and a.ndim == 2 else to_gray_u8(a)
    gb = b if b.dtype == np.uint8 and b.ndim == 2 else to_gray_u8(b)
    _check_pair(ga, gb, preset)
    return _dis(ga, gb, preset, init)


def flow_both_ways(
    a: np.ndarray, b: np.ndarray, preset: Preset = "medium", large: bool = True, fine: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(flow a→b, flow b→a); with large, DIS starts from motion hypotheses matched between the
    images (see backend.vision.motion), which finds displacements far beyond DIS's own reach;
    with fine, the last pass refines down to full resolution (sub-pixel detail)."""
    ga = a if a.dtype == np.uint8 and a.ndim == 2 else to_gray_u8(a)
    gb = b if b.dtype == np.uint8 and b.ndim == 2 else to_gray_u8(b)
    _check_pair(ga, gb, preset)
    if not large:
        return _dis(ga, gb, preset, None, fine), _dis(gb, ga, preset, None, fine)
    plain_ab, plain_ba = _dis(ga, gb, preset, None, fine), _dis(gb, ga, preset, None, fine)
    init_ab, init_ba = initial_flows(ga, gb, plain_ab, plain_ba)
    return _dis(ga, gb, preset, init_ab, fine), _dis(gb, ga, preset, init_ba, fine)


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


def fill_holes(field: np.ndarray, known: np.ndarray) -> np.ndarray:
    """field (HxWxC) with the pixels where known (HxW weight 0..1) is low filled in smoothly from
    around them (push-pull: weighted averages down an image pyramid until every pixel has some
    known neighbourhood, then back up, each level filling what the finer one does not know)."""
    weight = np.clip(known.astype(np.float32), 0.0, 1.0)
    values = field.astype(np.float32)
    if bool(np.all(weight >= 1.0)):
        return values.copy()
    sums = [values * weight[..., None]]
    weights = [weight]
    while float(weights[-1].min()) <= 1e-4 and min(weights[-1].shape) > 1:
        sums.append(_pyr_down(sums[-1]))
        weights.append(cv2.pyrDown(weights[-1]))
    estimate = _mean(sums[-1], weights[-1])
    for level in range(len(sums) - 2, -1, -1):
        h, w = weights[level].shape
        coarse = cv2.pyrUp(estimate, dstsize=(w, h)).reshape(h, w, -1)
        own = np.clip(2.0 * weights[level], 0.0, 1.0)[..., None] if level else weight[..., None]
        estimate = own * _mean(sums[level], weights[level]) + (1.0 - own) * coarse
    return estimate.astype(np.float32)


def _pyr_down(image: np.ndarray) -> np.ndarray:
    out = cv2.pyrDown(image)
    return out.reshape(out.shape[0], out.shape[1], image.shape[2])


def _mean(total: np.ndarray, weight: np.ndarray) -> np.ndarray:
    w = weight[..., None]
    return np.divide(total, w, out=np.zeros_like(total), where=w > 1e-6)


def resize_flow(flow: np.ndarray, width: int, height: int) -> np.ndarray:
    """A flow field resampled to width × height, its vectors scaled with it."""
    h, w = flow.shape[:2]
    if (w, h) == (width, height):
        return flow
    method = cv2.INTER_LINEAR if width > w else cv2.INTER_AREA
    out = cv2.resize(flow, (width, height), interpolation=method)
    out[..., 0] *= width / w
    out[..., 1] *= height / h
    return out.astype(np.float32, copy=False)


def shrink(image: np.ndarray, max_side: int) -> np.ndarray:
    """image made smaller (area average) so that its longer side is at most max_side."""
    h, w = image.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1.0:
        return image
    size = (max(MIN_FLOW_SIZE, round(w * scale)), max(MIN_FLOW_SIZE, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)
