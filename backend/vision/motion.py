"""Large displacements: motion hypotheses from matched features, chosen per pixel.

DIS refines motion locally from coarse to fine; an object that moves farther than its own size
between two keys (tens of pixels at any resolution) is out of its reach and it settles on the
background's motion, which then splats two ghosts. Here SIFT features are matched between the
keys and split into rigid motions (a similarity transform each: shift, turn, scale), found one
after another by RANSAC among the matches the earlier ones left over. Every pixel then takes
whichever hypothesis (DIS's own flow, standing still, or one of the rigid motions) best explains
its neighbourhood, and DIS refines that as its starting flow.
"""

from __future__ import annotations

import cv2
import numpy as np

# Hypotheses are matched and chosen on pictures this long: small keys are enlarged (up to
# MAX_ENLARGE times) so that features are found in them at all.
WORK_SIDE = 480
MAX_ENLARGE = 4.0
SIFT_CONTRAST = 0.01  # renders and paintings are often low in contrast (OpenCV's default: 0.04)
MAX_MODELS = 6
MIN_INLIERS = 8
RATIO = 0.8  # Lowe's ratio test for a match
RANSAC_PX = 2.0  # at working resolution
COST_RADIUS = 4  # patch half-size (working resolution) for choosing a hypothesis per pixel
# DIS's own flow wins a tie: a rigid hypothesis must explain a patch better by this much (0..255).
DIS_BIAS = 2.0


def _shrink(gray: np.ndarray) -> tuple[np.ndarray, float]:
    scale = min(MAX_ENLARGE, WORK_SIDE / max(gray.shape))
    if scale == 1.0:
        return gray, 1.0
    size = (max(1, round(gray.shape[1] * scale)), max(1, round(gray.shape[0] * scale)))
    method = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_CUBIC
    return cv2.resize(gray, size, interpolation=method), scale


def matches(ga: np.ndarray, gb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Matched feature positions (Nx2 float32 each, same pixels as ga and gb)."""
    sift = cv2.SIFT_create(nfeatures=1500, contrastThreshold=SIFT_CONTRAST)
    ka, da = sift.detectAndCompute(ga, None)
    kb, db = sift.detectAndCompute(gb, None)
    empty = np.zeros((0, 2), np.float32)
    if da is None or db is None or len(ka) < 2 or len(kb) < 2:
        return empty, empty
    pairs = cv2.BFMatcher(cv2.NORM_L2).knnMatch(da, db, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < RATIO * p[1].distance]
    if not good:
        return empty, empty
    pa = np.float32([ka[m.queryIdx].pt for m in good])
    pb = np.float32([kb[m.trainIdx].pt for m in good])
    return pa, pb


def rigid_motions(pa: np.ndarray, pb: np.ndarray, tolerance: float) -> list[np.ndarray]:
    """Similarity transforms (2x3, a→b) that each carry at least MIN_INLIERS matches."""
    models: list[np.ndarray] = []
    while len(pa) >= MIN_INLIERS and len(models) < MAX_MODELS:
        model, inliers = cv2.estimateAffinePartial2D(
            pa, pb, method=cv2.RANSAC, ransacReprojThreshold=tolerance, maxIters=2000
        )
        if model is None or inliers is None or int(inliers.sum()) < MIN_INLIERS:
            break
        models.append(model.astype(np.float32))
        keep = inliers.ravel() == 0
        pa, pb = pa[keep], pb[keep]
    return models


def model_field(model: np.ndarray, h: int, w: int, scale: float = 1.0) -> np.ndarray:
    """The flow a rigid motion (2x3, in pixels of a picture `scale` times this size) gives
    every pixel of an h×w picture."""
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    m = model.astype(np.float32)
    u = m[0, 0] * xs + m[0, 1] * ys + m[0, 2] / scale - xs
    v = m[1, 0] * xs + m[1, 1] * ys + m[1, 2] / scale - ys
    return np.stack([u, v], axis=2)


def patch_cost(ga: np.ndarray, gb: np.ndarray, field: np.ndarray) -> np.ndarray:
    """Mean |a − b warped back by field| over each pixel's patch; 255 where b is off-picture."""
    h, w = ga.shape
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    warped = cv2.remap(gb.astype(np.float32), xs + field[..., 0], ys + field[..., 1],
                       cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=-1000.0)  # fmt: skip
    diff = np.where(warped < 0.0, 255.0, np.abs(ga.astype(np.float32) - warped))
    size = 2 * COST_RADIUS + 1
    return cv2.blur(diff.astype(np.float32), (size, size), borderType=cv2.BORDER_REFLECT)


def _choose(ga: np.ndarray, gb: np.ndarray, dis: np.ndarray, models: list[np.ndarray]):
    """Per pixel of ga (full size): 0 for DIS's flow, 1 + i for models[i] (label map, uint8)."""
    sa, scale = _shrink(ga)
    sb, _ = _shrink(gb)
    h, w = sa.shape
    dis_small = cv2.resize(dis, (w, h), interpolation=cv2.INTER_AREA) * scale
    costs = [patch_cost(sa, sb, dis_small) - DIS_BIAS]
    costs += [patch_cost(sa, sb, model_field(m, h, w)) for m in models]
    labels = np.argmin(np.stack(costs), axis=0).astype(np.uint8)
    labels = cv2.medianBlur(labels, 5)
    return cv2.resize(labels, (ga.shape[1], ga.shape[0]), interpolation=cv2.INTER_NEAREST)


def _fuse(labels: np.ndarray, dis: np.ndarray, models: list[np.ndarray], scale: float):
    out = dis.copy()
    for i, model in enumerate(models, start=1):
        ys, xs = np.nonzero(labels == i)
        if len(xs):
            m = model.astype(np.float32)
            x, y = xs.astype(np.float32), ys.astype(np.float32)
            out[ys, xs, 0] = m[0, 0] * x + m[0, 1] * y + m[0, 2] / scale - x
            out[ys, xs, 1] = m[1, 0] * x + m[1, 1] * y + m[1, 2] / scale - y
    return out


def initial_flows(
    ga: np.ndarray, gb: np.ndarray, dis_ab: np.ndarray, dis_ba: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Starting flows a→b and b→a for DIS: its own flows where they explain the pictures best,
    the matched rigid motions (and standing still) where those do."""
    sa, scale = _shrink(ga)
    sb, _ = _shrink(gb)
    pa, pb = matches(sa, sb)
    identity = np.float32([[1, 0, 0], [0, 1, 0]])
    models = [identity, *rigid_motions(pa, pb, RANSAC_PX)]
    inverse = [cv2.invertAffineTransform(m).astype(np.float32) for m in models]
    # Model translations are in working pixels; model_field rescales them with `scale`.
    init_ab = _fuse(_choose(ga, gb, dis_ab, models), dis_ab, models, scale)
    init_ba = _fuse(_choose(gb, ga, dis_ba, inverse), dis_ba, inverse, scale)
    return init_ab, init_ba
