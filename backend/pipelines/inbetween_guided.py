"""Render-assisted in-betweening (method "render"): the motion comes from the renderer.

The shot's cheap guide passes, Vector and Depth for every frame from the first key to the last,
give exact motion. Each key's pixels are tracked to every frame between the keys by chaining the
per-frame vectors (backend.vision.chain: key 0 forward with the forward vectors, key 1 backward
with the backward vectors), then splatted there, nearer surfaces winning (depth is the splat
importance) and points hidden at that frame left out. The two splats are blended by time; where
one key does not see a surface the other fills it, and what neither key saw is inpainted.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Iterable

import cv2
import numpy as np

from ..jobs import FrameRanges
from ..vision.chain import Track, advance, arrive, log_depth, match
from ..vision.passes import vector_to_flow
from ..vision.pixels import to_uint8
from ..vision.splat import Splat, premultiply, softmax_splat, unpremultiply

# Splat importance per unit of log depth: a surface 10 % nearer weighs e^(30·0.095) ≈ 17× more.
DEPTH_IMPORTANCE = 30.0
# A target pixel counts as seen by a key where the key's splat covers at least this much of it;
# full weight from FULL_COVERAGE up.
MIN_COVERAGE = 0.05
FULL_COVERAGE = 0.5
INPAINT_RADIUS = 3

# (vector HxWx4, depth HxWx1) of one frame, as the backend decodes the uploads.
GuideSource = Callable[[int], tuple[np.ndarray, np.ndarray]]


def guide_ranges(keys: Iterable[int], frames: Iterable[int]) -> FrameRanges:
    """Frames whose vector and depth passes a render-assisted job needs, as ranges.

    Every frame from one key to the next, both keys included, for each key interval that has a
    requested frame strictly inside it: chaining steps through every frame in between. Kept as
    key-to-key spans (two numbers each), never as the frames themselves.
    """
    keys = tuple(keys)
    wanted = sorted(set(frames))
    spans = []
    for k0, k1 in itertools.pairwise(keys):
        i = bisect.bisect_right(wanted, k0)
        if i < len(wanted) and wanted[i] < k1:
            spans.append((k0, k1))
    return FrameRanges.from_spans(spans)


def guide_frames(keys: Iterable[int], frames: Iterable[int]) -> tuple[int, ...]:
    """guide_ranges() as a tuple of frames: only for jobs whose guides were all uploaded (their
    number is bounded by the files on disk)."""
    return tuple(guide_ranges(keys, frames))


class GuidedInterpolator:
    """Frames between two keys (same layout, straight alpha) from the renderer's motion.

    Tracks are chained once, on the first frame asked for, for every frame in `targets`
    (frames strictly between k0 and k1); each target then keeps the two splat flows.
    """

    def __init__(
        self,
        key0: np.ndarray,
        key1: np.ndarray,
        k0: int,
        k1: int,
        targets: Iterable[int],
        guides: GuideSource,
    ) -> None:
        if not k0 < k1:
            raise ValueError(f"keys must be ascending, not {k0}, {k1}")
        self.key0, self.key1 = key0, key1
        self.k0, self.k1 = k0, k1
        self.targets = tuple(sorted({t for t in targets if k0 < t < k1}))
        self.guides = guides
        self.has_alpha = key0.shape[2] == 4
        self._work0 = premultiply(key0) if self.has_alpha else key0
        self._work1 = premultiply(key1) if self.has_alpha else key1
        self._tracks: dict[int, tuple[Track, Track]] | None = None
        self._ref_depth = 0.0

    def _chain(self) -> dict[int, tuple[Track, Track]]:
        """(key 0's track, key 1's track) at every target, as seen there."""
        if self._tracks is not None:
            return self._tracks
        vectors: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        depths: dict[int, np.ndarray] = {}
        for f in range(self.k0, self.k1 + 1):
            vector, depth = self.guides(f)
            vectors[f] = vector_to_flow(vector)  # (backward, forward)
            depths[f] = log_depth(depth)
        self._ref_depth = float(min(depths[self.k0].min(), depths[self.k1].min()))

        ahead: dict[int, Track] = {}
        track = Track.start(depths[self.k0])
        for f in range(self.k0, self.k1):  # key 0 forward: frame f → f + 1
            seen = match(track, depths[f])
            if f in self.targets:
                ahead[f] = arrive(track, seen)
            if f + 1 < self.k1:
                track = advance(track, vectors[f][1], seen)
        behind: dict[int, Track] = {}
        track = Track.start(depths[self.k1])
        for f in range(self.k1, self.k0, -1):  # key 1 backward: frame f → f - 1
            seen = match(track, depths[f])
            if f in self.targets:
                behind[f] = arrive(track, seen)
            if f - 1 > self.k0:
                track = advance(track, vectors[f][0], seen)
        self._tracks = {t: (ahead[t], behind[t]) for t in self.targets}
        return self._tracks

    def _splat(self, image: np.ndarray, track: Track) -> Splat:
        importance = -DEPTH_IMPORTANCE * (track.log_depth - self._ref_depth)
        return softmax_splat(image, track.flow(), importance)

    def at(self, t: int) -> np.ndarray:
        """The frame t (strictly between the keys, one of the targets), straight alpha, 0..1."""
        tracks = self._chain()
        if t not in tracks:
            raise ValueError(f"frame {t} is not one of this interval's targets {self.targets}")
        s = (t - self.k0) / (self.k1 - self.k0)
        track0, track1 = tracks[t]
        fwd = self._splat(self._work0, track0)
        bwd = self._splat(self._work1, track1)

        w0 = (1.0 - s) * _seen(fwd.coverage)
        w1 = s * _seen(bwd.coverage)
        total = w0 + w1
        holes = total <= 0.0
        safe = np.where(holes, 1.0, total)[..., None]
        mixed = (w0[..., None] * fwd.image + w1[..., None] * bwd.image) / safe
        mixed = inpaint_holes(np.clip(mixed, 0.0, 1.0).astype(np.float32), holes)
        return unpremultiply(mixed) if self.has_alpha else mixed


def _seen(coverage: np.ndarray) -> np.ndarray:
    """How much a key's splat counts at each pixel: 0 in its holes, 1 where fully covered."""
    ramp = (coverage - MIN_COVERAGE) / (FULL_COVERAGE - MIN_COVERAGE)
    return np.clip(ramp, 0.0, 1.0).astype(np.float32)


