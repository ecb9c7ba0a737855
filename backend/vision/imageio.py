"""Decoding and encoding of uploaded frames and render passes, with limits.

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

import io
import struct
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import OpenEXR

from ..pipelines.base import InputError, Pass

MAX_SIDE = 16384  # pixels, either side: far above any video diffusion resolution
MAX_EXR_HEADER = 64 * 1024  # bytes; Blender's multilayer headers are a few KiB
MAX_EXR_CHANNELS = 64
# OpenEXR decodes every channel of a file, wanted or not: bound the total it may decode.
MAX_EXR_PLANES = 16  # full-resolution float channels per upload
MAX_NORMAL_LENGTH = 10.0  # a normal is a unit vector; anything this long is corrupt data
MAX_VECTOR_PIXELS = 1e6  # motion vectors are pixel offsets; beyond this they are garbage
# Memory all decodes in flight may take together; one image may take half of it.
DEFAULT_DECODE_BUDGET = 2 * 1024**3
DECODE_WAIT_S = 60.0  # how long a decode waits for others to free the budget
_OUT_CHANNELS = 4  # decode() returns at most RGBA / XYZW
_FLOAT_COPIES = 2  # the float32 result, and one temporary of its size (value checks)
MAX_EXR_COORD = 2**30  # data window corners; beyond this the decoder's int arithmetic overflows
MIN_TILE_SIDE = 256  # a tile may be larger than a small image, up to this

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EXR_MAGIC = struct.pack("<i", 20000630)

_EXR_TILED = 0x200
_EXR_DEEP = 0x800
_EXR_MULTIPART = 0x1000
_EXR_PIXEL_TYPES = {0: "uint", 1: "half", 2: "float"}
_EXR_COMPRESSIONS = (
    "none", "rle", "zips", "zip", "piz", "pxr24", "b44", "b44a", "dwaa", "dwab",
    "htj2k256", "htj2k32", "lj2k", "zstd",
)  # fmt: skip

_PNG_CHANNEL_NAMES = {0: ("Y",), 2: ("R", "G", "B"), 3: ("R", "G", "B"), 4: ("Y", "A"),
                      6: ("R", "G", "B", "A")}  # fmt: skip
_PNG_SAMPLES = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # samples per pixel in the raw data (palette: index)
_PNG_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
          (0, 1, 1, 2))  # fmt: skip

_FLOAT_PASSES = frozenset({Pass.DEPTH, Pass.NORMAL, Pass.VECTOR})
_COLOUR_LAYOUTS = (("R", "G", "B", "A"), ("R", "G", "B"), ("Y", "A"), ("Y",))
_EXR_LAYOUTS: dict[Pass, tuple[tuple[str, ...], ...]] = {
    Pass.DEPTH: (("V",), ("Z",), ("Y",), ("R",)),
    Pass.NORMAL: (("X", "Y", "Z"), ("R", "G", "B")),
    Pass.VECTOR: (("X", "Y", "Z", "W"), ("R", "G", "B", "A")),
    Pass.BEAUTY: _COLOUR_LAYOUTS,
    Pass.KEYFRAME: _COLOUR_LAYOUTS,
    Pass.LINEART: _COLOUR_LAYOUTS,
    Pass.REFERENCE: _COLOUR_LAYOUTS,
}
# Last component of a multilayer channel prefix ("ViewLayer.Depth" -> "depth") naming a pass.
_LAYER_NAMES: dict[Pass, frozenset[str]] = {
    Pass.DEPTH: frozenset({"depth", "z"}),
    Pass.NORMAL: frozenset({"normal"}),
    Pass.VECTOR: frozenset({"vector", "speed"}),
    Pass.BEAUTY: frozenset({"combined", "image", "beauty"}),
    Pass.KEYFRAME: frozenset({"combined", "image", "keyframe"}),
    Pass.LINEART: frozenset({"freestyle", "lineart"}),
    Pass.REFERENCE: frozenset({"combined", "image", "reference"}),
}


@dataclass(frozen=True)
class ImageInfo:
    """What a file's header says. channels: PNG by colour type (palette = 3); EXR all of them."""

    format: Literal["png", "exr"]
    width: int
    height: int
    channels: int
    bit_depth: int  # bits per sample: PNG 1..16; EXR 16 (half) or 32 (float, uint), widest channel
    sample_type: Literal["uint", "half", "float"]
    channel_names: tuple[str, ...]  # EXR: as in the file; PNG: Y / YA / RGB / RGBA
    compression: str  # PNG: "deflate"; EXR: "none", "zip", "piz", "dwaa", ...
    tile_pixels: int = 0  # tiled EXR: pixels of one tile (the decoder buffers whole tiles)


