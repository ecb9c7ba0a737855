"""Forward softmax splatting (Niklaus & Liu, CVPR 2020) in numpy.

Every source pixel is pushed along its flow vector and shared bilinearly among the four target
pixels around where it lands, each share weighted by exp(importance). Where several source
pixels land on one target, the most important one dominates (softmax), which is how occlusion
is resolved: importance is low where the flow is unreliable (brightness-constancy error,
forward/backward disagreement) and, with depth, for the farther surface.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

# Blender writes 1e10 for "no surface" in the Z pass; anything this far counts as background.
DEPTH_BACKGROUND = 1e9

_IMPORTANCE_LIMIT = 60.0  # exp(±60) is comfortably inside float64


class Splat(NamedTuple):
    image: np.ndarray  # HxWxC float32: weighted mean of what landed; 0 where nothing did
    weight: np.ndarray  # HxW float64: Σ bilinear share · exp(importance)
    coverage: np.ndarray  # HxW float32: Σ bilinear share (≈1 where covered, 0 in holes)


def _corners(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each source pixel lands: (target index, bilinear share), both 4 x H·W.

    Row k holds one of the four corners around the landing point; a corner outside the image
    gets share 0 (and a harmless index 0), which keeps every array aligned with the sources.
    """
    h, w = flow.shape[:2]
    px = np.arange(w, dtype=np.float32)[None, :] + flow[..., 0]
    py = np.arange(h, dtype=np.float32)[:, None] + flow[..., 1]
    # Non-finite or far-off positions are parked just outside the image, so they add nothing.
    px = np.nan_to_num(np.clip(px, -2.0, w + 1.0), nan=-2.0).ravel()
    py = np.nan_to_num(np.clip(py, -2.0, h + 1.0), nan=-2.0).ravel()
    x0 = np.floor(px)
    y0 = np.floor(py)
    fx = px - x0
    fy = py - y0
    x0i = x0.astype(np.int64)
    y0i = y0.astype(np.int64)
    base = y0i * w + x0i

    x_in = ((x0i >= 0) & (x0i < w), (x0i >= -1) & (x0i < w - 1))
    y_in = ((y0i >= 0) & (y0i < h), (y0i >= -1) & (y0i < h - 1))
    x_part = (1.0 - fx, fx)
    y_part = (1.0 - fy, fy)

    index = np.empty((4, h * w), dtype=np.int64)
    share = np.empty((4, h * w), dtype=np.float64)
    for k, (dx, dy) in enumerate(((0, 0), (1, 0), (0, 1), (1, 1))):
        inside = x_in[dx] & y_in[dy]
        index[k] = np.where(inside, base + (dy * w + dx), 0)
        share[k] = np.where(inside, x_part[dx] * y_part[dy], 0.0)
    return index, share


def softmax_splat(
    image: np.ndarray, flow: np.ndarray, importance: np.ndarray | None = None
) -> Splat:
    """Splat image (HxWxC float) forward along flow (HxWx2, pixels) with softmax weights.

    importance (HxW, roughly -50..50, larger wins) defaults to 0 everywhere, which makes this
    a plain average splat. For RGBA, pass premultiplied colour (see premultiply) so that
    transparent pixels add nothing to the colour.
    """
    h, w = flow.shape[:2]
    img = image if image.ndim == 3 else image[..., None]
    if img.shape[:2] != (h, w):
        raise ValueError(f"image {img.shape[:2]} and flow {(h, w)} differ in size")
    size = h * w
    index, share = _corners(flow)
    flat_index = index.ravel()

    coverage = np.bincount(flat_index, weights=share.ravel(), minlength=size)
    if importance is not None:
        z = np.clip(importance.astype(np.float64).ravel(), -_IMPORTANCE_LIMIT, _IMPORTANCE_LIMIT)
        share *= np.exp(z)[None, :]
    weight = np.bincount(flat_index, weights=share.ravel(), minlength=size)

    values = img.reshape(size, -1)
    out = np.empty((size, values.shape[1]), dtype=np.float32)
    landed = weight > 0.0
    safe = np.where(landed, weight, 1.0)
    for c in range(values.shape[1]):
        acc = np.bincount(flat_index, weights=(share * values[:, c]).ravel(), minlength=size)
        out[:, c] = np.where(landed, acc / safe, 0.0)
    return Splat(
        out.reshape(h, w, -1),
        weight.reshape(h, w),
        coverage.reshape(h, w).astype(np.float32),
    )


def depth_importance(depth: np.ndarray, alpha: float = 20.0) -> np.ndarray:
    """-alpha · depth normalised to 0..1 (nearer wins); Blender's background counts as farthest."""
    d = depth[..., 0] if depth.ndim == 3 else depth
    d = d.astype(np.float64)
    surface = np.isfinite(d) & (d < DEPTH_BACKGROUND)
    if not surface.any():
        return np.zeros(d.shape, dtype=np.float32)
    lo, hi = float(d[surface].min()), float(d[surface].max())
    norm = (d - lo) / (hi - lo) if hi > lo else np.zeros_like(d)
    norm = np.where(surface, np.clip(norm, 0.0, 1.0), 1.0)
    return (-alpha * norm).astype(np.float32)


def premultiply(rgba: np.ndarray) -> np.ndarray:
    """RGBA (straight alpha) → RGBA with colour multiplied by alpha."""
    out = rgba.astype(np.float32, copy=True)
    out[..., :-1] *= out[..., -1:]
    return out


def unpremultiply(rgba: np.ndarray) -> np.ndarray:
    """Premultiplied RGBA → straight alpha; fully transparent pixels get colour 0."""
    out = rgba.astype(np.float32, copy=True)
    alpha = out[..., -1:]
    safe = np.where(alpha > 0.0, alpha, 1.0)
    out[..., :-1] = np.where(alpha > 0.0, np.clip(out[..., :-1] / safe, 0.0, 1.0), 0.0)
    return out
