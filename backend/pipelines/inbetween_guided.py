"""Render-assisted in-betweening (method "render"): the motion comes from the renderer.

The shot's cheap guide passes, Vector and Depth for every frame from the first key to the last,
give exact motion. Each key's pixels are tracked to every frame between the keys by chaining the
per-frame vectors (backend.vision.chain: key 0 forward with the forward vectors, key 1 backward
with the backward vectors), then splatted there, nearer surfaces winning (depth is the splat
importance) and points hidden at that frame left out. The two splats are blended by time; where
one key does not see a surface the other fills it, and what neither key saw is inpainted.

Memory does not grow with the distance between the keys: key 1's tracks wait on disk (in the
job's scratch folder) while key 0 is walked forward, and guides are read a frame at a time.
"""

from __future__ import annotations

import bisect
import itertools
import secrets
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

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

    Memory stays a few frames whatever the distance between the keys: on the first frame
    asked for, key 1 is chained backward from k1 and its track at every target is spilled to a
    file in `scratch` (TrackSpill); then key 0 is walked forward frame by frame, and each target
    is made as soon as the walk reaches it, from the walk's track and the spilled one. Guides
    are read from `guides` one frame at a time and never kept. Asked in ascending order (as a
    chunk writes its frames), the walk never goes back: time is linear in the frames. Asked
    for an earlier frame, the walk starts again from key 0. close() removes the spilled tracks.
    """

    def __init__(
        self,
        key0: np.ndarray,
        key1: np.ndarray,
        k0: int,
        k1: int,
        targets: Iterable[int],
        guides: GuideSource,
        scratch: Path | None = None,
    ) -> None:
        if not k0 < k1:
            raise ValueError(f"keys must be ascending, not {k0}, {k1}")
        self.key0, self.key1 = key0, key1
        self.k0, self.k1 = k0, k1
        self.targets = frozenset(t for t in targets if k0 < t < k1)
        self.guides = guides
        self.has_alpha = key0.shape[2] == 4
        self._work0 = premultiply(key0) if self.has_alpha else key0
        self._work1 = premultiply(key1) if self.has_alpha else key1
        self._spill = TrackSpill(scratch)
        self._behind_done = False
        self._nearest1: np.float32 | None = None  # key 1's smallest log depth
        self._walk: _Walk | None = None

    def __enter__(self) -> GuidedInterpolator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove the spilled tracks (a later at() spills them again)."""
        self._spill.close()
        self._behind_done = False
        self._walk = None

    def _frame(self, f: int) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
        """Frame f's (backward, forward) flows and log depth, read now and not kept."""
        vector, depth = self.guides(f)
        return vector_to_flow(vector), log_depth(depth)

    def _chain_behind(self) -> None:
        """Key 1 backward (frame f → f - 1) to every target, each track spilled there."""
        if self._behind_done:
            return
        track: Track | None = None
        for f in range(self.k1, self.k0, -1):
            (backward, _), depth = self._frame(f)
            if track is None:
                track = Track.start(depth)
                self._nearest1 = depth.min()
            seen = match(track, depth)
            if f in self.targets:
                self._spill.put(f, arrive(track, seen))
            if f - 1 > self.k0:
                track = advance(track, backward, seen)
        self._behind_done = True

    def _ahead(self, t: int) -> tuple[Track, float]:
        """Key 0's track at t, walked forward (frame f → f + 1), and the splats' reference
        depth (the nearer of the two keys' nearest surfaces)."""
        nearest1 = self._nearest1
        assert nearest1 is not None, "key 1 is chained first"
        walk = self._walk
        if walk is not None and walk.arrived is not None and walk.arrived_at == t:
            return walk.arrived, float(min(walk.nearest0, nearest1))
        if walk is None or walk.frame > t:
            (_, forward), depth = self._frame(self.k0)
            walk = self._walk = _Walk(self.k0, Track.start(depth), depth.min())
            walk.pending = (forward, depth)
        while walk.frame <= t:
            if walk.pending is not None:
                (forward, depth), walk.pending = walk.pending, None
            else:
                (_, forward), depth = self._frame(walk.frame)
            seen = match(walk.track, depth)
            if walk.frame == t:
                walk.arrived, walk.arrived_at = arrive(walk.track, seen), t
            if walk.frame + 1 < self.k1:
                walk.track = advance(walk.track, forward, seen)
            walk.frame += 1
        assert walk.arrived is not None
        return walk.arrived, float(min(walk.nearest0, nearest1))

    def _splat(self, image: np.ndarray, flow: np.ndarray, depth: np.ndarray, ref: float) -> Splat:
        importance = -DEPTH_IMPORTANCE * (depth - ref)
        return softmax_splat(image, flow, importance)

    def at(self, t: int) -> np.ndarray:
        """The frame t (strictly between the keys, one of the targets), straight alpha, 0..1."""
        if t not in self.targets:
            raise ValueError(
                f"frame {t} is not one of this interval's targets {tuple(sorted(self.targets))}"
            )
        self._chain_behind()
        ahead, ref = self._ahead(t)
        flow1, depth1 = self._spill.get(t)
        s = (t - self.k0) / (self.k1 - self.k0)
        fwd = self._splat(self._work0, ahead.flow(), ahead.log_depth, ref)
        bwd = self._splat(self._work1, flow1, depth1, ref)

        w0 = (1.0 - s) * _seen(fwd.coverage)
        w1 = s * _seen(bwd.coverage)
        total = w0 + w1
        holes = total <= 0.0
        safe = np.where(holes, 1.0, total)[..., None]
        mixed = (w0[..., None] * fwd.image + w1[..., None] * bwd.image) / safe
        mixed = inpaint_holes(np.clip(mixed, 0.0, 1.0).astype(np.float32), holes)
        return unpremultiply(mixed) if self.has_alpha else mixed


