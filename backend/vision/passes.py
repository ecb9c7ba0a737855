"""Blender render passes -> ControlNet conditioning images and optical flow (numpy only).

Inputs are what imageio.decode() returns for the pass; conditioning images come out as float32
HxWx3 RGB in 0..1.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ..jobs import InputError
from .quantiles import HELD_SAMPLES, streamed_percentiles

BACKGROUND_DEPTH = 1e9  # Blender writes 1e10 where no surface was hit; anything this far is sky
DEPTH_SAMPLES_PER_FRAME = 1 << 16  # enough for stable percentiles, bounded memory per shot
NEAR_PERCENTILE = 1.0
FAR_PERCENTILE = 99.0
# NormalBAE colour of a surface facing the camera; used for pixels without a surface.
BACKGROUND_NORMAL_RGB = (0.5, 0.5, 1.0)
_MIN_NORMAL_LENGTH = 1e-4
_REC709 = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)


@dataclass(frozen=True)
class DepthRange:
    """Near and far foreground distance of a whole shot, in scene units (0, 0 if none)."""

    near: float
    far: float

    @property
    def empty(self) -> bool:
        return not self.near > 0.0


def depth_range(depth_frames: Iterable[np.ndarray]) -> DepthRange:
    """The shot's robust foreground range: 1st/99th percentile over every frame together.

    Computed once per shot and used for every frame, so a static object keeps its brightness
    while other things move: per-frame normalisation would make the conditioning flicker.
    """
    samples = [_foreground_sample(_depth_plane(frame)) for frame in depth_frames]
    values = np.concatenate(samples) if samples else np.empty(0, np.float32)
    if values.size == 0:
        return DepthRange(0.0, 0.0)
    near, far = np.percentile(values, [NEAR_PERCENTILE, FAR_PERCENTILE])
    return DepthRange(float(near), float(far))


def depth_range_streamed(
    read: Callable[[], Iterable[np.ndarray]], held_samples: int = HELD_SAMPLES
) -> DepthRange:
    """depth_range() of the frames `read()` yields, bit for bit, holding one frame at a time
    and a bounded number of samples: a long shot's frames are read twice (vision.quantiles)."""

    def samples() -> Iterator[np.ndarray]:
        for frame in read():
            yield _foreground_sample(_depth_plane(frame))

    found = streamed_percentiles(samples, (NEAR_PERCENTILE, FAR_PERCENTILE), held_samples)
    if found is None:
        return DepthRange(0.0, 0.0)
    return DepthRange(float(found[0]), float(found[1]))


def depth_to_control(depth: np.ndarray, rng: DepthRange) -> np.ndarray:
    """Depth -> gray RGB: near = white, far = dark, background = black.

    Normalised in inverse depth (disparity), not linearly: depth ControlNets were trained on
    MiDaS/DPT maps, which are relative inverse depth. That spends the contrast on what is near
    the camera (the subject) and compresses the distance, as the training maps did; linear
    depth would flatten the subject and spend the range on the background.
    """
    plane = _depth_plane(depth)
    foreground = _foreground(plane)
    out = np.zeros(plane.shape, np.float32)
    if not rng.empty and foreground.any():
        inv_near, inv_far = 1.0 / rng.near, 1.0 / max(rng.far, rng.near)
        span = inv_near - inv_far
        if span <= 1e-9 * inv_near:  # the whole shot sits at one distance
            out[foreground] = 1.0
        else:
            out[foreground] = np.clip((1.0 / plane[foreground] - inv_far) / span, 0.0, 1.0)
    return np.repeat(out[:, :, None], 3, axis=2)


def _depth_plane(depth: np.ndarray) -> np.ndarray:
    plane = np.asarray(depth, dtype=np.float32)
    if plane.ndim == 3 and plane.shape[2] == 1:
        plane = plane[:, :, 0]
    if plane.ndim != 2:
        raise ValueError(f"a depth frame must be HxW or HxWx1, not {plane.shape}")
    return plane


def _foreground(plane: np.ndarray) -> np.ndarray:
    return np.isfinite(plane) & (plane > 0.0) & (plane < BACKGROUND_DEPTH)


def _foreground_sample(plane: np.ndarray) -> np.ndarray:
    step = max(1, int(np.sqrt(plane.size / DEPTH_SAMPLES_PER_FRAME)))  # a regular pixel grid
    grid = plane[::step, ::step]
    return grid[_foreground(grid)]


