"""Line art: detecting a drawing of thin strokes on flat paper or transparent film, estimating
its motion, and compositing its in-betweens so strokes stay dark and whole.

Thin lines on a flat background give optical flow almost nothing to hold on to: away from the
strokes every patch is the same flat colour. A distance transform of the strokes gives every
pixel near a stroke a value that moves with it (a cone around each line), which block matching
can follow. And averaging two warped drawings leaves two half-dark copies of every stroke that
does not land exactly on its twin; instead the strokes of the nearer key are kept whole and
dark, and the farther key only darkens them where it agrees.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .pixels import to_uint8

# A pixel is paper where every channel is within this of the paper colour (or, on film, where
# alpha is under it); a drawing is mostly paper.
PAPER_TOLERANCE = 0.06
MIN_PAPER_SHARE = 0.6
# Ink: how far a pixel is from the paper, scaled so a stroke's core reaches 1.
INK_FULL = 0.5
INK_THRESHOLD = 0.5
# Pixels between paper and ink (anti-aliased edges) number at most this many per ink pixel.
MAX_FRINGE = 1.5
# Strokes are thin: under this share of the ink survives an erosion by a disc 1/40 of the
# picture's shorter side across (at least 5 px): lines drawn for the frame size, not areas.
MAX_THICK_SHARE = 0.25
THIN_FRACTION = 40


@dataclass(frozen=True)
class Paper:
    """What a drawing is on: transparent film, or flat paper of one colour (RGB 0..1)."""

    film: bool
    colour: tuple[float, float, float] = (1.0, 1.0, 1.0)


def _paper_of(image: np.ndarray) -> Paper | None:
    # The paper is told from a grid of about 64k pixels: cheap at any size.
    step = max(1, int(np.sqrt(image.shape[0] * image.shape[1] / 65536)))
    sample = image[::step, ::step]
    if image.shape[2] == 4:
        if np.mean(sample[..., 3] < PAPER_TOLERANCE) >= MIN_PAPER_SHARE:
            return Paper(film=True)
        if not np.all(sample[..., 3] > 1.0 - PAPER_TOLERANCE):
            return None
    rgb = sample[..., :3]
    colour = np.median(rgb.reshape(-1, 3), axis=0)
    near = np.max(np.abs(rgb - colour), axis=2) < PAPER_TOLERANCE
    if np.mean(near) < MIN_PAPER_SHARE:
        return None
    r, g, b = (float(c) for c in colour)
    return Paper(film=False, colour=(r, g, b))


def ink(image: np.ndarray, paper: Paper) -> np.ndarray:
    """How much ink each pixel holds, 0 (paper) .. 1 (a stroke's core), HxW float32."""
    if paper.film:
        return image[..., 3].astype(np.float32)
    far = np.max(np.abs(image[..., :3] - np.asarray(paper.colour, np.float32)), axis=2)
    return np.clip(far / INK_FULL, 0.0, 1.0).astype(np.float32)


def _thin(coverage: np.ndarray) -> bool:
    """Ink in thin strokes with nothing but their anti-aliased edges between them and paper."""
    mask = (coverage >= INK_THRESHOLD).astype(np.uint8)
    total = int(mask.sum())
    if total == 0:
        return False
    between = int(np.count_nonzero((coverage > PAPER_TOLERANCE / INK_FULL) & (mask == 0)))
    if between > MAX_FRINGE * total + 0.01 * coverage.size:
        return False  # shading or texture, not lines
    size = max(5, round(min(coverage.shape) / THIN_FRACTION) | 1)
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    return int(cv2.erode(mask, disc).sum()) < MAX_THICK_SHARE * total


def detect(key0: np.ndarray, key1: np.ndarray) -> Paper | None:
    """The paper both keys (float RGB/RGBA, straight alpha) are drawn on when both are line art
    (mostly paper, the rest thin strokes) on the same kind of paper; None otherwise."""
    paper0, paper1 = _paper_of(key0), _paper_of(key1)
    if paper0 is None or paper1 is None or paper0.film != paper1.film:
        return None
    if (
        not paper0.film
        and max(abs(a - b) for a, b in zip(paper0.colour, paper1.colour, strict=True)) > 0.1
    ):
        return None
    if not (_thin(ink(key0, paper0)) and _thin(ink(key1, paper1))):
        return None
    return paper0


def distance_image(coverage: np.ndarray, reach: float) -> np.ndarray:
    """uint8 picture for block matching: 255 on the strokes, falling linearly to 0 at `reach`
    pixels from them, so the neighbourhood of every stroke has a slope that moves with it."""
    paper = (coverage < INK_THRESHOLD).astype(np.uint8)
    if not paper.any() or paper.all():
        return to_uint8(coverage)
    distance = cv2.distanceTransform(paper, cv2.DIST_L2, 5)
    cone = np.clip(1.0 - distance / reach, 0.0, 1.0)
    return to_uint8(cone)


def flow_picture(image: np.ndarray, paper: Paper, reach: float) -> np.ndarray:
    """The picture motion is estimated on for a drawing: its strokes' distance image."""
    return distance_image(ink(image, paper), reach)


def reach_for(shape: tuple[int, ...]) -> float:
    """How far the distance image reaches from a stroke: 16 px at 192×128, with the size."""
    return max(8.0, 16.0 * max(shape[:2]) / 192.0)


def composite(near: np.ndarray, far: np.ndarray, paper: Paper) -> np.ndarray:
    """One drawing from the two keys' drawings warped to the in-between (premultiplied on film).

    The nearer key's strokes are kept as they are, whole and dark; the farther key's are drawn
    only where they fall on or beside those (within a pixel), darkening what both agree on
    instead of leaving a faint second copy where they do not."""
    ink_near = ink(near, paper)
    ink_far = ink(far, paper)
    inked = (ink_near >= INK_THRESHOLD).astype(np.uint8)
    beside = cv2.dilate(inked, np.ones((3, 3), np.uint8)) > 0
    take_far = beside & (ink_far > ink_near)
    return np.where(take_far[..., None], far, near).astype(np.float32)
