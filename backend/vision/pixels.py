"""Float pictures to 8-bit ones: the one conversion every output frame and 8-bit working
picture goes through."""

from __future__ import annotations

import numpy as np


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Float 0..1 → uint8: ×255 in float32, rounded half to even (np.rint), clipped to 0..255;
    NaN and −inf become 0, +inf 255. The exact inverse of decoding an 8-bit image as value/255,
    so a frame written, read back and written again keeps its bytes."""
    scaled = np.asarray(image, dtype=np.float32) * np.float32(255.0)
    np.rint(scaled, out=scaled)
    np.fmax(scaled, 0.0, out=scaled)  # fmax takes the number over NaN
    np.fmin(scaled, 255.0, out=scaled)
    return scaled.astype(np.uint8)