@dataclass(frozen=True)
class _Ihdr:
    width: int
    height: int
    bit_depth: int
    color_type: int
    interlaced: bool


@dataclass(frozen=True)
class _ExrChannel:
    name: str
    pixel_type: int


@dataclass(frozen=True)
class _ExrHeader:
    width: int
    height: int
    channels: tuple[_ExrChannel, ...]
    compression: str
    tile: tuple[int, int] | None = None  # tiled files: tile width and height


# --- probing ---------------------------------------------------------------------------------


def probe(data: bytes, *, what: str = "the image") -> ImageInfo:
    """Read only the header of a PNG or OpenEXR file; `what` names it in error messages."""
    if data.startswith(PNG_SIGNATURE):
        return _png_info(_read_ihdr(data, what))
    if data.startswith(EXR_MAGIC):
        return _exr_info(_read_exr_header(data, what))
    raise not_an_image(data, what)


def image_start(head: bytes) -> bool | None:
    """Whether bytes can begin a PNG or OpenEXR file: True, False, or None (too few to tell).
    Lets an upload be refused on its first bytes, before the rest is received."""
    for magic in (PNG_SIGNATURE, EXR_MAGIC):
        if head.startswith(magic):
            return True
        if magic.startswith(head):
            return None
    return False


def not_an_image(data: bytes, what: str) -> InputError:
    return InputError(
        f"{what} is not a PNG or OpenEXR image ({_describe(data)}); "
        "save it as PNG or OpenEXR and upload it again"
    )


def _describe(data: bytes) -> str:
    if not data:
        return "it is empty, 0 bytes"
    if data.startswith(b"\xff\xd8\xff"):
        return "it is a JPEG"
    return "it starts with bytes " + data[:8].hex(" ")


def _damaged(what: str, kind: str, detail: str) -> InputError:
    return InputError(
        f"{what} is a damaged {kind} file ({detail}); re-export it and upload it again"
    )


def _truncated(what: str, kind: str, detail: str) -> InputError:
    return InputError(f"{what} is a truncated {kind} file ({detail}); upload the whole file")


def _chunk_name(chunk_type: bytes) -> str:
    return repr(chunk_type.decode("latin-1"))