def inpaint_holes(image: np.ndarray, holes: np.ndarray) -> np.ndarray:
    """Inpaint (OpenCV Telea) the pixels no key saw; every other pixel is left as it is."""
    if not holes.any():
        return image
    if holes.all():
        return image  # nothing to inpaint from (all zeros already)
    # Inpaint only the box around the holes (plus the radius it reads): the rest is unchanged.
    ys, xs = np.nonzero(holes)
    margin = 2 * INPAINT_RADIUS + 1
    box = (
        slice(max(int(ys.min()) - margin, 0), int(ys.max()) + margin + 1),
        slice(max(int(xs.min()) - margin, 0), int(xs.max()) + margin + 1),
    )
    region, mask = image[box], holes[box]
    out = image.copy()
    # OpenCV inpaints 1- or 3-channel 8-bit images: colour together, alpha on its own.
    for channels in (slice(0, 3), slice(3, image.shape[2])):
        group = region[..., channels]
        if group.shape[2] == 0:
            continue
        u8 = np.ascontiguousarray(to_uint8(group))
        filled = cv2.inpaint(u8, mask.astype(np.uint8), INPAINT_RADIUS, cv2.INPAINT_TELEA)
        filled = filled.reshape(group.shape).astype(np.float32) / 255.0
        out[box][..., channels][mask] = filled[mask]
    return out
