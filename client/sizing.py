"""The size a take is rendered and sent at: the engine's working size, not the render's.

SD1.5-family engines were trained at 512 px: a 1080p shot painted at 1080p is slower, worse and
costs about 9 MB a frame on the wire. Stylize frames are rendered at the engine's working size
(the backend says it per engine, the user may override it), keeping the render's aspect, and the
result strips are scaled to fill the frame.
"""

from __future__ import annotations

DEFAULT_SHORT_SIDE = 512  # SD1.5 / AnimateDiff, when the backend does not say
WAN_SHORT_SIDE = 480  # Wan2.1-VACE 1.3B (trained at 832×480), when the backend does not say
MULTIPLE = 8  # the VAE's downscale factor: both sides must divide by it


class SizeError(ValueError):
    """A working size that cannot be used; the message says what to change."""


def working_size(
    render: tuple[int, int], short_side: int, multiple: int = MULTIPLE
) -> tuple[int, int]:
    """`render` (width, height) scaled so its short side is `short_side`, both sides rounded to a
    multiple of `multiple` (aspect kept as closely as that allows)."""
    width, height = render
    if width <= 0 or height <= 0:
        raise SizeError(f"the render size {width}x{height} is empty")
    if short_side < multiple:
        raise SizeError(f"a working size of {short_side} px is below {multiple} px")
    scale = short_side / min(width, height)
    return _round(width * scale, multiple), _round(height * scale, multiple)


def _round(value: float, multiple: int) -> int:
    return max(multiple, round(value / multiple) * multiple)
