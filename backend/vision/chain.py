"""Following a key's pixels through a shot with the renderer's own motion (Vector + Depth passes).

A key's pixels are tracked frame by frame: at each frame a tracked point takes the motion of the
pixel nearest to it that shows the same surface (the one whose depth matches the point's), and
moves by it to the next frame. Matching by depth is the edge handling: on a silhouette the
nearest pixel may belong to the surface in front or behind, whose motion is not the point's.
Where no nearby pixel matches, the point is hidden at that frame (something passes in front of
it): it keeps its last motion until it shows again. At the target frame the same test says
whether the point is visible there at all, so splatting never draws a hidden surface.

Flows and positions follow backend.vision.flow: pixels, x right, y down.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .splat import DEPTH_BACKGROUND

# Two depths show the same surface when their logs differ by less than this (≈ 8 %): tolerant
# of a slanted surface's depth changing from one pixel to the next, strict enough that an
# occluder passing in front is told apart from what it hides.
SAME_SURFACE_LOG_DEPTH = 0.08
# Candidates for a point's motion: the pixel nearest to it and its 8 neighbours.
_NEIGHBOURS = tuple((dx, dy) for dy in (0, -1, 1) for dx in (0, -1, 1))
# Tie-break towards the nearest candidate, in log-depth units per squared pixel of distance.
_DISTANCE_PENALTY = 1e-3


def log_depth(depth: np.ndarray) -> np.ndarray:
    """HxW (or HxWx1) distance → float32 log distance; no surface (Blender's 1e10) → log 1e10."""
    plane = np.asarray(depth, dtype=np.float32)
    if plane.ndim == 3:
        plane = plane[:, :, 0]
    finite = np.isfinite(plane) & (plane > 0.0)
    plane = np.where(finite, np.minimum(plane, np.float32(DEPTH_BACKGROUND * 10)), 1e10)
    return np.log(plane).astype(np.float32)


@dataclass
class Track:
    """Where every pixel of a key is at the current frame (HxW arrays over the key's pixels)."""

    x: np.ndarray  # float32 position, pixels
    y: np.ndarray
    log_depth: np.ndarray  # float32, the point's depth when it was last seen
    vx: np.ndarray  # float32, its last motion, kept while it is hidden
    vy: np.ndarray
    hidden: np.ndarray  # bool: hidden at the current frame

    @classmethod
    def start(cls, key_log_depth: np.ndarray) -> Track:
        """Every pixel of the key at its own place, with the key's depth (see log_depth)."""
        ld = np.asarray(key_log_depth, dtype=np.float32)
        h, w = ld.shape
        y, x = np.mgrid[0:h, 0:w].astype(np.float32)
        zero = np.zeros((h, w), np.float32)
        return cls(x, y, ld, zero, zero.copy(), np.zeros((h, w), bool))

    def flow(self) -> np.ndarray:
        """HxWx2 displacement from the key to the current frame; NaN where hidden there."""
        h, w = self.x.shape
        y0, x0 = np.mgrid[0:h, 0:w].astype(np.float32)
        out = np.stack([self.x - x0, self.y - y0], axis=2)
        out[self.hidden] = np.nan
        return out


@dataclass(frozen=True)
class Match:
    """The pixel of a frame that shows each tracked point's surface, where there is one."""

    index: np.ndarray  # flat (y·W + x) index of the matching pixel, HxW; 0 where none
    found: np.ndarray  # bool HxW
    log_depth: np.ndarray  # float32 HxW: the matching pixel's depth (the track's own if none)


def match(track: Track, frame_log_depth: np.ndarray) -> Match:
    """For each tracked point, the pixel nearest to it if it shows the same surface, else the
    nearest of its 8 neighbours that does (only those few points pay for the search)."""
    h, w = frame_log_depth.shape
    flat = frame_log_depth.ravel()
    tracked = track.log_depth.ravel()
    cx = np.rint(track.x.ravel()).astype(np.int64)
    cy = np.rint(track.y.ravel()).astype(np.int64)
    inside = (cx >= 0) & (cx < w) & (cy >= 0) & (cy < h)
    index = np.where(inside, cy * w + cx, 0)
    found = inside & (np.abs(flat[index] - tracked) < SAME_SURFACE_LOG_DEPTH)

    rest = np.flatnonzero(~found)
    if rest.size:
        rx, ry = track.x.ravel()[rest], track.y.ravel()[rest]
        rcx, rcy, rdepth = cx[rest], cy[rest], tracked[rest]
        best_cost = np.full(rest.size, np.inf, np.float32)
        best_index = np.zeros(rest.size, np.int64)
        for dx, dy in _NEIGHBOURS:
            px, py = rcx + dx, rcy + dy
            ok = (px >= 0) & (px < w) & (py >= 0) & (py < h)
            candidate = np.where(ok, py * w + px, 0)
            cost = np.abs(flat[candidate] - rdepth) + _DISTANCE_PENALTY * (
                (px - rx) ** 2 + (py - ry) ** 2
            )
            cost = np.where(ok, cost, np.inf)
            better = cost < best_cost
            best_cost = np.where(better, cost, best_cost)
            best_index = np.where(better, candidate, best_index)
        matched = best_cost < SAME_SURFACE_LOG_DEPTH
        found[rest] = matched
        index[rest] = np.where(matched, best_index, 0)

    depth = np.where(found, flat[index], tracked).astype(np.float32)
    shape = track.x.shape
    return Match(index.reshape(shape), found.reshape(shape), depth.reshape(shape))


def advance(track: Track, motion: np.ndarray, seen: Match) -> Track:
    """Move a track from this frame to the neighbouring one.

    `seen` is match(track, this frame's log depth); `motion` (HxWx2) is this frame's forward
    flow to step to the next frame, its backward flow to step to the previous one.
    """
    flat = motion.reshape(-1, 2)
    vx = np.where(seen.found, flat[seen.index, 0], track.vx).astype(np.float32)
    vy = np.where(seen.found, flat[seen.index, 1], track.vy).astype(np.float32)
    np.nan_to_num(vx, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    np.nan_to_num(vy, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    return Track(track.x + vx, track.y + vy, seen.log_depth, vx, vy, ~seen.found)


def arrive(track: Track, seen: Match) -> Track:
    """The track as seen at its target frame (seen = match there): hidden where that frame shows
    something else, or where the point has left the picture."""
    return Track(track.x, track.y, seen.log_depth, track.vx, track.vy, ~seen.found)
