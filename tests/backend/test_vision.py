"""backend.vision: probing, decoding with limits, encoding, and render-pass conversion.

Every file here is a real one: PNGs from OpenCV (or assembled chunk by chunk where OpenCV cannot
write the variant), EXRs from the OpenEXR package.
"""

from __future__ import annotations

import io
import struct
import time
import tracemalloc
import zlib

import cv2
import numpy as np
import OpenEXR
import pytest

from backend.jobs import InputError, Pass
from backend.vision import (
    DepthRange,
    decode,
    depth_range,
    depth_to_control,
    encode_png,
    lineart_to_control,
    normal_to_control,
    probe,
    to_uint8,
    vector_to_flow,
)
from backend.vision.image_headers import MAX_EXR_HEADER

MAX_PIXELS = 4096 * 4096
RNG = np.random.default_rng(1234)


# --- file builders ---------------------------------------------------------------------------


def cv2_png(pixels: np.ndarray) -> bytes:
    """PNG of RGB(A) or gray pixels (uint8/uint16), written by OpenCV."""
    if pixels.ndim == 3:
        order = [2, 1, 0, 3][: pixels.shape[2]]
        pixels = np.ascontiguousarray(pixels[:, :, order])
    ok, buffer = cv2.imencode(".png", pixels)
    assert ok
    return buffer.tobytes()


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def raw_png(width: int, height: int, depth: int, color: int, raw: bytes, *extra: bytes,
            interlace: int = 0) -> bytes:  # fmt: skip
    """A PNG assembled by hand from already filtered scanlines."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, interlace)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + b"".join(extra)
        + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )  # fmt: skip


def scanlines(pixels: np.ndarray) -> bytes:
    """Filter type 0 (none) before every row of big-endian samples."""
    rows = pixels.reshape(pixels.shape[0], -1)
    return b"".join(b"\x00" + row.tobytes() for row in rows)


def chunks_of(data: bytes) -> list[tuple[bytes, int, int]]:
    """(type, start, end) of every chunk of a PNG."""
    out, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        out.append((data[pos + 4 : pos + 8], pos, pos + 12 + length))
        pos += 12 + length
    return out


def exr(channels: dict[str, np.ndarray], compression=OpenEXR.ZIP_COMPRESSION, **header) -> bytes:
    header = {"compression": compression, "type": OpenEXR.scanlineimage, **header}
    buffer = io.BytesIO()
    OpenEXR.File(header, dict(channels)).write(buffer)  # File() swaps the arrays for Channels
    return buffer.getvalue()


def forged_exr_header(width: int, height: int) -> bytes:
    """An EXR header (and nothing after it) claiming a width×height float "V" channel."""

    def attribute(name: str, kind: str, value: bytes) -> bytes:
        return name.encode() + b"\0" + kind.encode() + b"\0" + struct.pack("<i", len(value)) + value

    window = struct.pack("<iiii", 0, 0, width - 1, height - 1)
    chlist = b"V\0" + struct.pack("<iB3xii", 2, 0, 1, 1) + b"\0"
    return (
        struct.pack("<iI", 20000630, 2)
        + attribute("channels", "chlist", chlist)
        + attribute("compression", "compression", b"\x03")
        + attribute("dataWindow", "box2i", window)
        + attribute("displayWindow", "box2i", window)
        + attribute("lineOrder", "lineOrder", b"\x00")
        + b"\0"
    )


def decode_as(data: bytes, pass_: Pass, expect_size: tuple[int, int] | None = None) -> np.ndarray:
    return decode(data, max_pixels=MAX_PIXELS, expect_size=expect_size, pass_=pass_)


def refused(data: bytes, pass_: Pass, *, expect_size: tuple[int, int] | None = None,
            max_pixels: int = MAX_PIXELS) -> str:  # fmt: skip
    with pytest.raises(InputError) as info:
        decode(data, max_pixels=max_pixels, expect_size=expect_size, pass_=pass_)
    return str(info.value)


# --- PNG decoding ----------------------------------------------------------------------------


def test_png_8bit_rgb_is_rgb_order_scaled_to_unit_range() -> None:
    pixels = RNG.integers(0, 256, (12, 17, 3), dtype=np.uint8)
    pixels[0, 0] = (255, 0, 0)
    image = decode_as(cv2_png(pixels), Pass.BEAUTY, expect_size=(17, 12))
    assert image.dtype == np.float32 and image.shape == (12, 17, 3)
    np.testing.assert_array_equal(image[0, 0], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(image, pixels / 255.0, atol=1e-7)


def test_png_8bit_rgba_keeps_alpha_last() -> None:
    pixels = RNG.integers(0, 256, (9, 11, 4), dtype=np.uint8)
    pixels[2, 3] = (0, 0, 255, 77)
    image = decode_as(cv2_png(pixels), Pass.LINEART)
    assert image.shape == (9, 11, 4)
    np.testing.assert_allclose(image[2, 3], [0, 0, 1, 77 / 255], atol=1e-7)
    np.testing.assert_allclose(image, pixels / 255.0, atol=1e-7)


def test_png_16bit_gray_and_rgb_scale_by_65535() -> None:
    gray = RNG.integers(0, 65536, (8, 10), dtype=np.uint16)
    image = decode_as(cv2_png(gray), Pass.KEYFRAME)
    assert image.shape == (8, 10, 3)  # colour passes always come back as RGB(A)
    for c in range(3):
        np.testing.assert_allclose(image[:, :, c], gray / 65535.0, atol=1e-7)
    rgb = RNG.integers(0, 65536, (8, 10, 3), dtype=np.uint16)
    np.testing.assert_allclose(decode_as(cv2_png(rgb), Pass.BEAUTY), rgb / 65535.0, atol=1e-7)


def test_png_8bit_gray_becomes_rgb() -> None:
    gray = RNG.integers(0, 256, (5, 6), dtype=np.uint8)
    image = decode_as(cv2_png(gray), Pass.BEAUTY)
    np.testing.assert_allclose(image, np.repeat(gray[:, :, None] / 255.0, 3, axis=2), atol=1e-7)


def test_png_gray_alpha_palette_and_low_bit_depths() -> None:
    gray_alpha = np.stack([np.full((3, 4), 100, np.uint8), np.full((3, 4), 200, np.uint8)], -1)
    image = decode_as(raw_png(4, 3, 8, 4, scanlines(gray_alpha)), Pass.BEAUTY)
    np.testing.assert_allclose(image[0, 0], [100 / 255] * 3 + [200 / 255], atol=1e-7)

    palette = chunk(b"PLTE", bytes([255, 0, 0, 0, 255, 0, 0, 0, 255]))
    indices = np.array([[0, 1, 2, 0]] * 3, np.uint8)
    image = decode_as(raw_png(4, 3, 8, 3, scanlines(indices), palette), Pass.BEAUTY)
    np.testing.assert_array_equal(image[0], [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0]])
    with_alpha = raw_png(4, 3, 8, 3, scanlines(indices), palette, chunk(b"tRNS", b"\xff\x80"))
    np.testing.assert_allclose(decode_as(with_alpha, Pass.BEAUTY)[0, 1], [0, 1, 0, 128 / 255])

    one_bit = raw_png(4, 3, 1, 0, b"\x00\xa0" * 3)  # rows 1010: white, black, white, black
    np.testing.assert_array_equal(decode_as(one_bit, Pass.BEAUTY)[0, :, 0], [1, 0, 1, 0])


def adam7(pixels: np.ndarray) -> bytes:
    passes = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
              (0, 1, 1, 2))  # fmt: skip
    return b"".join(
        scanlines(pixels[y0::dy, x0::dx])
        for x0, y0, dx, dy in passes
        if pixels[y0::dy, x0::dx].size
    )


def test_interlaced_png_is_accepted() -> None:
    pixels = RNG.integers(0, 256, (13, 11, 3), dtype=np.uint8)
    image = decode_as(raw_png(11, 13, 8, 2, adam7(pixels), interlace=1), Pass.BEAUTY)
    np.testing.assert_allclose(image, pixels / 255.0, atol=1e-7)


def test_probe_png_reads_the_header() -> None:
    info = probe(cv2_png(np.zeros((7, 9, 4), np.uint16)))
    assert (info.format, info.width, info.height, info.channels) == ("png", 9, 7, 4)
    assert (info.bit_depth, info.sample_type, info.channel_names) == (16, "uint", tuple("RGBA"))


# --- PNG refusals ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_png() -> bytes:
    noise = np.random.default_rng(7).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    data = cv2_png(noise)
    assert [kind for kind, _, _ in chunks_of(data)].count(b"IDAT") >= 1
    return data


def cut_points(data: bytes) -> dict[str, int]:
    chunks = chunks_of(data)
    idat = [(start, end) for kind, start, end in chunks if kind == b"IDAT"]
    iend_start = next(start for kind, start, _ in chunks if kind == b"IEND")
    return {
        "inside IHDR": 20,
        "after IHDR": 33,
        "IDAT header": idat[0][0] + 6,
        "mid IDAT": (idat[0][0] + idat[-1][1]) // 2,
        "end of IDAT data": idat[-1][1] - 4,
        "without IEND": iend_start,
        "inside IEND": len(data) - 3,
    }


@pytest.mark.parametrize(
    "where",
    ["inside IHDR", "after IHDR", "IDAT header", "mid IDAT", "end of IDAT data", "without IEND",
     "inside IEND"],
)  # fmt: skip
def test_truncated_png_is_refused(big_png: bytes, where: str) -> None:
    cut = big_png[: cut_points(big_png)[where]]
    assert "truncated" in refused(cut, Pass.BEAUTY)


def test_short_image_data_with_valid_chunks_is_refused() -> None:
    raw = scanlines(RNG.integers(0, 256, (6, 5, 3), dtype=np.uint8))
    for short in (raw[:-7], raw[: len(raw) // 2]):  # every CRC valid, IEND present
        assert "image data holds" in refused(raw_png(5, 6, 8, 2, short), Pass.BEAUTY)


def test_png_with_a_wrong_crc_is_refused(big_png: bytes) -> None:
    _, start, end = next(c for c in chunks_of(big_png) if c[0] == b"IDAT")
    damaged = bytearray(big_png)
    damaged[(start + end) // 2] ^= 0x55
    assert "checksum (CRC)" in refused(bytes(damaged), Pass.BEAUTY)
    header = bytearray(big_png)
    header[18] ^= 0x01  # inside IHDR's width
    with pytest.raises(InputError, match="header checksum"):
        probe(bytes(header))


def test_corrupt_deflate_stream_is_refused() -> None:
    ihdr = struct.pack(">IIBBBBB", 4, 4, 8, 0, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"\x78\x9c\xff\xff\xff")
    assert "corrupt" in refused(data + chunk(b"IEND", b""), Pass.BEAUTY)


def test_forged_huge_png_header_is_refused_before_decoding() -> None:
    ihdr = struct.pack(">IIBBBBB", 65535, 65535, 16, 6, 0, 0, 0)
    forged = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
    forged += chunk(b"IEND", b"")
    assert probe(forged).width == 65535
    tracemalloc.start()
    started = time.perf_counter()
    message = refused(forged, Pass.BEAUTY, max_pixels=1 << 40)
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert "65535×65535" in message and "largest side" in message
    assert elapsed < 0.1 and peak < 256 * 1024


def test_pixel_budget_is_checked_from_the_header() -> None:
    ihdr = struct.pack(">IIBBBBB", 5000, 5000, 8, 2, 0, 0, 0)
    forged = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)  # no image data at all
    message = refused(forged, Pass.BEAUTY, max_pixels=1920 * 1080)
    assert "5000×5000" in message and "megapixels" in message


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        (b"", "empty"),
        (cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes(), "JPEG"),
        (b"GIF89a\x01\x00\x01\x00", "47 49 46"),
        (bytes(range(200)), "00 01 02"),
    ],
)
def test_anything_else_is_not_a_png_or_exr(data: bytes, detail: str) -> None:
    message = refused(data, Pass.BEAUTY)
    assert "the beauty pass is not a PNG or OpenEXR image" in message and detail in message


def test_expect_size_mismatch_names_both_sizes() -> None:
    message = refused(cv2_png(np.zeros((48, 64, 3), np.uint8)), Pass.BEAUTY, expect_size=(32, 48))
    assert "64×48" in message and "32×48" in message


@pytest.mark.parametrize("pass_", [Pass.DEPTH, Pass.NORMAL, Pass.VECTOR])
def test_float_passes_must_be_exr(pass_: Pass) -> None:
    message = refused(cv2_png(np.zeros((4, 4), np.uint16)), pass_)
    assert f"the {pass_.value} pass must be an OpenEXR file" in message


# --- EXR decoding ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["V", "Z", "Y", "R", "Depth.V", "ViewLayer.Depth.Z"])
@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_single_channel_depth(name: str, dtype: type) -> None:
    depth = RNG.uniform(0.5, 30.0, (6, 9)).astype(dtype)
    image = decode_as(exr({name: depth}), Pass.DEPTH, expect_size=(9, 6))
    assert image.dtype == np.float32 and image.shape == (6, 9, 1)
    np.testing.assert_array_equal(image[:, :, 0], depth.astype(np.float32))


def test_depth_background_1e10_is_kept() -> None:
    depth = np.full((4, 5), 1e10, np.float32)
    depth[1:3, 1:4] = 2.5
    image = decode_as(exr({"V": depth}), Pass.DEPTH)
    assert image[0, 0, 0] == np.float32(1e10) and image[1, 1, 0] == 2.5


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("alpha", [False, True])
def test_exr_colour_is_rgb_order(dtype: type, alpha: bool) -> None:
    planes = {c: RNG.uniform(0, 4, (5, 7)).astype(dtype) for c in "RGBA"[: 3 + alpha]}
    image = decode_as(exr(planes, OpenEXR.PIZ_COMPRESSION), Pass.BEAUTY)
    assert image.shape == (5, 7, 3 + alpha)
    expected = np.stack([planes[c].astype(np.float32) for c in "RGBA"[: 3 + alpha]], axis=2)
    np.testing.assert_array_equal(image, expected)  # scene-linear values kept, > 1 included


def test_exr_gray_colour_pass_becomes_rgb() -> None:
    y = RNG.uniform(0, 1, (3, 4)).astype(np.float32)
    np.testing.assert_array_equal(decode_as(exr({"Y": y}), Pass.LINEART), np.stack([y] * 3, 2))


def test_multilayer_file_gives_each_pass_its_layer() -> None:
    shape = (4, 6)
    layers = {
        **{f"ViewLayer.Combined.{c}": np.full(shape, i + 1, np.float32) for i, c in enumerate("RGBA")},
        "ViewLayer.Depth.Z": np.full(shape, 7.0, np.float32),
        **{f"ViewLayer.Normal.{c}": np.full(shape, v, np.float32) for c, v in zip("XYZ", (0, 0, 1), strict=True)},
        **{f"ViewLayer.Vector.{c}": np.full(shape, v, np.float32) for c, v in zip("XYZW", (1, 2, 3, 4), strict=True)},
        **{f"ViewLayer.Freestyle.{c}": np.full(shape, 0.5, np.float32) for c in "RGBA"},
    }  # fmt: skip
    data = exr(layers)
    assert decode_as(data, Pass.DEPTH)[0, 0].tolist() == [7.0]
    assert decode_as(data, Pass.NORMAL)[0, 0].tolist() == [0, 0, 1]
    assert decode_as(data, Pass.VECTOR)[0, 0].tolist() == [1, 2, 3, 4]
    assert decode_as(data, Pass.BEAUTY)[0, 0].tolist() == [1, 2, 3, 4]
    assert decode_as(data, Pass.LINEART)[0, 0].tolist() == [0.5] * 4


def test_normal_from_a_layer_of_another_pass_is_refused() -> None:
    normal_only = exr({f"ViewLayer.Normal.{c}": np.zeros((2, 2), np.float32) for c in "XYZ"})
    assert "no channels usable as the depth pass" in refused(normal_only, Pass.DEPTH)


def test_two_view_layers_are_ambiguous() -> None:
    data = exr({"A.Depth.Z": np.ones((2, 2), np.float32), "B.Depth.Z": np.ones((2, 2), np.float32)})
    assert "several layers" in refused(data, Pass.DEPTH)


def test_probe_exr_reads_the_header() -> None:
    data = exr({"R": np.zeros((3, 5), np.float16), "V": np.zeros((3, 5), np.float32)},
               OpenEXR.DWAA_COMPRESSION)  # fmt: skip
    info = probe(data)
    assert (info.format, info.width, info.height, info.channels) == ("exr", 5, 3, 2)
    assert (info.bit_depth, info.sample_type, info.compression) == (32, "float", "dwaa")
    assert info.channel_names == ("R", "V")
    half = probe(exr({"Y": np.zeros((2, 2), np.float16)}))
    assert (half.bit_depth, half.sample_type) == (16, "half")


def test_tiled_single_level_exr_is_accepted() -> None:
    tiles = OpenEXR.TileDescription()
    tiles.xSize, tiles.ySize, tiles.mode = 16, 16, OpenEXR.ONE_LEVEL
    depth = RNG.uniform(1, 2, (20, 40)).astype(np.float32)
    data = exr({"Z": depth}, type=OpenEXR.tiledimage, tiles=tiles)
    np.testing.assert_array_equal(decode_as(data, Pass.DEPTH)[:, :, 0], depth)


# --- EXR refusals ----------------------------------------------------------------------------


def test_nan_and_inf_are_refused_with_count_and_position() -> None:
    depth = np.ones((6, 8), np.float32)
    depth[3, 5] = np.nan
    depth[4, 1] = np.inf
    message = refused(exr({"V": depth}), Pass.DEPTH)
    assert "the depth pass has 2 pixels with NaN or infinite values" in message
    assert "x=5, y=3" in message
    rgb = {c: np.zeros((4, 4), np.float32) for c in "RGB"}
    rgb["G"][0, 2] = -np.inf
    message = refused(exr(rgb), Pass.BEAUTY)
    assert (
        "the beauty pass has 1 pixel with NaN or infinite values" in message
        and "x=2, y=0" in message
    )


def test_half_float_depth_background_overflows_and_says_so() -> None:
    with np.errstate(over="ignore"):
        depth = np.full((3, 3), 1e10, np.float32).astype(np.float16)  # inf: half ends at 65504
    message = refused(exr({"V": depth}), Pass.DEPTH)
    assert "9 pixels" in message and "Float (Full)" in message


def test_absurd_normals_and_vectors_are_refused() -> None:
    normal = {c: np.zeros((3, 3), np.float32) for c in "XYZ"}
    normal["Z"][2, 1] = 50.0
    assert "normals longer than 10, the first at x=1, y=2" in refused(exr(normal), Pass.NORMAL)
    vector = {c: np.zeros((3, 3), np.float32) for c in "XYZW"}
    vector["W"][0, 2] = -5e6
    assert "beyond 1e+06 pixels, the first at x=2, y=0" in refused(exr(vector), Pass.VECTOR)


def test_forged_wide_exr_header_is_refused_before_decoding() -> None:
    forged = forged_exr_header(60000, 1)
    info = probe(forged)
    assert (info.width, info.height, info.channel_names) == (60000, 1, ("V",))
    tracemalloc.start()
    started = time.perf_counter()
    message = refused(forged, Pass.DEPTH, max_pixels=1 << 40)
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert "60000×1" in message and "largest side" in message
    assert elapsed < 0.1 and peak < 256 * 1024
    assert "65535×65535" in refused(forged_exr_header(65535, 65535), Pass.DEPTH)


@pytest.mark.parametrize("compression", [OpenEXR.NO_COMPRESSION, OpenEXR.ZIP_COMPRESSION])
def test_truncated_exr_is_refused(compression) -> None:
    data = exr({"V": RNG.uniform(1, 2, (64, 64)).astype(np.float32)}, compression)
    header_end = len(forged_exr_header(64, 64))  # roughly where the header ends
    for cut in (20, header_end, len(data) // 2, len(data) - 100, len(data) - 1):
        message = refused(data[:cut], Pass.DEPTH)
        assert "truncated" in message, (cut, message)


def test_multipart_and_deep_and_mipmapped_exr_are_refused() -> None:
    parts = [OpenEXR.Part({"type": OpenEXR.scanlineimage}, {"Z": np.ones((2, 2), np.float32)},
                          name=name) for name in ("a", "b")]  # fmt: skip
    buffer = io.BytesIO()
    OpenEXR.File(parts).write(buffer)
    assert "multi-part" in refused(buffer.getvalue(), Pass.DEPTH)

    deep = bytearray(forged_exr_header(4, 4))
    deep[5] |= 0x08  # the version field's "non-image" (deep) flag
    assert "deep OpenEXR" in refused(bytes(deep), Pass.DEPTH)

    tiles = OpenEXR.TileDescription()
    tiles.xSize, tiles.ySize, tiles.mode = 8, 8, OpenEXR.MIPMAP_LEVELS
    mipmapped = exr({"Z": np.ones((16, 16), np.float32)}, type=OpenEXR.tiledimage, tiles=tiles)
    assert "mipmapped" in refused(mipmapped, Pass.DEPTH)


def test_oversized_exr_header_and_too_many_channels_are_refused() -> None:
    huge = exr({"V": np.ones((2, 2), np.float32)}, comments="x" * (MAX_EXR_HEADER + 10))
    assert "header larger than 64 KiB" in refused(huge, Pass.DEPTH)
    many = exr({f"C{i:03d}": np.ones((2, 2), np.float32) for i in range(65)})
    assert "65 channels" in refused(many, Pass.DEPTH)


def test_exr_channel_count_counts_against_the_pixel_budget() -> None:
    planes = {f"L{i}.V": np.ones((16, 16), np.float32) for i in range(20)}
    message = refused(exr(planes), Pass.DEPTH, max_pixels=256)
    assert "holds 20 channels" in message


# --- encoding --------------------------------------------------------------------------------


def test_to_uint8_rounds_and_clips() -> None:
    values = np.array([[-1.0, 0.0, 0.5, 1 / 255 * 0.49, 1.0, 7.0, np.nan]], np.float32)
    assert to_uint8(values).tolist() == [[0, 0, 128, 0, 255, 255, 0]]


@pytest.mark.parametrize("shape", [(6, 5), (6, 5, 1), (6, 5, 3), (6, 5, 4)])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_encode_png_round_trips(shape: tuple[int, ...], dtype: type) -> None:
    pixels = RNG.integers(0, np.iinfo(dtype).max + 1, shape).astype(dtype)
    data = encode_png(pixels)
    info = probe(data)
    assert (info.width, info.height, info.bit_depth) == (5, 6, 8 * np.dtype(dtype).itemsize)
    image = decode_as(data, Pass.BEAUTY)
    gray = pixels.reshape(6, 5, -1)
    expected = np.repeat(gray, 3, axis=2) if gray.shape[2] == 1 else gray
    np.testing.assert_allclose(image, expected / np.iinfo(dtype).max, atol=1e-7)


def test_encode_png_refuses_float_and_odd_shapes() -> None:
    with pytest.raises(InputError, match="to_uint8"):
        encode_png(np.zeros((2, 2, 3), np.float32))
    with pytest.raises(InputError, match="HxWx3"):
        encode_png(np.zeros((2, 2, 2), np.uint8))


# --- depth -----------------------------------------------------------------------------------


def shot_depth(frames: int = 5) -> list[np.ndarray]:
    """A far wall (20), a sphere-ish blob approaching the camera (8 -> 2), sky (1e10)."""
    out = []
    yy, xx = np.mgrid[0:48, 0:64]
    for t in range(frames):
        depth = np.full((48, 64), 20.0, np.float32)
        depth[:10] = 1e10
        blob = (yy - 28) ** 2 + (xx - 10 - 8 * t) ** 2 < 64
        depth[blob] = 8.0 - 1.5 * t
        out.append(depth[:, :, None])
    return out


def test_depth_range_is_robust_and_ignores_background() -> None:
    frames = shot_depth()
    frames[0][30, 60, 0] = 0.001  # one stray pixel must not set the near plane
    rng = depth_range(iter(frames))
    assert 1.9 < rng.near < 2.5 and rng.far == pytest.approx(20.0)
    assert depth_range([np.full((4, 4), 1e10, np.float32)]) == DepthRange(0.0, 0.0)


def test_depth_control_is_monotone_near_bright_background_black() -> None:
    depth = np.array([[1e10, 20.0, 10.0, 5.0, 2.0, 0.5]], np.float32)
    control = depth_to_control(depth, DepthRange(2.0, 20.0))
    assert control.shape == (1, 6, 3) and control.dtype == np.float32
    gray = control[0, :, 0]
    assert gray[0] == 0.0  # sky
    assert gray[1] == 0.0 and gray[4] == 1.0 and gray[5] == 1.0  # clipped at far / near
    assert np.all(np.diff(gray[1:5]) > 0)  # nearer is brighter
    assert gray[2] == pytest.approx((1 / 10 - 1 / 20) / (1 / 2 - 1 / 20))  # inverse depth


def test_depth_control_uses_one_range_for_the_whole_shot() -> None:
    frames = shot_depth()
    rng = depth_range(frames)
    controls = [depth_to_control(f, rng) for f in frames]
    wall = [c[40, 60, 0] for c in controls]
    assert len(set(wall)) == 1  # the static wall keeps its brightness while the blob moves
    blob = [c[28, 10 + 8 * t, 0] for t, c in enumerate(controls)]
    assert np.all(np.diff(blob) > 0)  # the approaching blob brightens frame by frame
    assert all(np.all(c[:10] == 0) for c in controls)


def test_depth_control_of_empty_or_flat_shots() -> None:
    sky = np.full((3, 3), 1e10, np.float32)
    assert not depth_to_control(sky, depth_range([sky])).any()
    flat = np.full((3, 3), 4.0, np.float32)
    assert np.all(depth_to_control(flat, depth_range([flat])) == 1.0)


# --- normals, line art, vectors --------------------------------------------------------------


def test_normal_control_follows_normalbae_colours() -> None:
    normals = np.array([[[0, 0, 1], [1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, 0, 0], [0, 0, 3]]],
                       np.float32)  # fmt: skip
    rgb = normal_to_control(normals)
    np.testing.assert_allclose(rgb[0, 0], [0.5, 0.5, 1.0])  # facing the camera
    np.testing.assert_allclose(rgb[0, 1], [0.0, 0.5, 0.5])  # facing right: red channel inverted
    np.testing.assert_allclose(rgb[0, 2], [1.0, 0.5, 0.5])  # facing left: red
    np.testing.assert_allclose(rgb[0, 3], [0.5, 1.0, 0.5])  # facing up: green
    np.testing.assert_allclose(rgb[0, 4], [0.5, 0.5, 1.0])  # background
    np.testing.assert_allclose(rgb[0, 5], [0.5, 0.5, 1.0])  # renormalised


def test_normal_control_rotates_world_normals_into_the_camera() -> None:
    # A front camera: Blender rotation (90°, 0, 0), looking along world +Y, up = world +Z.
    camera_to_world = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], np.float32)
    world_to_camera = camera_to_world.T.tolist()
    normals = np.array([[[0, -1, 0], [0, 0, 1], [1, 0, 0]]], np.float32)  # towards it, up, right
    rgb = normal_to_control(normals, world_to_camera)
    np.testing.assert_allclose(
        rgb[0], [[0.5, 0.5, 1.0], [0.5, 1.0, 0.5], [0.0, 0.5, 0.5]], atol=1e-6
    )
    view_matrix = np.eye(4)
    view_matrix[:3, :3] = camera_to_world.T
    np.testing.assert_allclose(normal_to_control(normals, view_matrix), rgb, atol=1e-6)
    with pytest.raises(InputError, match="3x3"):
        normal_to_control(normals, [[1, 0], [0, 1]])
    with pytest.raises(InputError, match="singular"):
        normal_to_control(normals, np.zeros((3, 3)))


def test_lineart_becomes_white_lines_on_black() -> None:
    freestyle = np.zeros((4, 4, 4), np.float32)  # black lines, alpha 1 on the line only
    freestyle[1, :, 3] = 1.0
    freestyle[2, 2, 3] = 0.5
    out = lineart_to_control(freestyle)
    assert out.shape == (4, 4, 3)
    assert np.all(out[1] == 1.0) and out[2, 2, 0] == 0.5 and out[0, 0, 0] == 0.0

    paper = np.ones((4, 4, 3), np.float32)  # dark lines on white paper, opaque
    paper[:, 1] = 0.0
    out = lineart_to_control(paper)
    assert np.all(out[:, 1] == 1.0) and np.all(out[:, 0] == 0.0)

    already = 1.0 - paper  # white on black stays as it is
    np.testing.assert_allclose(lineart_to_control(already), already, atol=1e-6)


def test_vector_pass_sign_and_axis_convention() -> None:
    # Cycles writes X,Y = raster(previous) - raster(now), Z,W = raster(now) - raster(next), with
    # raster y pointing UP. An object moving 3 px right and 2 px UP on screen every frame:
    vector = np.zeros((1, 1, 4), np.float32)
    vector[0, 0] = (-3.0, -2.0, -3.0, -2.0)
    backward, forward = vector_to_flow(vector)
    assert backward.shape == forward.shape == (1, 1, 2) and backward.dtype == np.float32
    assert backward[0, 0].tolist() == [-3.0, 2.0]  # it was left and LOWER (y down) before
    assert forward[0, 0].tolist() == [3.0, -2.0]  # it will be right and HIGHER next


def test_backward_flow_warps_the_previous_frame_onto_this_one() -> None:
    h, w = 32, 40
    previous = np.zeros((h, w), np.float32)
    previous[20:26, 8:14] = 1.0  # the square moves by (+5, -4) in image terms
    current = np.zeros((h, w), np.float32)
    current[16:22, 13:19] = 1.0
    vector = np.zeros((h, w, 4), np.float32)
    vector[:, :, 0], vector[:, :, 1] = -5.0, -4.0  # raster(prev) - raster(now), y up
    backward, _ = vector_to_flow(vector)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    warped = cv2.remap(previous, xx + backward[:, :, 0], yy + backward[:, :, 1], cv2.INTER_NEAREST)
    np.testing.assert_array_equal(warped[10:28, 8:24], current[10:28, 8:24])
