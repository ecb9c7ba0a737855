"""What every in-between method does with the keys: read them in one colour layout at the
job's size, blend them, write frames from them, and tell which frame a frame shows on twos."""

from __future__ import annotations

import numpy as np

from ..jobs import Pass, PipelineError
from ..vision.pixels import to_uint8
from ..vision.splat import premultiply, unpremultiply
from .base import RunContext


def read_keyframe(ctx: RunContext, frame: int) -> np.ndarray:
    """The job's key at `frame` as float32 RGB or RGBA (colour_layout), at the job's size."""
    image = colour_layout(ctx.input(Pass.KEYFRAME, frame))
    job = ctx.job
    if image.shape[:2] != (job.height, job.width):
        raise PipelineError(
            f"Keyframe {frame} is {image.shape[1]}×{image.shape[0]} pixels but the job is "
            f"{job.width}×{job.height}."
        )
    return image


def colour_layout(image: np.ndarray) -> np.ndarray:
    """Decoded key (HxW, HxWx1..4) → float32 RGB or RGBA with straight alpha."""
    img = image.astype(np.float32, copy=False)
    if img.ndim == 2:
        img = img[..., None]
    channels = img.shape[2]
    if channels == 1:
        return np.repeat(img, 3, axis=2)
    if channels == 2:
        return np.concatenate([np.repeat(img[..., :1], 3, axis=2), img[..., 1:]], axis=2)
    if channels in (3, 4):
        return img
    raise PipelineError(f"A keyframe has {channels} channels; expected grey, RGB or RGBA.")


def with_alpha(image: np.ndarray) -> np.ndarray:
    if image.shape[2] == 4:
        return image
    return np.concatenate([image, np.ones_like(image[..., :1])], axis=2)


def output_uint8(image: np.ndarray) -> np.ndarray:
    """Straight-alpha float → uint8, with colour 0 wherever alpha rounds to 0."""
    out = to_uint8(image)
    if out.shape[2] == 4:
        out[..., :3][out[..., 3] == 0] = 0
    return out


def crossfade(key0: np.ndarray, key1: np.ndarray, s: float) -> np.ndarray:
    """(1-s)·key0 + s·key1, blended premultiplied when there is alpha."""
    if key0.shape[2] == 4:
        mixed = (1.0 - s) * premultiply(key0) + s * premultiply(key1)
        return unpremultiply(mixed)
    return ((1.0 - s) * key0 + s * key1).astype(np.float32)


def source_frame(t: int, k0: int, on_twos: bool) -> int:
    """The frame whose picture frame t shows: on twos, odd offsets repeat the previous frame."""
    if on_twos and (t - k0) % 2 == 1:
        return t - 1
    return t
