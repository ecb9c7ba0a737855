"""PNG files: decoding with the chunk structure and the amount of image data checked first (so
a truncated file is refused, never half decoded), and encoding output frames."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np

from ..jobs import InputError
from .image_headers import PNG_SIGNATURE, Ihdr, damaged, truncated

_PNG_SAMPLES = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # samples per pixel in the raw data (palette: index)
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
          (0, 1, 1, 2))  # fmt: skip


def decode_png(data: bytes, ihdr: Ihdr, what: str) -> np.ndarray:
    # libpng, depending on its version, may hand back a partly decoded image for a truncated
    # file: check the chunk structure and the amount of compressed image data ourselves first.
    _check_png_image_data(_png_idat(data, what), _png_raw_size(ihdr), what)
    try:
        pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise damaged(what, "PNG", "OpenCV could not decode it") from exc
    if pixels is None or pixels.shape[:2] != (ihdr.height, ihdr.width):
        raise damaged(what, "PNG", "OpenCV could not decode it")
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
            raise truncated(what, "PNG", "it ends before its IEND chunk")
        length, chunk_type = struct.unpack_from(">I4s", data, pos)
        end = pos + 12 + length
        if length >= 2**31 or end > len(data):
            raise truncated(what, "PNG", f"it ends inside a {_chunk_name(chunk_type)} chunk")
        (crc,) = struct.unpack_from(">I", data, end - 4)
        if zlib.crc32(view[pos + 4 : end - 4]) != crc:
            raise damaged(what, "PNG", f"the checksum (CRC) of a {_chunk_name(chunk_type)} "
                           "chunk is wrong")  # fmt: skip
        if chunk_type == b"IDAT":
            parts.append(view[pos + 8 : end - 4])
        elif chunk_type == b"IEND":
            break
        pos = end
    if not parts:
        raise damaged(what, "PNG", "it has no image data (IDAT)")
    return b"".join(parts)


def _png_raw_size(ihdr: Ihdr) -> int:
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
        raise damaged(what, "PNG", "its compressed image data is corrupt") from exc
    if total < expected:
        raise truncated(what, "PNG", f"its image data holds {total} of {expected} bytes")


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


def _chunk_name(chunk_type: bytes) -> str:
    return repr(chunk_type.decode("latin-1"))


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
