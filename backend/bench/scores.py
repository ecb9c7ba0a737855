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
