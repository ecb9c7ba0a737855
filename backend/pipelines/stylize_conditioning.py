"""ControlNet conditioning images from Blender's passes, prepared per chunk (numpy only).

Depth is normalised with one range for the whole shot (computed from every depth frame of the
job the first time a chunk needs it, reading one frame at a time, then kept per job), so
conditioning never flickers with per-frame normalisation and a resumed job gets the very same
range.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from ..jobs import JobSpec, Pass, PipelineError
from ..vision.passes import (
    DepthRange,
    depth_range_streamed,
    depth_to_control,
    lineart_to_control,
    normal_to_control,
)
from .base import RunContext
from .stylize_params import StylizeParams

_RANGES_KEPT = 32  # jobs whose depth range is remembered (a few floats each)


class DepthRanges:
    """The depth range of recent jobs over the frames `frames_of` names (the whole shot by
    default), by job id: one range per job, so the control never flickers between chunks and a
    resumed job gets the same range."""

    def __init__(
        self,
        frames_of: Callable[[JobSpec], Iterable[int]] = lambda job: job.frames,
        kept: int = _RANGES_KEPT,
    ) -> None:
        self._frames_of = frames_of
        self._kept = kept
        self._ranges: OrderedDict[str, DepthRange] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, ctx: RunContext) -> DepthRange:
        job = ctx.job
        with self._lock:
            if job.id in self._ranges:
                self._ranges.move_to_end(job.id)
                return self._ranges[job.id]
        # Streamed: the frames are read one at a time, never all held (and, for a long shot,
        # read twice).
        frames = self._frames_of(job)
        found = depth_range_streamed(lambda: (ctx.input(Pass.DEPTH, f) for f in frames))
        with self._lock:
            self._ranges[job.id] = found
            while len(self._ranges) > self._kept:
                self._ranges.popitem(last=False)
        return found


DEPTH_RANGES = DepthRanges()


def control_frames(
    ctx: RunContext, params: StylizeParams, frames: Sequence[int]
) -> list[list[np.ndarray]]:
    """One list of float32 HxWx3 (0..1) images per ControlNet, for `frames`, in order.

    A pass shared by several ControlNets is converted once.
    """
    converted: dict[Pass, list[np.ndarray]] = {}
    out: list[list[np.ndarray]] = []
    for net in params.controlnets:
        p = net.render_pass
        if p not in converted:
            converted[p] = [_convert(ctx, params, p, f) for f in frames]
        out.append(converted[p])
    return out


def _convert(ctx: RunContext, params: StylizeParams, p: Pass, frame: int) -> np.ndarray:
    try:
        if p is Pass.DEPTH:
            return depth_to_control(ctx.input(p, frame), DEPTH_RANGES.get(ctx))
        if p is Pass.NORMAL:
            return normal_to_control(ctx.input(p, frame), params.world_to_camera)
        if p is Pass.LINEART:
            return lineart_to_control(ctx.input(p, frame))
    except ValueError as exc:  # a pass of the wrong shape
        raise PipelineError(f"The {p.value} pass of frame {frame} cannot be used: {exc}") from None
    raise PipelineError(f"No ControlNet conditioning is made from the {p.value} pass.")