@dataclass
class _Walk:
    """Key 0's forward walk: its track at `frame`, not yet matched there."""

    frame: int
    track: Track
    nearest0: np.float32  # key 0's smallest log depth
    pending: tuple[np.ndarray, np.ndarray] | None = None  # frame's (forward flow, depth), read
    arrived: Track | None = None  # the track as seen at the last target passed ...
    arrived_at: int | None = None  # ... which is this frame


class TrackSpill:
    """Tracks at their target frames, kept in files until close(): each as the splat reads it,
    its flow (NaN where hidden) and its log depth, written with np.save and read back exactly.

    In `folder` (the job's scratch folder, which the worker removes when the job ends), else
    in a temporary folder of the system's own.
    """

    def __init__(self, folder: Path | None) -> None:
        self._given = folder
        self._temporary: tempfile.TemporaryDirectory[str] | None = None
        self._files: dict[int, Path] = {}

    def _folder(self) -> Path:
        if self._given is not None:
            self._given.mkdir(mode=0o700, parents=True, exist_ok=True)
            return self._given
        if self._temporary is None:
            self._temporary = tempfile.TemporaryDirectory(prefix="framesmith-tracks-")
        return Path(self._temporary.name)

    def put(self, frame: int, track: Track) -> None:
        path = self._folder() / f"track-{secrets.token_hex(4)}-{frame}.npy"
        with open(path, "xb") as f:
            np.save(f, track.flow())
            np.save(f, track.log_depth)
        self._files[frame] = path

    def get(self, frame: int) -> tuple[np.ndarray, np.ndarray]:
        """(flow HxWx2, log depth HxW) of the track spilled at `frame`."""
        with open(self._files[frame], "rb") as f:
            return np.load(f), np.load(f)

    def close(self) -> None:
        for path in self._files.values():
            path.unlink(missing_ok=True)
        self._files.clear()
        if self._temporary is not None:
            self._temporary.cleanup()
            self._temporary = None


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
