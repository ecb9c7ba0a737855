"""What a PNG or OpenEXR file is, from its header alone: the magic bytes, then a PNG's first 33
bytes or an OpenEXR header of at most 64 KiB, read by hand. Nothing here decodes pixels, so an
upload that is too large, of the wrong size, or not an image at all is refused before any
decoder allocates memory for it.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Literal

from ..jobs import InputError

MAX_EXR_HEADER = 64 * 1024  # bytes; Blender's multilayer headers are a few KiB
MAX_EXR_CHANNELS = 64
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
_PNG_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}


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
class Ihdr:
    width: int
    height: int
    bit_depth: int
    color_type: int
    interlaced: bool


@dataclass(frozen=True)
class ExrChannel:
    name: str
    pixel_type: int


@dataclass(frozen=True)
class ExrHeader:
    width: int
    height: int
    channels: tuple[ExrChannel, ...]
    compression: str
    tile: tuple[int, int] | None = None  # tiled files: tile width and height


def probe(data: bytes, *, what: str = "the image") -> ImageInfo:
    """Read only the header of a PNG or OpenEXR file; `what` names it in error messages."""
    if data.startswith(PNG_SIGNATURE):
        return _png_info(read_ihdr(data, what))
    if data.startswith(EXR_MAGIC):
        return _exr_info(read_exr_header(data, what))
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


def damaged(what: str, kind: str, detail: str) -> InputError:
    return InputError(
        f"{what} is a damaged {kind} file ({detail}); re-export it and upload it again"
    )


def truncated(what: str, kind: str, detail: str) -> InputError:
    return InputError(f"{what} is a truncated {kind} file ({detail}); upload the whole file")


def read_ihdr(data: bytes, what: str) -> Ihdr:
    if len(data) < 33:
        raise truncated(what, "PNG", f"only {len(data)} bytes")
    length, chunk_type = struct.unpack_from(">I4s", data, 8)
    if chunk_type != b"IHDR" or length != 13:
        raise damaged(what, "PNG", "it does not begin with an IHDR header")
    (crc,) = struct.unpack_from(">I", data, 29)
    if zlib.crc32(data[12:29]) != crc:
        raise damaged(what, "PNG", "its header checksum (CRC) is wrong")
    width, height, depth, color, method, filtering, interlace = struct.unpack_from(
        ">IIBBBBB", data, 16
    )
    if not (0 < width < 2**31 and 0 < height < 2**31):
        raise damaged(what, "PNG", f"its size {width}×{height} is invalid")
    if depth not in _PNG_DEPTHS.get(color, ()) or method or filtering or interlace > 1:
        raise damaged(what, "PNG", f"colour type {color} with bit depth {depth} is invalid")
    return Ihdr(width, height, depth, color, interlace == 1)


def _png_info(ihdr: Ihdr) -> ImageInfo:
    names = _PNG_CHANNEL_NAMES[ihdr.color_type]
    return ImageInfo("png", ihdr.width, ihdr.height, len(names), ihdr.bit_depth, "uint", names,
                     "deflate")  # fmt: skip


def read_exr_header(data: bytes, what: str) -> ExrHeader:
    if len(data) < 8:
        raise truncated(what, "OpenEXR", f"only {len(data)} bytes")
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
    return ExrHeader(width, height, channels, _EXR_COMPRESSIONS[code[0]], tile)


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
            raise damaged(what, "OpenEXR", f"attribute {name!r} has size {size}")
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
    return truncated(what, "OpenEXR", "it ends inside its header")


def _exr_attr(attrs: dict[str, tuple[str, bytes]], name: str, type_name: str, what: str) -> bytes:
    if name not in attrs or attrs[name][0] != type_name:
        raise damaged(what, "OpenEXR", f"its header has no {name!r}")
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
        raise damaged(what, "OpenEXR", "its dataWindow is malformed")
    x_min, y_min, x_max, y_max = struct.unpack("<iiii", raw)
    if x_max < x_min or y_max < y_min:
        raise damaged(what, "OpenEXR", "its data window has no pixels")
    if max(abs(x_min), abs(y_min), abs(x_max), abs(y_max)) > MAX_EXR_COORD:
        raise damaged(what, "OpenEXR", f"its data window lies beyond ±{MAX_EXR_COORD} pixels")
    return x_max - x_min + 1, y_max - y_min + 1


def _parse_chlist(raw: bytes, what: str) -> tuple[ExrChannel, ...]:
    channels: list[ExrChannel] = []
    pos = 0
    while True:
        end = raw.find(b"\0", pos)
        if end < 0 or (end > pos and end + 17 > len(raw)):
            raise damaged(what, "OpenEXR", "its channel list is malformed")
        if end == pos:
            break
        name = raw[pos:end].decode("utf-8", "replace")
        pixel_type, x_sampling, y_sampling = struct.unpack_from("<i4xii", raw, end + 1)
        if pixel_type not in _EXR_PIXEL_TYPES:
            raise damaged(what, "OpenEXR", f"channel {name!r} has pixel type {pixel_type}")
        if (x_sampling, y_sampling) != (1, 1):
            raise InputError(f"{what} has subsampled channel {name!r}, which is not supported; "
                             "write every channel at full resolution")  # fmt: skip
        channels.append(ExrChannel(name, pixel_type))
        pos = end + 17
    if not channels:
        raise damaged(what, "OpenEXR", "it has no channels")
    if len(channels) > MAX_EXR_CHANNELS:
        raise InputError(
            f"{what} has {len(channels)} channels (at most {MAX_EXR_CHANNELS} are accepted); "
            "write only the pass that is uploaded to the file"
        )
    return tuple(channels)


def _exr_info(header: ExrHeader) -> ImageInfo:
    types = {c.pixel_type for c in header.channels}
    widest: Literal["uint", "half", "float"] = (
        "float" if 2 in types else "uint" if 0 in types else "half"
    )
    tile_pixels = header.tile[0] * header.tile[1] if header.tile else 0
    return ImageInfo(
        "exr", header.width, header.height, len(header.channels), 16 if widest == "half" else 32,
        widest, tuple(c.name for c in header.channels), header.compression, tile_pixels,
    )  # fmt: skip
