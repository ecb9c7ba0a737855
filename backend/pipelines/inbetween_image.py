"""The in-between methods made from the keys' pictures alone, no models: "flow" (estimated
motion, inbetween_flow), "crossfade", and "render" (the renderer's motion, inbetween_guided).
Each in-between is made on its own from the two keys of its interval."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..jobs import InputError, JobSpec, Pass, PipelineError
from ..vision.flow import MIN_FLOW_SIZE
from ..vision.pixels import to_uint8
from .base import Chunk, RunContext
from .inbetween_flow import FlowInterpolator, Neighbour
from .inbetween_guided import GuidedInterpolator
from .inbetween_keys import crossfade, output_uint8, read_keyframe, source_frame, with_alpha
from .inbetween_params import InbetweenParams

STAGE = "inbetween"


class _ChunkRun:
    """One chunk's state: its two keys, decoded once, and the interpolator between them."""

    def __init__(self, ctx: RunContext, k0: int, k1: int, params: InbetweenParams) -> None:
        self.ctx = ctx
        self.k0, self.k1 = k0, k1
        self.params = params
        self._keys: dict[int, np.ndarray] = {}
        self._interp: FlowInterpolator | None = None
        self._guided: GuidedInterpolator | None = None
        self._pair: tuple[np.ndarray, np.ndarray] | None = None
        # The last in-between made: on twos the next frame shows it again. Only the last, so a
        # long interval never holds its frames.
        self._last: tuple[int, np.ndarray] | None = None

    def close(self) -> None:
        """Remove what the chunk left on disk (render-assisted tracks)."""
        if self._guided is not None:
            self._guided.close()

    def key(self, frame: int) -> np.ndarray:
        if frame not in self._keys:
            self._keys[frame] = read_keyframe(self.ctx, frame)
        return self._keys[frame]

    def pair(self) -> tuple[np.ndarray, np.ndarray]:
        """Both keys in one layout: RGBA if either has alpha."""
        if self._pair is None:
            a, b = self.key(self.k0), self.key(self.k1)
            if a.shape[2] != b.shape[2]:
                a, b = with_alpha(a), with_alpha(b)
            self._pair = (a, b)
        return self._pair

    def frame(self, t: int) -> np.ndarray:
        """uint8 output for frame t (t inside the chunk's interval or beyond its end keys)."""
        if t <= self.k0:
            return to_uint8(self.key(self.k0))
        if t >= self.k1:
            return to_uint8(self.key(self.k1))
        src = source_frame(t, self.k0, self.params.on_twos)
        if src == self.k0:
            return to_uint8(self.key(self.k0))
        if self._last is None or self._last[0] != src:
            self._last = (src, output_uint8(self._between(src)))
        return self._last[1]

    def _between(self, t: int) -> np.ndarray:
        s = (t - self.k0) / (self.k1 - self.k0)
        key0, key1 = self.pair()
        if self.params.method == "crossfade":
            return crossfade(key0, key1, s)
        if self.params.method == "render":
            return self._render_assisted(key0, key1, t)
        if self._interp is None:
            before, after = self._neighbours(key0.shape[2] == 4)
            self._interp = FlowInterpolator(key0, key1, self.params.flow_preset, before, after)
        return self._interp.at(s)

    def _neighbours(self, alpha: bool) -> tuple[Neighbour | None, Neighbour | None]:
        """The keys just before k0 and just after k1, where the job has them and they differ
        from the end they neighbour (a hold says nothing about the path)."""
        keys = tuple(self.ctx.job.keyframes)
        i = keys.index(self.k0)
        found: list[Neighbour | None] = []
        for j, end in ((i - 1, self.k0), (i + 2, self.k1)):
            if not 0 <= j < len(keys):
                found.append(None)
                continue
            image = self.key(keys[j])
            image = with_alpha(image) if alpha else image[..., :3]
            if image.shape != self.pair()[0].shape or np.array_equal(image, self.key(end)):
                found.append(None)
                continue
            found.append(Neighbour(image, abs(keys[j] - end) / (self.k1 - self.k0)))
        return found[0], found[1]

    def _render_assisted(self, key0: np.ndarray, key1: np.ndarray, t: int) -> np.ndarray:
        if self._guided is None:
            between = range(self.k0 + 1, self.k1)
            targets = {source_frame(f, self.k0, self.params.on_twos) for f in between}
            scratch = getattr(self.ctx, "scratch_dir", None)  # a RunContext may lack one
            self._guided = GuidedInterpolator(
                key0, key1, self.k0, self.k1, targets, self._guides, scratch() if scratch else None
            )
        return self._guided.at(t)

    def _guides(self, frame: int) -> tuple[np.ndarray, np.ndarray]:
        return self.ctx.input(Pass.VECTOR, frame), self.ctx.input(Pass.DEPTH, frame)


class ImageMethod:
    """flow, crossfade and render (inbetween_methods.METHODS)."""

    def check_job(self, job: JobSpec, params: InbetweenParams) -> None:
        if params.method == "flow" and min(job.width, job.height) < MIN_FLOW_SIZE:
            raise InputError(
                f"Flow in-betweening needs frames of at least {MIN_FLOW_SIZE}×{MIN_FLOW_SIZE} "
                f"pixels (got {job.width}×{job.height}); use method 'crossfade' instead."
            )

    def missing_models(self, job: JobSpec, params: InbetweenParams, models: Any) -> list[str]:
        return []

    def pin_models(self, job: JobSpec, params: InbetweenParams, models: Any) -> dict[str, Any]:
        return dict(job.params)

    def run_chunk(self, ctx: RunContext, chunk: Chunk, params: InbetweenParams) -> None:
        if len(chunk.context) != 2:
            raise PipelineError(f"An in-between chunk reads two keys, not {chunk.context}.")
        run = _ChunkRun(ctx, chunk.context[0], chunk.context[1], params)
        total = len(chunk.frames)
        try:
            for done, t in enumerate(chunk.frames, start=1):
                ctx.check_cancel()
                ctx.write_output(t, run.frame(t))
                ctx.progress(STAGE, done, total)
        finally:
            run.close()
