"""Temporal consistency of a rendered-then-stylized shot, measured with the render's own motion.

Warping error (Lai et al., "Learning Blind Video Temporal Consistency", 2018): each frame is
compared with the previous frame warped onto it along the exact motion from Blender's Vector
pass, over the pixels whose surface was visible in both frames; a steady stylization scores
near 0, a flickering one high. Visibility comes from the forward/backward check of the two
frames' vectors and, when the depth pass is there, from depth disagreement.

Also used by flow-guided latent fusion (pipelines/stylize_fusion.py), which needs the very
same "where can the previous frame be trusted" mask.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..jobs import Pass
from .flow import backward_warp, occlusion_mask
from .imageio import decode
from .passes import BACKGROUND_DEPTH, vector_to_flow

# Same surface, consecutive frames: depth changes by the object's motion along the view axis
# only. Occlusion swaps a surface for another at a clearly different distance.
DEPTH_TOLERANCE = 0.1  # relative
# Exact render flow needs no slack for estimation error; sub-pixel interpolation at motion
# boundaries still does (squared pixels, see flow.occlusion_mask).
FLOW_TOLERANCE_PX2 = 0.25
_MAX_PIXELS = 8192 * 8192
_FRAME_FILE = re.compile(r"^(-?\d+)\.(png|exr)$")


@dataclass(frozen=True)
class FrameMotion:
    """One frame's exact motion (from its Vector pass) and, optionally, its depth."""

    backward: np.ndarray  # HxWx2: where each pixel's surface was in the previous frame (offset)
    forward: np.ndarray  # HxWx2: where it will be in the next frame (offset)
    depth: np.ndarray | None = None  # HxW distances; Blender's background is 1e10

    @classmethod
    def from_passes(cls, vector: np.ndarray, depth: np.ndarray | None = None) -> FrameMotion:
        backward, forward = vector_to_flow(vector)
        plane = None
        if depth is not None:
            plane = np.asarray(depth, np.float32)
            plane = plane[:, :, 0] if plane.ndim == 3 else plane
        return cls(backward, forward, plane)


def visible_in_previous(current: FrameMotion, previous: FrameMotion) -> np.ndarray:
    """HxW bool, on the current frame's pixels: True where the surface seen there was visible
    in the previous frame, so the previous frame warped along `current.backward` shows it.

    False where the motion leads outside the picture, where the two frames' vectors disagree
    (the previous frame's forward motion does not lead back here: disocclusion), and, with
    depth in both frames, where the previous frame saw something at another distance there.
    """
    backward = current.backward
    h, w = backward.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    sx, sy = xs + backward[..., 0], ys + backward[..., 1]
    visible = (sx >= 0.0) & (sx <= w - 1) & (sy >= 0.0) & (sy <= h - 1)
    visible &= ~occlusion_mask(backward, previous.forward, abs_px=FLOW_TOLERANCE_PX2)
    if current.depth is not None and previous.depth is not None:
        visible &= _same_depth(current.depth, previous.depth, backward)
    return visible


def _same_depth(depth: np.ndarray, previous: np.ndarray, backward: np.ndarray) -> np.ndarray:
    here = np.asarray(depth, np.float32)
    # Background (1e10) would dominate any interpolation: compare "is there a surface" first,
    # then distances between surfaces. Bilinear sampling across a silhouette mixes a surface
    # with the background and so reads as occluded, which is the safe side.
    there = backward_warp(np.minimum(previous, BACKGROUND_DEPTH), backward)
    here_bg = here >= BACKGROUND_DEPTH
    there_bg = there >= BACKGROUND_DEPTH * (1.0 - 1e-6)
    close = np.abs(there - here) <= DEPTH_TOLERANCE * np.maximum(here, 1e-6)
    return np.where(here_bg, there_bg, ~there_bg & close)


def warping_error(
    frames: Sequence[np.ndarray],
    backward_flows: Sequence[np.ndarray],
    visible: Sequence[np.ndarray] | None = None,
) -> float:
    """Mean over consecutive pairs of the mean squared error between frame i+1 and frame i
    warped onto it, over the visible pixels.

    frames: HxWxC, uint8 (taken as /255) or float in 0..1; the first three channels count.
    backward_flows[i] and visible[i] (HxW bool, default all) belong to the pair
    (frames[i], frames[i+1]) and are defined on frames[i+1]'s pixels.
    """
    return WarpingReport.of(frames, backward_flows, visible).mean