def _name_list(names: tuple[str, ...], limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _read_ihdr(data: bytes, what: str) -> _Ihdr:
    if len(data) < 33:
        raise _truncated(what, "PNG", f"only {len(data)} bytes")
    length, chunk_type = struct.unpack_from(">I4s", data, 8)
    if chunk_type != b"IHDR" or length != 13:
        raise _damaged(what, "PNG", "it does not begin with an IHDR header")
    (crc,) = struct.unpack_from(">I", data, 29)
    if zlib.crc32(data[12:29]) != crc:
        raise _damaged(what, "PNG", "its header checksum (CRC) is wrong")
    width, height, depth, color, method, filtering, interlace = struct.unpack_from(
        ">IIBBBBB", data, 16
    )
    if not (0 < width < 2**31 and 0 < height < 2**31):
        raise _damaged(what, "PNG", f"its size {width}×{height} is invalid")
    if depth not in _PNG_DEPTHS.get(color, ()) or method or filtering or interlace > 1:
        raise _damaged(what, "PNG", f"colour type {color} with bit depth {depth} is invalid")
    return _Ihdr(width, height, depth, color, interlace == 1)


def _png_info(ihdr: _Ihdr) -> ImageInfo:
    names = _PNG_CHANNEL_NAMES[ihdr.color_type]
    return ImageInfo("png", ihdr.width, ihdr.height, len(names), ihdr.bit_depth, "uint", names,
                     "deflate")  # fmt: skip


def _read_exr_header(data: bytes, what: str) -> _ExrHeader:
    if len(data) < 8:
        raise _truncated(what, "OpenEXR", f"only {len(data)} bytes")
    (version,) = struct.unpack_from("<I", data, 4)
    if version & 0xFF != 2:
        raise InputError(
            f"{what} is an OpenEXR file of unknown version {version & 0xFF}; save it with "
            "Blender or another OpenEXR 2/3 writer"
        )
    if version & _EXR_MULTIPART:
        raise InputError(
            f"{what} is a multi-part OpenEXR file, which is not supported; write a single-part "
            "file (Blender's OpenEXR or OpenEXR MultiLayer formats are single-part)"
        )
    if version & _EXR_DEEP:
        raise InputError(f"{what} is a deep OpenEXR file, which is not supported; write a "
                         "regular (flat) OpenEXR")  # fmt: skip
    attrs = _read_exr_attributes(data, what)
    tile = _check_exr_storage(attrs, bool(version & _EXR_TILED), what)
    width, height = _exr_data_window(attrs, what)
    if tile is not None:
        _check_tile(tile, width, height, what)
    channels = _parse_chlist(_exr_attr(attrs, "channels", "chlist", what), what)
    code = _exr_attr(attrs, "compression", "compression", what)
    if len(code) != 1 or code[0] >= len(_EXR_COMPRESSIONS):
        raise InputError(f"{what} uses an unknown OpenEXR compression; save it with ZIP or PIZ")
    return _ExrHeader(width, height, channels, _EXR_COMPRESSIONS[code[0]], tile)


def _read_exr_attributes(data: bytes, what: str) -> dict[str, tuple[str, bytes]]:
    """name -> (type, value) for every header attribute, up to the header's null terminator."""
    limit = min(len(data), 8 + MAX_EXR_HEADER)
    attrs: dict[str, tuple[str, bytes]] = {}
    pos = 8
    while True:
        name, pos = _exr_cstring(data, pos, limit, what)
        if not name:
            return attrs
        type_name, pos = _exr_cstring(data, pos, limit, what)
        if pos + 4 > limit:
            raise _exr_header_overrun(data, what)
        (size,) = struct.unpack_from("<i", data, pos)
        if size < 0:
            raise _damaged(what, "OpenEXR", f"attribute {name!r} has size {size}")
        if pos + 4 + size > limit:
            raise _exr_header_overrun(data, what)
        attrs[name] = (type_name, data[pos + 4 : pos + 4 + size])
        pos += 4 + size


def _exr_cstring(data: bytes, pos: int, limit: int, what: str) -> tuple[str, int]:
    end = data.find(b"\0", pos, limit)
    if end < 0:
        raise _exr_header_overrun(data, what)
    return data[pos:end].decode("utf-8", "replace"), end + 1


def _exr_header_overrun(data: bytes, what: str) -> InputError:
    if len(data) >= 8 + MAX_EXR_HEADER:
        return InputError(
            f"{what} has an OpenEXR header larger than {MAX_EXR_HEADER // 1024} KiB, far more "
            "than a render pass needs; write the file with fewer channels and attributes"
        )
    return _truncated(what, "OpenEXR", "it ends inside its header")


def _exr_attr(attrs: dict[str, tuple[str, bytes]], name: str, type_name: str, what: str) -> bytes:
    if name not in attrs or attrs[name][0] != type_name:
        raise _damaged(what, "OpenEXR", f"its header has no {name!r}")
    return attrs[name][1]


def _check_exr_storage(
    attrs: dict[str, tuple[str, bytes]], tiled: bool, what: str
) -> tuple[int, int] | None:
    """None for a scanline file; a tiled one's (tile width, tile height)."""
    kind = attrs.get("type", ("string", b""))[1].decode("utf-8", "replace")
    if kind.startswith("deep"):
        raise InputError(f"{what} is a deep OpenEXR file, which is not supported; write a "
                         "regular (flat) OpenEXR")  # fmt: skip
    if not (tiled or kind == "tiledimage"):
        return None
    tiles = attrs.get("tiles", ("", b""))[1]
    # tiledesc: x size, y size (uint32 each), then a byte whose low nibble is the level mode.
    if len(tiles) != 9 or tiles[8] & 0x0F != 0:
        raise InputError(
            f"{what} is a mipmapped or ripmapped tiled OpenEXR, which is not supported; "
            "write a scanline OpenEXR (Blender writes scanline files)"
        )
    tile_w, tile_h = struct.unpack_from("<II", tiles)
    return tile_w, tile_h


def _check_tile(tile: tuple[int, int], width: int, height: int, what: str) -> None:
    """The decoder allocates whole tiles: a tile far larger than the image costs memory for
    pixels that do not exist (a 1 KB file can claim gigabytes of tiles)."""
    tile_w, tile_h = tile
    if not (0 < tile_w <= max(width, MIN_TILE_SIDE) and 0 < tile_h <= max(height, MIN_TILE_SIDE)):
        raise InputError(
            f"{what} is a tiled OpenEXR whose {tile_w}×{tile_h} tiles do not fit its "
            f"{width}×{height} image; write a scanline OpenEXR (Blender writes scanline files)"
        )


def _exr_data_window(attrs: dict[str, tuple[str, bytes]], what: str) -> tuple[int, int]:
    raw = _exr_attr(attrs, "dataWindow", "box2i", what)
    if len(raw) != 16:
        raise _damaged(what, "OpenEXR", "its dataWindow is malformed")
    x_min, y_min, x_max, y_max = struct.unpack("<iiii", raw)
    if x_max < x_min or y_max < y_min:
        raise _damaged(what, "OpenEXR", "its data window has no pixels")
    if max(abs(x_min), abs(y_min), abs(x_max), abs(y_max)) > MAX_EXR_COORD:
        raise _damaged(what, "OpenEXR", f"its data window lies beyond ±{MAX_EXR_COORD} pixels")
    return x_max - x_min + 1, y_max - y_min + 1


def _parse_chlist(raw: bytes, what: str) -> tuple[_ExrChannel, ...]:
    channels: list[_ExrChannel] = []
    pos = 0
    while True:
        end = raw.find(b"\0", pos)
        if end < 0 or (end > pos and end + 17 > len(raw)):
            raise _damaged(what, "OpenEXR", "its channel list is malformed")
        if end == pos:
            break
        name = raw[pos:end].decode("utf-8", "replace")
        pixel_type, x_sampling, y_sampling = struct.unpack_from("<i4xii", raw, end + 1)
        if pixel_type not in _EXR_PIXEL_TYPES:
            raise _damaged(what, "OpenEXR", f"channel {name!r} has pixel type {pixel_type}")
        if (x_sampling, y_sampling) != (1, 1):
            raise InputError(f"{what} has subsampled channel {name!r}, which is not supported; "
                             "write every channel at full resolution")  # fmt: skip
        channels.append(_ExrChannel(name, pixel_type))
        pos = end + 17
    if not channels:
        raise _damaged(what, "OpenEXR", "it has no channels")
    if len(channels) > MAX_EXR_CHANNELS:
        raise InputError(
            f"{what} has {len(channels)} channels (at most {MAX_EXR_CHANNELS} are accepted); "
            "write only the pass that is uploaded to the file"
        )
    return tuple(channels)


def _exr_info(header: _ExrHeader) -> ImageInfo:
    types = {c.pixel_type for c in header.channels}
    widest: Literal["uint", "half", "float"] = (
        "float" if 2 in types else "uint" if 0 in types else "half"
    )
    tile_pixels = header.tile[0] * header.tile[1] if header.tile else 0
    return ImageInfo(
        "exr", header.width, header.height, len(header.channels), 16 if widest == "half" else 32,
        widest, tuple(c.name for c in header.channels), header.compression, tile_pixels,
    )  # fmt: skip


# --- decoding --------------------------------------------------------------------------------


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
    what = _label(pass_)
    info = probe(data, what=what)
    if pass_ in _FLOAT_PASSES and info.format != "exr":
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
            return _decode_png(data, _read_ihdr(data, what), what)
        return _decode_exr(data, _read_exr_header(data, what), pass_, what)


def _label(pass_: Pass) -> str:
    return f"the {pass_.value} {'image' if pass_ in (Pass.KEYFRAME, Pass.REFERENCE) else 'pass'}"


label = _label  # what a refusal calls the upload of a pass ("the depth pass")


# --- the decode budget ---


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


# --- PNG ---


def _decode_png(data: bytes, ihdr: _Ihdr, what: str) -> np.ndarray:
    # libpng, depending on its version, may hand back a partly decoded image for a truncated
    # file: check the chunk structure and the amount of compressed image data ourselves first.
    _check_png_image_data(_png_idat(data, what), _png_raw_size(ihdr), what)
    try:
        pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise _damaged(what, "PNG", "OpenCV could not decode it") from exc
    if pixels is None or pixels.shape[:2] != (ihdr.height, ihdr.width):
        raise _damaged(what, "PNG", "OpenCV could not decode it")
    image = _png_to_rgb(pixels)
    image /= 65535.0 if pixels.dtype == np.uint16 else 255.0  # in place: as divided before
    return image


def _png_idat(data: bytes, what: str) -> bytes:
    """Walk every chunk up to IEND, verifying its CRC; return the joined IDAT payload."""
    view = memoryview(data)
    parts: list[memoryview] = []
    pos = len(PNG_SIGNATURE)
    while True:
        if pos + 12 > len(data):
            raise _truncated(what, "PNG", "it ends before its IEND chunk")
        length, chunk_type = struct.unpack_from(">I4s", data, pos)
        end = pos + 12 + length
        if length >= 2**31 or end > len(data):
            raise _truncated(what, "PNG", f"it ends inside a {_chunk_name(chunk_type)} chunk")
        (crc,) = struct.unpack_from(">I", data, end - 4)
        if zlib.crc32(view[pos + 4 : end - 4]) != crc:
            raise _damaged(what, "PNG", f"the checksum (CRC) of a {_chunk_name(chunk_type)} "
                           "chunk is wrong")  # fmt: skip
        if chunk_type == b"IDAT":
            parts.append(view[pos + 8 : end - 4])
        elif chunk_type == b"IEND":
            break
        pos = end
    if not parts:
        raise _damaged(what, "PNG", "it has no image data (IDAT)")
    return b"".join(parts)


def _png_raw_size(ihdr: _Ihdr) -> int:
    """Bytes of filtered scanlines the IDAT stream must inflate to."""
    bits = _PNG_SAMPLES[ihdr.color_type] * ihdr.bit_depth

    def scanlines(width: int, height: int) -> int:
        return height * (1 + (width * bits + 7) // 8) if width and height else 0

    if not ihdr.interlaced:
        return scanlines(ihdr.width, ihdr.height)
    return sum(
        scanlines(
            max(0, (ihdr.width - x0 + dx - 1) // dx), max(0, (ihdr.height - y0 + dy - 1) // dy)
        )
        for x0, y0, dx, dy in _ADAM7
    )


def _check_png_image_data(idat: bytes, expected: int, what: str) -> None:
    """Inflate the IDAT stream in bounded steps, counting bytes without keeping them."""
    inflater = zlib.decompressobj()
    pending, total = idat, 0
    try:
        while total < expected and not inflater.eof:
            out = inflater.decompress(pending, 1 << 20)
            total += len(out)
            pending = inflater.unconsumed_tail
            if not out and not pending:
                break
    except zlib.error as exc:
        raise _damaged(what, "PNG", "its compressed image data is corrupt") from exc
    if total < expected:
        raise _truncated(what, "PNG", f"its image data holds {total} of {expected} bytes")


def _png_to_rgb(pixels: np.ndarray) -> np.ndarray:
    """OpenCV's gray / BGR / BGRA (gray+alpha arrives as BGRA) -> float32 RGB or RGBA, unscaled.
    Written straight into the result: no float copy of the input is made on the way."""
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    channels = 4 if pixels.shape[2] == 4 else 3
    image = np.empty((*pixels.shape[:2], channels), np.float32)
    if pixels.shape[2] == 1:
        image[:] = pixels
    else:
        image[:, :, :3] = pixels[:, :, 2::-1]
        if channels == 4:
            image[:, :, 3] = pixels[:, :, 3]
    return image


# --- OpenEXR ---


def _decode_exr(data: bytes, header: _ExrHeader, pass_: Pass, what: str) -> np.ndarray:
    names = _select_exr_channels(tuple(c.name for c in header.channels), pass_, what)
    if pass_ not in _FLOAT_PASSES and len(names) <= 2:  # a colour pass stored as Y or Y+A
        names = (names[0],) * 3 + names[1:]
    image = _read_exr_planes(data, names, (header.height, header.width), what)
    _check_values(image, pass_, what)
    return image


def _select_exr_channels(names: tuple[str, ...], pass_: Pass, what: str) -> tuple[str, ...]:
    """Pick the channels of `pass_` from a single- or multilayer file, in the order returned."""
    groups: dict[str, set[str]] = {}
    for name in names:
        prefix, _, suffix = name.rpartition(".")
        groups.setdefault(prefix, set()).add(suffix)
    candidates: list[tuple[int, str, tuple[str, ...]]] = []
    for prefix, suffixes in groups.items():
        layout = next((lay for lay in _EXR_LAYOUTS[pass_] if suffixes.issuperset(lay)), None)
        rank = _layer_rank(prefix, pass_)
        if layout is not None and rank > 0:
            candidates.append((rank, prefix, layout))
    if not candidates:
        raise InputError(
            f"{what} has no channels usable as the {pass_.value} pass (it has "
            f"{_name_list(names)}); expected e.g. {_expected_channels(pass_)}"
        )
    best = max(rank for rank, _, _ in candidates)
    top = [(prefix, layout) for rank, prefix, layout in candidates if rank == best]
    if len(top) > 1:
        layers = ", ".join(repr(prefix) for prefix, _ in top)
        raise InputError(
            f"{what} holds several layers that could be the {pass_.value} pass ({layers}); "
            "write only that pass to the file"
        )
    prefix, layout = top[0]
    return tuple(f"{prefix}.{s}" if prefix else s for s in layout)


def _layer_rank(prefix: str, pass_: Pass) -> int:
    """2: the layer is named for this pass; 1: neutral; 0: named for a different kind of pass."""
    last = prefix.rpartition(".")[2].lower()
    if last in _LAYER_NAMES[pass_]:
        return 2
    family = _family(pass_)
    clash = any(last in names and _family(p) != family for p, names in _LAYER_NAMES.items())
    return 0 if clash else 1


def _family(pass_: Pass) -> str:
    return pass_.value if pass_ in _FLOAT_PASSES else "colour"


def _expected_channels(pass_: Pass) -> str:
    return " or ".join(",".join(layout) for layout in _EXR_LAYOUTS[pass_][:2])


def _read_exr_planes(
    data: bytes, names: tuple[str, ...], shape: tuple[int, int], what: str
) -> np.ndarray:
    """The named channels as one float32 HxWxC array, each copied straight into its place."""
    image = np.empty((*shape, len(names)), np.float32)
    try:
        with OpenEXR.File(io.BytesIO(data), separate_channels=True) as exr:
            channels = exr.channels()
            for i, name in enumerate(names):
                pixels = channels[name].pixels
                if pixels.shape != shape:
                    raise _damaged(what, "OpenEXR", "its pixels do not match its header")
                image[:, :, i] = pixels
    except InputError:
        raise
    except Exception as exc:  # the binding raises RuntimeError, ValueError, KeyError, ...
        raise InputError(
            f"{what} could not be read: the OpenEXR file is truncated or damaged "
            f"({str(exc)[:200]}); re-export it and upload the whole file"
        ) from exc
    return image


def _check_values(image: np.ndarray, pass_: Pass, what: str) -> None:
    finite = np.isfinite(image)
    if not finite.all():
        hint = (
            "Blender's background depth (1e10) overflows half floats, so save depth as Float (Full)"
            if pass_ is Pass.DEPTH
            else "check the shaders or compositor nodes that produce it and render again"
        )
        _refuse_pixels(~finite.all(axis=2), what, "NaN or infinite values", hint)
    if pass_ is Pass.NORMAL:
        too_long = np.sqrt(np.square(image).sum(axis=2)) > MAX_NORMAL_LENGTH
        _refuse_pixels(too_long, what, f"normals longer than {MAX_NORMAL_LENGTH:g}",
                       "upload Blender's Normal pass unmodified")  # fmt: skip
    if pass_ is Pass.VECTOR:
        too_fast = np.abs(image).max(axis=2) > MAX_VECTOR_PIXELS
        _refuse_pixels(too_fast, what, f"motion vectors beyond {MAX_VECTOR_PIXELS:g} pixels",
                       "upload Blender's Vector pass unmodified, with motion blur off")  # fmt: skip


def _refuse_pixels(bad: np.ndarray, what: str, problem: str, hint: str) -> None:
    count = int(np.count_nonzero(bad))
    if not count:
        return
    y, x = np.unravel_index(int(np.argmax(bad)), bad.shape)
    raise InputError(
        f"{what} has {count} pixel{'s' if count > 1 else ''} with {problem}, the first at "
        f"x={x}, y={y} (from the top left); {hint}"
    )


# --- encoding --------------------------------------------------------------------------------


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Float 0..1 -> uint8, rounded; values outside 0..1 are clipped, NaN becomes 0."""
    values = np.nan_to_num(np.asarray(image, dtype=np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    return (np.clip(values, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def encode_png(image: np.ndarray, *, compression: int = 3) -> bytes:
    """uint8 or uint16 gray (HxW, HxWx1), RGB (HxWx3) or RGBA (HxWx4) -> PNG bytes."""
    pixels = np.asarray(image)
    if pixels.dtype not in (np.uint8, np.uint16):
        raise InputError(f"encode_png needs uint8 or uint16 pixels, not {pixels.dtype}; "
                         "convert float images with to_uint8() first")  # fmt: skip
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    if pixels.ndim == 3 and pixels.shape[2] in (3, 4):
        pixels = pixels[:, :, [2, 1, 0, 3][: pixels.shape[2]]]
    elif pixels.ndim != 2:
        raise InputError(f"encode_png needs HxW, HxWx3 or HxWx4 pixels, not {pixels.shape}")
    if pixels.size == 0:
        raise InputError("encode_png got an empty image")
    ok, buffer = cv2.imencode(
        ".png", np.ascontiguousarray(pixels), [cv2.IMWRITE_PNG_COMPRESSION, compression]
    )
    if not ok:
        raise InputError(f"the image ({pixels.shape}, {pixels.dtype}) could not be encoded as PNG")
    return buffer.tobytes()
