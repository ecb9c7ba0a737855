"""Decoding uploaded frames and render passes, with limits: the one entry point, decode().

Every upload is probed first: its magic bytes, then only its header, read by hand (a PNG's first
33 bytes, an OpenEXR header of at most 64 KiB), so an image that is too large, of the wrong
size, or not a PNG/OpenEXR at all is refused before any decoder allocates pixels. What a decode
will cost in memory is computed from the header (the float conversion included) and reserved
from a budget shared by all decodes at once, so small files cannot add up to gigabytes. Every
failure is an InputError whose message says what is wrong and what to do about it.

What decode() returns, float32 HxWxC, depends on the pass it is told the data is:
  beauty, keyframe, lineart  RGB or RGBA (alpha kept when the file has it). PNG scaled to 0..1;
                             EXR values as stored (scene-linear, may exceed 1).
  depth                      HxWx1, raw distances; Blender's background (1e10) is kept as is.
  normal                     HxWx3, raw X, Y, Z.
  vector                     HxWx4, raw X, Y, Z, W (Blender's order; see passes.vector_to_flow).
Depth, normal and vector must be OpenEXR: an 8/16-bit PNG cannot hold their values.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from ..jobs import InputError, Pass
from .exr import FLOAT_PASSES, decode_exr
from .image_headers import ImageInfo, probe, read_exr_header, read_ihdr
from .png import decode_png

MAX_SIDE = 16384  # pixels, either side: far above any video diffusion resolution
# OpenEXR decodes every channel of a file, wanted or not: bound the total it may decode.
MAX_EXR_PLANES = 16  # full-resolution float channels per upload
# Memory all decodes in flight may take together; one image may take half of it.
DEFAULT_DECODE_BUDGET = 2 * 1024**3
DECODE_WAIT_S = 60.0  # how long a decode waits for others to free the budget
_OUT_CHANNELS = 4  # decode() returns at most RGBA / XYZW
_FLOAT_COPIES = 2  # the float32 result, and one temporary of its size (value checks)


def decode(
    data: bytes,
    *,
    max_pixels: int,
    expect_size: tuple[int, int] | None,
    pass_: Pass,
    max_side: int = MAX_SIDE,
) -> np.ndarray:
    """Decode one uploaded PNG/OpenEXR as float32 HxWxC in the layout `pass_` needs.

    The header is checked first (format, max_side, max_pixels, expect_size as (width, height)),
    so nothing is decoded or allocated for an image that would be refused anyway.
    """
    what = label(pass_)
    info = probe(data, what=what)
    if pass_ in FLOAT_PASSES and info.format != "exr":
        raise InputError(
            f"{what} must be an OpenEXR file: a PNG cannot hold {pass_.value} values; in "
            "Blender's File Output node choose OpenEXR with Float (Full) colour depth"
        )
    _check_limits(info, max_pixels=max_pixels, max_side=max_side, what=what)
    if expect_size is not None and (info.width, info.height) != tuple(expect_size):
        raise InputError(
            f"{what} is {info.width}×{info.height} pixels but the job is "
            f"{expect_size[0]}×{expect_size[1]}; render every pass at the job's resolution"
        )
    budget = _budget
    with budget.reserve(decode_cost(info), what):
        if info.format == "png":
            return decode_png(data, read_ihdr(data, what), what)
        return decode_exr(data, read_exr_header(data, what), pass_, what)


def label(pass_: Pass) -> str:
    """What a refusal calls the upload of a pass: "the depth pass", "the keyframe image"."""
    return f"the {pass_.value} {'image' if pass_ in (Pass.KEYFRAME, Pass.REFERENCE) else 'pass'}"


def decode_cost(info: ImageInfo) -> int:
    """Bytes a decode may hold at its peak, from the header alone: every channel of the file as
    the decoder returns it (OpenCV may widen a PNG to 4 channels; OpenEXR decodes all of them),
    the float32 result and one temporary of its size, and for tiled files one tile of every
    channel. An upper bound, so that a header cannot understate what it will cost."""
    pixels = info.width * info.height
    if info.format == "png":
        source = 4 * (2 if info.bit_depth == 16 else 1)
    else:
        source = info.channels * info.bit_depth // 8
    result = _OUT_CHANNELS * 4 * _FLOAT_COPIES
    return pixels * (source + result) + info.tile_pixels * info.channels * 4


class DecodeBusy(InputError):
    """Other decodes hold the budget: the upload is fine, only not now (a 429, not a 400)."""


class DecodeBudget:
    """Memory shared by the decodes in flight: each reserves its decode_cost() first and waits
    (up to DECODE_WAIT_S) while others hold too much; one image may take half of the total."""

    def __init__(self, total: int) -> None:
        self.total = total
        self._used = 0
        self._changed = threading.Condition()

    @property
    def per_image(self) -> int:
        return self.total // 2

    @contextmanager
    def reserve(self, cost: int, what: str, wait_s: float = DECODE_WAIT_S) -> Iterator[None]:
        if cost > self.per_image:
            raise InputError(
                f"{what} would take {cost / 2**20:.0f} MiB of memory to decode, more than the "
                f"{self.per_image / 2**20:.0f} MiB one image may use on this backend; upload it "
                "at a lower resolution, with fewer channels or at 8 bits per channel"
            )
        with self._changed:
            if not self._changed.wait_for(lambda: self._used + cost <= self.total, wait_s):
                raise DecodeBusy(
                    f"the backend is busy decoding other large images and {what} must wait for "
                    "memory; upload it again in a moment"
                )
            self._used += cost
        try:
            yield
        finally:
            with self._changed:
                self._used -= cost
                self._changed.notify_all()


_budget = DecodeBudget(DEFAULT_DECODE_BUDGET)


def set_decode_budget(total_bytes: int) -> None:
    """The memory all decodes in flight may take together (`serve --decode-budget-mb`)."""
    global _budget
    _budget = DecodeBudget(total_bytes)


def _check_limits(info: ImageInfo, *, max_pixels: int, max_side: int, what: str) -> None:
    size = f"{info.width}×{info.height}"
    if info.width > max_side or info.height > max_side:
        raise InputError(
            f"{what} is {size} pixels; the largest side accepted is {max_side} pixels, so render "
            "it at a lower resolution"
        )
    pixels = info.width * info.height
    if pixels > max_pixels:
        raise InputError(
            f"{what} is {size} pixels ({pixels / 1e6:.1f} megapixels); at most "
            f"{max_pixels / 1e6:.1f} megapixels are accepted, so render it at a lower resolution"
        )
    if info.format == "exr" and pixels * info.channels > max_pixels * MAX_EXR_PLANES:
        raise InputError(
            f"{what} holds {info.channels} channels at {size}, more than this server decodes "
            "at once; write only the uploaded pass to the file"
        )