@dataclass(frozen=True)
class WarpingReport:
    """Warping error of a shot: the mean, each pair's value and how much of it was compared."""

    mean: float
    per_pair: tuple[float, ...]
    visible_fraction: float

    @classmethod
    def of(
        cls,
        frames: Sequence[np.ndarray],
        backward_flows: Sequence[np.ndarray],
        visible: Sequence[np.ndarray] | None = None,
    ) -> WarpingReport:
        if len(frames) < 2:
            raise ValueError("the warping error needs at least two frames")
        if len(backward_flows) != len(frames) - 1:
            raise ValueError(
                f"{len(frames)} frames need {len(frames) - 1} backward flows, "
                f"not {len(backward_flows)}"
            )
        if visible is not None and len(visible) != len(backward_flows):
            raise ValueError("give one visibility mask per backward flow")
        errors: list[float] = []
        seen = compared = 0
        for i, flow in enumerate(backward_flows):
            before, after = _colour(frames[i]), _colour(frames[i + 1])
            mask = np.ones(after.shape[:2], bool) if visible is None else visible[i]
            warped = backward_warp(before, flow)
            squared = np.square(after - warped).mean(axis=2)
            count = int(mask.sum())
            errors.append(float(squared[mask].mean()) if count else 0.0)
            seen, compared = seen + mask.size, compared + count
        return cls(float(np.mean(errors)), tuple(errors), compared / seen)


def shot_warping_error(
    frames: Sequence[np.ndarray],
    vectors: Sequence[np.ndarray],
    depths: Sequence[np.ndarray] | None = None,
) -> WarpingReport:
    """Warping error of consecutive frames of a shot from their render passes.

    vectors[i] (and depths[i]) are Blender's Vector (and Z) passes of frames[i], as
    imageio.decode returns them; the first frame's forward motion checks the second's.
    """
    if len(vectors) != len(frames) or (depths is not None and len(depths) != len(frames)):
        raise ValueError("give one vector pass (and depth pass) per frame")
    motions = [
        FrameMotion.from_passes(v, None if depths is None else depths[i])
        for i, v in enumerate(vectors)
    ]
    flows = [m.backward for m in motions[1:]]
    masks = [visible_in_previous(motions[i + 1], motions[i]) for i in range(len(motions) - 1)]
    return WarpingReport.of(frames, flows, masks)


def folder_warping_error(outputs: Path, vectors: Path, depths: Path | None = None) -> WarpingReport:
    """Warping error of the PNG frames in `outputs` against the Vector (and depth) EXR passes in
    the other folders, files named by frame number as the backend stores them (000012.png).

    Only runs of consecutive frame numbers are compared: a Vector pass describes the motion
    from the previous scene frame, not from whichever frame was rendered before it.
    """
    images = _frame_files(outputs)
    vector_files = _frame_files(vectors)
    depth_files = _frame_files(depths) if depths is not None else None
    frames = set(images) & set(vector_files)
    if depth_files is not None:
        frames &= set(depth_files)
    ordered = sorted(frames)
    pairs = [(a, b) for a, b in itertools.pairwise(ordered) if b == a + 1]
    if not pairs:
        raise ValueError(f"no two consecutive frames with passes in {outputs} and {vectors}")
    decoded: dict[int, tuple[np.ndarray, FrameMotion]] = {}

    def load(frame: int) -> tuple[np.ndarray, FrameMotion]:
        if frame not in decoded:
            image = _read(images[frame], Pass.BEAUTY)
            vector = _read(vector_files[frame], Pass.VECTOR)
            depth = _read(depth_files[frame], Pass.DEPTH) if depth_files is not None else None
            decoded[frame] = (image, FrameMotion.from_passes(vector, depth))
        return decoded[frame]

    # Pairs need not chain (gaps in the frame numbers): each is measured on its own.
    reports = []
    for a, b in pairs:
        (image_a, motion_a), (image_b, motion_b) = load(a), load(b)
        mask = visible_in_previous(motion_b, motion_a)
        reports.append(WarpingReport.of([image_a, image_b], [motion_b.backward], [mask]))
        decoded.pop(a)  # keep two frames decoded at most
    per_pair = tuple(r.per_pair[0] for r in reports)
    fraction = float(np.mean([r.visible_fraction for r in reports]))
    return WarpingReport(float(np.mean(per_pair)), per_pair, fraction)


def job_warping_error(job_dir: Path) -> WarpingReport:
    """Warping error of a stylize job's outputs, from its own uploaded vector (and depth)
    passes: `job_dir` is the job's folder in the backend's data folder (jobs/<id>)."""
    depths = job_dir / "inputs" / Pass.DEPTH.value
    return folder_warping_error(
        job_dir / "outputs",
        job_dir / "inputs" / Pass.VECTOR.value,
        depths if depths.is_dir() else None,
    )


def _colour(image: np.ndarray) -> np.ndarray:
    pixels = np.asarray(image)
    pixels = pixels.astype(np.float32) / 255.0 if pixels.dtype == np.uint8 else pixels
    pixels = pixels.astype(np.float32, copy=False)
    return pixels[..., None] if pixels.ndim == 2 else pixels[..., :3]


def _frame_files(folder: Path) -> dict[int, Path]:
    found: dict[int, Path] = {}
    for path in folder.iterdir() if folder.is_dir() else ():
        match = _FRAME_FILE.match(path.name)
        if match and path.is_file():
            found[int(match.group(1))] = path
    return found


def _read(path: Path, pass_: Pass) -> np.ndarray:
    if pass_ is Pass.BEAUTY and path.suffix == ".png":
        image = cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"{path} is not a readable PNG")
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return decode(path.read_bytes(), max_pixels=_MAX_PIXELS, expect_size=None, pass_=pass_)
