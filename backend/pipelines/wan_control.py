"""Wan2.1-VACE inputs from Blender's passes (numpy and OpenCV only, no torch).

A window is one VACE call: a control video (the pass each frame is generated from), a mask
(0 = a frame to keep, 1 = a frame to generate) and frames the window holds on. Frames already
written by the previous window go in as the picture itself with mask 0, so the model continues
them; every other frame is its control image with mask 1. The model runs at its working area
(about 480p for the 1.3B) in multiples of 16 whatever the shot's aspect; frames are resized
there on the way in and back to the shot's size on the way out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from ..jobs import Pass, PipelineError
from ..vision.passes import DepthRange, depth_to_control, lineart_to_control
from ..vision.pixels import to_uint8
from .base import RunContext
from .stylize_conditioning import DEPTH_RANGES
from .stylize_params import VaceControl
from .stylize_plan import beauty_rgb

# The VAE downsamples 8x in space and the transformer patches 2x2 latents: sizes step by 16.
SIZE_MULTIPLE = 16
TEMPORAL_STEP = 4  # the VAE packs 4 frames into one latent frame after the first
# What VACE reads as "nothing here": 0 in the model's -1..1 range.
EMPTY_GREY = 0.5
_LUMA = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)

CONTROL_PASS: Mapping[VaceControl, Pass | None] = {
    "depth": Pass.DEPTH,
    "lineart": Pass.LINEART,
    "luminance": Pass.BEAUTY,
    "none": None,
}


def run_size(width: int, height: int, area: int) -> tuple[int, int]:
    """(width, height) of about `area` pixels with the shot's aspect, multiples of 16."""
    scale = math.sqrt(area / float(width * height))

    def side(v: int) -> int:
        return max(SIZE_MULTIPLE, round(v * scale / SIZE_MULTIPLE) * SIZE_MULTIPLE)

    return side(width), side(height)


def padded_length(frames: int) -> int:
    """The least 4k+1 frame count holding `frames` (the VAE's temporal packing)."""
    return ((max(frames, 1) - 1 + TEMPORAL_STEP - 1) // TEMPORAL_STEP) * TEMPORAL_STEP + 1


def resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Float or uint8 HxWxC to width x height: area averaging down, bicubic up."""
    h, w = image.shape[:2]
    if (w, h) == (width, height):
        return image
    shrink = width < w and height < h
    out = cv2.resize(
        image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
    )
    return out.reshape(height, width, *image.shape[2:])


@dataclass(frozen=True)
class Window:
    """One VACE call: frames at the run size, float32 HxWx3 0..1, and which are kept."""

    video: list[np.ndarray]
    mask: list[float]  # per frame: 0.0 keep (a written frame), 1.0 generate
    produced: int  # leading frames that are the window's own (the rest is padding)


def control_image(
    ctx: RunContext, control: VaceControl, frame: int, depth: DepthRange | None = None
) -> np.ndarray:
    """The control picture of one frame at the shot's size, float32 HxWx3 0..1. Depth is
    normalised with `depth`, else with the range of the job's frames (one per shot)."""
    source = CONTROL_PASS[control]
    if source is None:
        job = ctx.job
        return np.full((job.height, job.width, 3), EMPTY_GREY, np.float32)
    try:
        image = ctx.input(source, frame)
        if source is Pass.DEPTH:
            return depth_to_control(image, depth or DEPTH_RANGES.get(ctx))
        if source is Pass.LINEART:
            return lineart_to_control(image)
        luma = beauty_rgb(image) @ _LUMA
        return np.repeat(luma[:, :, None], 3, axis=2).astype(np.float32)
    except ValueError as exc:  # a pass of the wrong shape
        raise PipelineError(
            f"The {source.value} pass of frame {frame} cannot be used: {exc}"
        ) from None


def build_window(
    ctx: RunContext,
    control: VaceControl,
    frames: Sequence[int],
    written: Mapping[int, np.ndarray],
    size: tuple[int, int],
    depth: DepthRange | None = None,
) -> Window:
    """The window over `frames`: written ones (uint8 outputs, or keys) kept, the rest from
    control, padded to 4k+1 frames by repeating the last picture (generated)."""
    width, height = size
    video: list[np.ndarray] = []
    mask: list[float] = []
    for frame in frames:
        if frame in written:
            picture = written[frame][..., :3].astype(np.float32) / 255.0
            video.append(resize(picture, width, height))
            mask.append(0.0)
        else:
            video.append(resize(control_image(ctx, control, frame, depth), width, height))
            mask.append(1.0)
    for _ in range(padded_length(len(frames)) - len(frames)):
        video.append(video[-1])
        mask.append(1.0)
    return Window(video=video, mask=mask, produced=len(frames))


def frames_at_shot_size(images: Sequence[np.ndarray], width: int, height: int) -> list[np.ndarray]:
    """Generated frames (float32 0..1 at the run size) as uint8 RGB at the shot's size."""
    return [resize(to_uint8(image), width, height) for image in images]
