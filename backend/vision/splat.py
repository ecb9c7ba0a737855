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
# Landing points are clamped to within _PAD pixels of the image and accumulated on a grid with
# that margin (one more column and row for the far corner), so no corner needs a bounds test;
# the margin is cropped away at the end.
_PAD = 2


class Splat(NamedTuple):
    image: np.ndarray  # HxWxC float32: weighted mean of what landed; 0 where nothing did
    weight: np.ndarray  # HxW float64: Σ bilinear share · exp(importance)
    coverage: np.ndarray  # HxW float32: Σ bilinear share (≈1 where covered, 0 in holes)


def _landing(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Where each source pixel lands on the padded grid: (flat index of the corner up and left
    of it, fraction to the right, fraction down, padded row length), all over the H·W sources.

    Positions are float64 so that np.bincount takes the shares without converting them.
    Non-finite or far-off positions are parked in the margin, so they add nothing.
    """
    h, w = flow.shape[:2]
    px = np.arange(w, dtype=np.float64)[None, :] + flow[..., 0]
    py = np.arange(h, dtype=np.float64)[:, None] + flow[..., 1]
    px = np.clip(px, -_PAD, w - 1 + _PAD, out=px).ravel()
    py = np.clip(py, -_PAD, h - 1 + _PAD, out=py).ravel()
    lost = np.isnan(px) | np.isnan(py)
    if lost.any():
        px[lost] = -_PAD
        py[lost] = -_PAD
    x0 = np.floor(px)
    y0 = np.floor(py)
    row = w + 2 * _PAD + 1
    corner = (y0.astype(np.intp) + _PAD) * row + (x0.astype(np.intp) + _PAD)
    return corner, px - x0, py - y0, row


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
    channels = img.shape[2]
    corner, fx, fy, row = _landing(flow)
    size = (h + 2 * _PAD + 1) * row
    gain = None
    if importance is not None:
        z = np.clip(importance.astype(np.float64).ravel(), -_IMPORTANCE_LIMIT, _IMPORTANCE_LIMIT)
        gain = np.exp(z)
    columns = [img[..., c].ravel() for c in range(channels)]

    # Rows: the channels (weighted sums), then the weight, then the coverage.
    acc = np.zeros((channels + 2, size))
    gx, gy = 1.0 - fx, 1.0 - fy
    for offset, share in ((0, gx * gy), (1, fx * gy), (row, gx * fy), (row + 1, fx * fy)):
        index = corner + offset
        acc[channels + 1] += np.bincount(index, weights=share, minlength=size)
        if gain is not None:
            share *= gain
        acc[channels] += np.bincount(index, weights=share, minlength=size)
        for c, column in enumerate(columns):
            acc[c] += np.bincount(index, weights=share * column, minlength=size)

    inner = acc.reshape(channels + 2, -1, row)[:, _PAD : _PAD + h, _PAD : _PAD + w]
    weight = np.ascontiguousarray(inner[channels])
    landed = weight > 0.0
    inverse = np.divide(1.0, weight, out=np.zeros_like(weight), where=landed)
    out = np.empty((h, w, channels), dtype=np.float32)
    for c in range(channels):
        out[..., c] = inner[c] * inverse
    return Splat(out, weight, inner[channels + 1].astype(np.float32))


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
