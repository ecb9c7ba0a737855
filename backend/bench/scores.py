"""Image quality against a true frame: PSNR and SSIM on 8-bit RGB (numpy + OpenCV)."""

from __future__ import annotations

import cv2
import numpy as np

# SSIM as Wang et al. (2004) define it: 11×11 Gaussian window (σ 1.5), K1 0.01, K2 0.03, L 255.
_SSIM_SIGMA = 1.5
_C1 = (0.01 * 255.0) ** 2
_C2 = (0.03 * 255.0) ** 2
PSNR_CAP = 100.0  # dB reported for identical images


def psnr(image: np.ndarray, truth: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of uint8 images (all channels together)."""
    if image.shape != truth.shape:
        raise ValueError(f"images differ in shape: {image.shape} and {truth.shape}")
    mse = float(np.mean((image.astype(np.float64) - truth.astype(np.float64)) ** 2))
    return PSNR_CAP if mse == 0.0 else min(PSNR_CAP, 10.0 * np.log10(255.0**2 / mse))


def _blur(x: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(x, (11, 11), _SSIM_SIGMA, borderType=cv2.BORDER_REFLECT)


def ssim(image: np.ndarray, truth: np.ndarray) -> float:
    """Mean structural similarity of uint8 images, averaged over channels (1 = identical)."""
    if image.shape != truth.shape:
        raise ValueError(f"images differ in shape: {image.shape} and {truth.shape}")
    a = image.astype(np.float64)
    b = truth.astype(np.float64)
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    values = []
    for c in range(a.shape[2]):
        x, y = a[..., c], b[..., c]
        mx, my = _blur(x), _blur(y)
        vx = _blur(x * x) - mx * mx
        vy = _blur(y * y) - my * my
        cov = _blur(x * y) - mx * my
        num = (2.0 * mx * my + _C1) * (2.0 * cov + _C2)
        den = (mx * mx + my * my + _C1) * (vx + vy + _C2)
        values.append(float(np.mean(num / den)))
    return float(np.mean(values))


# Stroke pieces: a pixel is ink where it is at least half as dark as the ink would make it on
# white; pieces under this many pixels are specks, not strokes (anti-aliasing crumbs).
INK_THRESHOLD = 0.5
MIN_PIECE_PIXELS = 3


def over_grey(image: np.ndarray) -> np.ndarray:
    """uint8 RGB as shown: RGBA composited over mid grey (alpha errors stay visible), RGB as is."""
    if image.shape[2] == 3:
        return image
    rgb = image[..., :3].astype(np.float32)
    alpha = image[..., 3:].astype(np.float32) / 255.0
    return np.clip(np.rint(rgb * alpha + 128.0 * (1.0 - alpha)), 0, 255).astype(np.uint8)


def ink_coverage(image: np.ndarray) -> np.ndarray:
    """How dark each pixel is on white paper, 0..1 (HxW): RGBA is composited over white first."""
    rgb = image[..., :3].astype(np.float32) / 255.0
    if image.shape[2] == 4:
        alpha = image[..., 3:].astype(np.float32) / 255.0
        rgb = rgb * alpha + (1.0 - alpha)
    luma = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    return 1.0 - luma


def stroke_pieces(image: np.ndarray) -> int:
    """Connected pieces of ink (8-connected, specks left out) in a drawing (uint8 RGB/RGBA)."""
    mask = (ink_coverage(image) >= INK_THRESHOLD).astype(np.uint8)
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    return int(np.sum(stats[1:count, cv2.CC_STAT_AREA] >= MIN_PIECE_PIXELS))


def ink_kept(image: np.ndarray, truth: np.ndarray) -> float:
    """Share of the true drawing's ink pixels that are ink in image too, within one pixel:
    1.0 when every stroke is there and dark, lower where strokes faded to grey or vanished."""
    want = ink_coverage(truth) >= INK_THRESHOLD
    if not want.any():
        return 1.0
    have = (ink_coverage(image) >= INK_THRESHOLD).astype(np.uint8)
    near = cv2.dilate(have, np.ones((3, 3), np.uint8)) > 0
    return float(np.mean(near[want]))