def normal_to_control(
    normal: np.ndarray, world_to_camera: Sequence[Sequence[float]] | np.ndarray | None = None
) -> np.ndarray:
    """Blender Normal pass -> the NormalBAE normal-map ControlNet's RGB.

    Blender's Normal pass is world space; `world_to_camera` (3x3, or a 4x4 view matrix whose
    rotation is used; the client sends camera.matrix_world's inverse) brings it into Blender
    camera space: x right, y up, z towards the viewer. Without it the input is taken as camera
    space already. NormalBAE maps are (n + 1) / 2 of a camera-space normal whose x points LEFT
    (red = facing left), y up (green = facing up), z towards the viewer (blue = facing the
    camera), so a wall facing the camera is (0.5, 0.5, 1.0).
    Pixels without a surface (zero normal) get that facing-the-camera colour: it is what
    NormalBAE shows for flat, featureless areas, where black would be an impossible normal.
    """
    vectors = np.asarray(normal, dtype=np.float32)
    if vectors.ndim != 3 or vectors.shape[2] < 3:
        raise ValueError(f"a normal frame must be HxWx3, not {vectors.shape}")
    vectors = vectors[:, :, :3]
    if world_to_camera is not None:
        vectors = vectors @ _rotation(world_to_camera).T
    length = np.sqrt(np.square(vectors).sum(axis=2))
    surface = np.isfinite(length) & (length > _MIN_NORMAL_LENGTH)
    unit = vectors / np.where(surface, length, 1.0)[:, :, None]
    rgb = np.stack([1.0 - unit[:, :, 0], 1.0 + unit[:, :, 1], 1.0 + unit[:, :, 2]], axis=2) * 0.5
    rgb[~surface] = BACKGROUND_NORMAL_RGB
    return np.clip(rgb, 0.0, 1.0).astype(np.float32)


def _rotation(matrix: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    try:
        values = np.asarray(matrix, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InputError("world_to_camera must be a 3x3 matrix of numbers") from exc
    if values.shape == (4, 4):
        values = values[:3, :3]
    if values.shape != (3, 3) or not np.isfinite(values).all():
        raise InputError(f"world_to_camera must be a 3x3 matrix of numbers, not {values.shape}")
    if abs(float(np.linalg.det(values))) < 1e-6:
        raise InputError("world_to_camera is singular; send the camera's rotation")
    return values


def lineart_to_control(image: np.ndarray) -> np.ndarray:
    """Freestyle line art -> white lines on black, as the lineart ControlNets expect.

    With transparency (Freestyle's own pass is RGBA: lines over alpha 0) the alpha is the line.
    Without it, the dominant (median) brightness is taken as the paper: dark lines on a light
    background are inverted, light lines on dark are kept.
    """
    pixels = np.asarray(image, dtype=np.float32)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"a line-art frame must be HxW or HxWx1..4, not {pixels.shape}")
    pixels = np.nan_to_num(pixels, nan=0.0, posinf=1.0, neginf=0.0)
    channels = pixels.shape[2]
    if channels in (2, 4) and pixels[:, :, -1].min() < 0.999:
        strength = pixels[:, :, -1]
    else:
        luma = pixels[:, :, :3] @ _REC709 if channels >= 3 else pixels[:, :, 0]
        paper_is_light = float(np.median(luma[::4, ::4])) > 0.5
        strength = 1.0 - luma if paper_is_light else luma
    strength = np.clip(strength, 0.0, 1.0).astype(np.float32)
    return np.repeat(strength[:, :, None], 3, axis=2)


def vector_to_flow(vector: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Blender Vector pass (HxWx4) -> (backward_flow, forward_flow), each float32 HxWx2.

    Convention (OpenCV's): pixels, x to the right, y DOWN, defined on this frame's pixels:
      backward_flow[y, x] = (dx, dy): the surface at (x, y) here was at (x+dx, y+dy) in the
                            previous frame; cv2.remap(previous, x+dx, y+dy) warps it onto this.
      forward_flow[y, x]  = (dx, dy): it will be at (x+dx, y+dy) in the next frame.
    Blender's pass is in raster space with y UP, in pixels:
      X, Y = raster(previous) - raster(this);  Z, W = raster(this) - raster(next).
    So backward = (X, -Y) and forward = (-Z, W); both y components flip for y-down images.
    Verified against a Cycles render (tests/blender/test_vector_pass.py): with an orthographic
    camera, a surface that moves 3 px right and then 5 px up has Z = -3 on the first frame,
    X = -3 and W = -5 on the second, Y = -5 on the third; the background is 0.
    """
    values = np.asarray(vector, dtype=np.float32)
    if values.ndim != 3 or values.shape[2] != 4:
        raise ValueError(f"a vector frame must be HxWx4, not {values.shape}")
    backward = np.stack([values[:, :, 0], -values[:, :, 1]], axis=2)
    forward = np.stack([-values[:, :, 2], values[:, :, 3]], axis=2)
    return backward, forward


def flow_to_vector(backward: np.ndarray, forward: np.ndarray) -> np.ndarray:
    """The exact inverse of vector_to_flow: two HxWx2 flows -> Blender's HxWx4 Vector pass.

    For synthetic passes in tests and benchmarks: vector_to_flow(flow_to_vector(b, f)) == (b, f).
    """
    back = np.asarray(backward, dtype=np.float32)
    fwd = np.asarray(forward, dtype=np.float32)
    if back.ndim != 3 or back.shape[2] != 2 or fwd.shape != back.shape:
        raise ValueError(f"flows must both be HxWx2, not {back.shape} and {fwd.shape}")
    return np.stack([back[:, :, 0], -back[:, :, 1], -fwd[:, :, 0], fwd[:, :, 1]], axis=2)
