"""Cutting a shot into overlapping chunks, per-chunk seeds, blending a chunk into the frames
its predecessor already wrote, and what a chunk may use at each memory level. numpy only."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .base import Chunk
from .diffusion_common import derived_seed


@dataclass(frozen=True)
class MemoryPlan:
    """How a chunk runs at one memory level; the worker moves to the next level when a chunk
    runs out of GPU memory. Each level trades speed (and, the last, some motion coherence)
    for memory; frames a retried chunk writes may differ slightly from the first level's."""

    decode_frames: int  # frames per VAE encode/decode batch
    vae_slicing: bool  # the VAE takes one frame at a time
    vae_tiling: bool  # ... and large frames in tiles
    window_divisor: int  # FreeNoise context window = the motion module's window / this


MEMORY_PLANS = (
    MemoryPlan(decode_frames=16, vae_slicing=False, vae_tiling=False, window_divisor=1),
    MemoryPlan(decode_frames=4, vae_slicing=True, vae_tiling=False, window_divisor=1),
    MemoryPlan(decode_frames=1, vae_slicing=True, vae_tiling=True, window_divisor=2),
)


def memory_plan(level: int) -> MemoryPlan:
    return MEMORY_PLANS[min(max(level, 0), len(MEMORY_PLANS) - 1)]


def plan_chunks(frames: Sequence[int], chunk_size: int, overlap: int) -> list[Chunk]:
    """Chunks that own consecutive runs of `frames` and denoise up to `chunk_size` of them.

    The first chunk owns `chunk_size` frames; each later one owns the next
    `chunk_size - overlap` and also denoises the `overlap` frames before them, which the
    previous chunk owns (its context). The last chunk reaches back further when it owns few
    frames, so it still denoises a full window. Without overlap, chunks are independent and
    read only their own frames. Positions, not frame numbers, are cut, so sparse frame lists
    work too.
    """
    if chunk_size < 1 or not 0 <= overlap < chunk_size:
        raise ValueError(f"bad chunking: chunk_size {chunk_size}, overlap {overlap}")
    frames = tuple(frames)
    chunks: list[Chunk] = []
    start = 0
    while start < len(frames):
        size = chunk_size if start == 0 else chunk_size - overlap
        end = min(len(frames), start + size)
        context_start = max(0, end - chunk_size) if start > 0 and overlap > 0 else start
        chunks.append(Chunk(len(chunks), frames[start:end], frames[context_start:end]))
        start = end
    return chunks


def chunk_seed(seed: int, index: int) -> int:
    """A chunk's own seed: fixed by (seed, chunk index), so a resumed chunk reproduces exactly."""
    return derived_seed(f"framesmith-stylize:{seed}:{index}")


def seam_weights(count: int, overlap: int) -> np.ndarray:
    """How much of the seam correction each of a chunk's first owned frames takes.

    Linear from overlap/(overlap+1) on the first owned frame down to 0 after `overlap` frames.
    """
    if overlap <= 0:
        return np.zeros(count, np.float32)
    steps = np.arange(1, count + 1, dtype=np.float32)
    return np.clip(1.0 - steps / (overlap + 1), 0.0, 1.0).astype(np.float32)


def blend_seam(
    generated: Mapping[int, np.ndarray],
    finished: Mapping[int, np.ndarray],
    owned: Sequence[int],
    overlap: int,
) -> dict[int, np.ndarray]:
    """The owned frames of a chunk, pulled towards what the previous chunk already wrote.

    `generated` holds this chunk's frames (float RGB 0..1) for its whole context; `finished`
    holds written outputs (uint8) of context frames before the owned ones. At the last
    finished frame the two versions differ by a residual; the first owned frames take that
    residual, fading out linearly over `overlap` frames, so the shot does not jump at the
    seam and the chunk's own look takes over smoothly. Without a finished frame to anchor on
    (first chunk, or the previous chunk's frames are missing) frames pass through unchanged.
    """
    before = [f for f in generated if f < owned[0] and f in finished]
    out = {f: generated[f] for f in owned}
    if not before or overlap <= 0:
        return out
    anchor = max(before)
    reference = finished[anchor][..., :3].astype(np.float32) / 255.0
    residual = reference - generated[anchor]
    for frame, weight in zip(owned, seam_weights(len(owned), overlap), strict=True):
        if weight > 0.0:
            out[frame] = np.clip(generated[frame] + weight * residual, 0.0, 1.0)
    return out


def beauty_rgb(image: np.ndarray) -> np.ndarray:
    """A decoded beauty frame -> float32 RGB 0..1 (grey expanded, alpha composited on black)."""
    pixels = np.asarray(image, dtype=np.float32)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    channels = pixels.shape[2]
    if channels in (2, 4):
        colour, alpha = pixels[:, :, :-1], pixels[:, :, -1:]
        pixels = colour * np.clip(alpha, 0.0, 1.0)
    if pixels.shape[2] == 1:
        pixels = np.repeat(pixels, 3, axis=2)
    rgb = np.nan_to_num(pixels[:, :, :3], nan=0.0, posinf=1.0, neginf=0.0)
    return np.clip(rgb, 0.0, 1.0).astype(np.float32)
