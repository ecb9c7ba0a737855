"""Flow-guided latent fusion and flow-warped initial noise, from Blender's exact motion.

Both follow the render's Vector pass, at the latent resolution (the image's / 8):

- Initial noise: frame t's noise is frame t-1's noise moved along the motion, so a surface
  keeps its noise as it moves and the denoiser starts every frame from the same "grain" on it.
  Noise is warped at image resolution and summed over each 8×8 block (÷8), which keeps every
  latent cell an exact unit Gaussian: the fine noise is i.i.d. N(0, 1) per pixel, each warped
  pixel takes one source pixel by nearest position (no interpolation, which would shrink the
  variance), a source taken twice keeps only its first taker, and pixels without a trusted
  source (disoccluded, out of frame, duplicates) get fresh noise. Motion is rounded to whole
  image pixels per frame, i.e. to 1/8 of a latent cell.
- Latent fusion: after each early denoising step, each frame's latents are pulled towards the
  previous frame's latents warped onto it (bilinear, in latent cells), weighted by how much of
  the cell's pixels the previous frame saw (occlusion from depth and forward/backward
  disagreement, vision/consistency.py) and by a weight that starts at `strength` and falls to
  0 at `end` of the steps, so the last steps refine each frame on its own. Frames are fused in
  order, so the fused frame t-1 feeds frame t; frames held on already written pictures (the
  chunk's seam) are not changed, and the first frame after them continues from them.

The numpy half (motion, noise) has no torch; `LatentFusion` is the torch half.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..vision.consistency import FrameMotion, visible_in_previous

if TYPE_CHECKING:
    import torch

LATENT_SCALE = 8  # the VAE's downsampling
# A cell whose pixels move more apart than this (in latent cells) straddles a motion boundary:
# no single warp is right for it, so it is not fused.
MAX_CELL_SPREAD = 0.5


@dataclass(frozen=True)
class FusionSchedule:
    strength: float  # the first step's weight, 0..1
    end: float  # fraction of the steps after which fusion is off

    def weight(self, step: int, steps: int) -> float:
        """Blend weight after denoising step `step` (0-based) of `steps`."""
        span = self.end * steps
        if steps <= 0 or step + 1 > span:
            return 0.0
        return float(self.strength * (1.0 - step / span))


@dataclass(frozen=True)
class ChunkMotion:
    """Per frame of a chunk: how its previous frame maps onto it.

    Frame 0 (and any frame without vectors for itself and its predecessor) has no trusted
    pixel: it gets fresh noise and is never fused.
    """

    backward: np.ndarray  # (F, H, W, 2) image pixels, OpenCV convention (passes.vector_to_flow)
    visible: np.ndarray  # (F, H, W) bool: the previous frame saw this pixel's surface

    @classmethod
    def from_frames(cls, frames: Sequence[FrameMotion | None]) -> ChunkMotion:
        if not frames or all(f is None for f in frames):
            raise ValueError("no frame of the chunk has motion vectors")
        shape = next(f for f in frames if f is not None).backward.shape
        backward = np.zeros((len(frames), *shape), np.float32)
        visible = np.zeros((len(frames), *shape[:2]), bool)
        for i in range(1, len(frames)):
            now, before = frames[i], frames[i - 1]
            if now is None or before is None:
                continue
            backward[i] = now.backward
            visible[i] = visible_in_previous(now, before)
        return cls(backward, visible)

    @property
    def frames(self) -> int:
        return int(self.backward.shape[0])

    def latent(self) -> tuple[np.ndarray, np.ndarray]:
        """(flow, trust) at the latent resolution: flow (F, h, w, 2) in latent cells, trust
        (F, h, w) in 0..1, the share of each cell's pixels the previous frame saw."""
        f, height, width = self.visible.shape
        s = LATENT_SCALE
        if height % s or width % s:
            raise ValueError(f"{width}×{height} is not a multiple of {s}")
        blocks = self.backward.reshape(f, height // s, s, width // s, s, 2)
        flow = blocks.mean(axis=(2, 4))
        spread = np.abs(blocks - flow[:, :, None, :, None]).max(axis=-1) / s
        usable = self.visible.reshape(f, height // s, s, width // s, s) & (
            spread <= MAX_CELL_SPREAD
        )
        trust = usable.mean(axis=(2, 4), dtype=np.float32)
        return (flow / s).astype(np.float32), trust


def warped_noise(motion: ChunkMotion, channels: int, seed: int) -> np.ndarray:
    """(F, channels, h, w) float32 initial noise, each cell N(0, 1), following the motion.

    Deterministic for a seed on every machine (numpy's PCG64, on the CPU).
    """
    rng = np.random.default_rng(seed)
    f, height, width = motion.visible.shape
    s = LATENT_SCALE
    ys, xs = np.mgrid[0:height, 0:width]
    fine = rng.standard_normal((channels, height * width), dtype=np.float32)
    out = np.empty((f, channels, height // s, width // s), np.float32)
    out[0] = _cells(fine, height, width)
    for i in range(1, f):
        sx = np.rint(xs + motion.backward[i, ..., 0]).astype(np.int64)
        sy = np.rint(ys + motion.backward[i, ..., 1]).astype(np.int64)
        takes = motion.visible[i] & (sx >= 0) & (sx < width) & (sy >= 0) & (sy < height)
        takers = np.flatnonzero(takes)
        source = (sy * width + sx).ravel()[takers]
        _, first = np.unique(source, return_index=True)  # a source stays with one taker
        keep = takers[first]
        fresh = rng.standard_normal((channels, height * width), dtype=np.float32)
        fresh[:, keep] = fine[:, source[first]]
        fine = fresh
        out[i] = _cells(fine, height, width)
    return out


def _cells(fine: np.ndarray, height: int, width: int) -> np.ndarray:
    """Sum of each 8×8 block ÷ 8: i.i.d. N(0, 1) pixels give N(0, 1) cells."""
    s = LATENT_SCALE
    blocks = fine.reshape(fine.shape[0], height // s, s, width // s, s)
    return blocks.sum(axis=(2, 4), dtype=np.float32) / s


# ---- torch ------------------------------------------------------------------------------------


def warp_latents(latents: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward-warp (N, C, h, w) latents by (N, h, w, 2) flow in cells: out[y, x] samples
    latents at (x + flow_x, y + flow_y), bilinear, clamped to the border. Whole-cell flow
    moves values exactly."""
    import torch

    n, c, h, w = latents.shape
    ys = torch.arange(h, device=latents.device, dtype=torch.float32)[:, None]
    xs = torch.arange(w, device=latents.device, dtype=torch.float32)[None, :]
    x = (xs + flow[..., 0].float()).clamp(0, w - 1)
    y = (ys + flow[..., 1].float()).clamp(0, h - 1)
    x0, y0 = x.floor(), y.floor()
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    x0i, y0i = x0.long(), y0.long()
    x1i, y1i = (x0i + 1).clamp(max=w - 1), (y0i + 1).clamp(max=h - 1)
    flat = latents.reshape(n, c, h * w)

    def at(yi: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
        index = (yi * w + xi).reshape(n, 1, h * w).expand(n, c, h * w)
        return flat.gather(2, index).reshape(n, c, h, w).float()

    top = at(y0i, x0i) * (1 - fx) + at(y0i, x1i) * fx
    bottom = at(y1i, x0i) * (1 - fx) + at(y1i, x1i) * fx
    return (top * (1 - fy) + bottom * fy).to(latents.dtype)


class LatentFusion:
    """The per-step fusion of a chunk's video latents (1, C, F, h, w)."""

    def __init__(
        self,
        motion: ChunkMotion,
        schedule: FusionSchedule,
        held: Collection[int] = (),
    ) -> None:
        self.schedule = schedule
        self.held = frozenset(held)
        flow, trust = motion.latent()
        self._flow = flow
        self._trust = trust
        self._on: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def _tensors(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        key = str(like.device)
        if key not in self._on:
            self._on[key] = (
                torch.from_numpy(self._flow).to(like.device),
                torch.from_numpy(self._trust).to(like.device),
            )
        return self._on[key]

    def __call__(self, latents: torch.Tensor, step: int, steps: int) -> torch.Tensor:
        weight = self.schedule.weight(step, steps)
        if weight <= 0.0:
            return latents
        flow, trust = self._tensors(latents)
        fused = latents.clone()
        for i in range(1, fused.shape[2]):
            if i in self.held or not bool(trust[i].any()):
                continue
            warped = warp_latents(
                fused[:, :, i - 1], flow[i][None].expand(fused.shape[0], -1, -1, -1)
            )
            alpha = (weight * trust[i]).to(fused.dtype)[None, None]
            fused[:, :, i] = fused[:, :, i] + alpha * (warped - fused[:, :, i])
        return fused
