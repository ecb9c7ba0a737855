"""Frame bookkeeping: which scene frames a job covers, its key frames, and where each frame's
file lives. Pure functions over plain values; the operators feed them what bpy reports."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

MAX_CHANNEL = 128  # the sequencer's highest channel


class FrameError(ValueError):
    """Frames that cannot make a job or a strip; the message says what to change."""


@dataclass(frozen=True)
class FrameRange:
    start: int
    end: int  # inclusive, like Blender's frame_end

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise FrameError(f"the frame range {self.start}–{self.end} ends before it starts")

    @property
    def frames(self) -> tuple[int, ...]:
        return tuple(range(self.start, self.end + 1))

    def __contains__(self, frame: object) -> bool:
        return isinstance(frame, int) and self.start <= frame <= self.end


def resolve_range(use_scene: bool, scene: tuple[int, int], custom: tuple[int, int]) -> FrameRange:
    start, end = scene if use_scene else custom
    return FrameRange(int(start), int(end))


def key_frames(positions: Iterable[float], frame_range: FrameRange) -> tuple[int, ...]:
    """Whole frames of keyframe positions (sub-frame keys round to the nearest frame) inside the
    range, ascending and unique."""
    frames = {math.floor(p + 0.5) for p in positions}
    return tuple(sorted(f for f in frames if f in frame_range))


def describe_keys(found: Iterable[float], frame_range: FrameRange, source: str) -> str:
    """Why there are too few keys, in words: what was found and where."""
    everything = sorted({math.floor(p + 0.5) for p in found})
    inside = [f for f in everything if f in frame_range]
    span = f"{frame_range.start}–{frame_range.end}"
    if not everything:
        return f"{source} has no keys; in-betweening needs at least two"
    if len(inside) < 2:
        listed = ", ".join(map(str, everything[:12]))
        return (
            f"{source} has keys at {listed}, but {len(inside)} of them fall in the frame range"
            f" {span}; in-betweening needs at least two"
        )
    return f"{source} has {len(inside)} keys in {span}"


@dataclass(frozen=True)
class ImageStripInfo:
    """What the sequencer says about an image strip (plain values)."""

    name: str
    channel: int
    frame_start: int  # where element 0 would show (before trimming)
    frame_final_start: int  # first visible frame
    frame_final_end: int  # one past the last visible frame
    directory: str  # absolute
    files: tuple[str, ...]  # element file names, in order


def strip_keys(strips: Iterable[ImageStripInfo], frame_range: FrameRange) -> dict[int, Path]:
    """Key frame → image file from image strips: a one-image strip is a key at its first visible
    frame; a sequence gives one key per visible element. The higher channel wins a frame, as in
    the sequencer's own display."""
    keys: dict[int, tuple[int, Path]] = {}
    for strip in strips:
        if not strip.files:
            continue
        if len(strip.files) == 1:
            shown = {strip.frame_final_start: strip.files[0]}
        else:
            shown = {
                strip.frame_start + i: name
                for i, name in enumerate(strip.files)
                if strip.frame_final_start <= strip.frame_start + i < strip.frame_final_end
            }
        for frame, name in shown.items():
            if frame in frame_range and (frame not in keys or keys[frame][0] < strip.channel):
                keys[frame] = (strip.channel, Path(strip.directory) / name)
    return {frame: keys[frame][1] for frame in sorted(keys)}


def frame_file(frame: int) -> str:
    """The file name of one frame in a take folder; negative frames keep their sign."""
    return f"{frame:04d}.png" if frame >= 0 else f"-{-frame:04d}.png"


_FRAME_FILE = re.compile(r"^(-?\d+)\.png$")


def frame_of(name: str) -> int | None:
    match = _FRAME_FILE.match(name)
    return int(match.group(1)) if match else None


def take_folder(output_root: Path, kind: str, take: str) -> Path:
    return output_root / f"{kind}_{take}"


@dataclass(frozen=True)
class StripLayout:
    """An image-sequence strip that shows frame `start + i` from `files[i]`."""

    directory: Path
    start: int
    files: tuple[str, ...]

    @property
    def end(self) -> int:
        """Last frame shown (inclusive)."""
        return self.start + len(self.files) - 1


def strip_layout(directory: Path, frames: Iterable[int]) -> StripLayout:
    """Lay out one file per scene frame; the frames must be contiguous (a strip has no gaps)."""
    ordered = sorted(set(frames))
    if not ordered:
        raise FrameError("there are no frames to put on a strip")
    if ordered[-1] - ordered[0] + 1 != len(ordered):
        missing = sorted(set(range(ordered[0], ordered[-1] + 1)) - set(ordered))
        raise FrameError(f"frames {_listed(missing)} are missing; a strip cannot have gaps")
    return StripLayout(directory, ordered[0], tuple(frame_file(f) for f in ordered))


def missing_files(directory: Path, frames: Iterable[int]) -> list[int]:
    return [f for f in frames if not (directory / frame_file(f)).is_file()]


def free_channel(occupied: Iterable[tuple[int, int, int]], start: int, end: int) -> int:
    """The channel above every strip that overlaps frames start..end (inclusive); `occupied`
    holds (channel, first frame, one past the last frame) per strip, like the sequencer's
    frame_final_start / frame_final_end."""
    top = 0
    for channel, first, stop in occupied:
        if first <= end and stop > start:
            top = max(top, channel)
    if top >= MAX_CHANNEL:
        raise FrameError(f"no free channel above channel {top} for frames {start}–{end}")
    return top + 1


def _listed(frames: list[int]) -> str:
    shown = ", ".join(map(str, frames[:12]))
    return shown + (f" and {len(frames) - 12} more" if len(frames) > 12 else "")
