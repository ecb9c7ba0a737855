"""The decode budget: costs from headers alone, and a limit on decodes in flight together."""

from __future__ import annotations

import struct
import threading
import zlib

import pytest

from backend.jobs import InputError
from backend.vision.image_headers import probe
from backend.vision.imageio import DEFAULT_DECODE_BUDGET, DecodeBudget, decode_cost

MiB = 1024 * 1024


def png_header_only(width: int, height: int, depth: int, colour: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", 13)
        + b"IHDR"
        + ihdr
        + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    )


def test_a_16_bit_8k_png_costs_more_than_one_image_may_take_by_default() -> None:
    info = probe(png_header_only(8192, 8192, 16, 6))  # within the 8192² pixel limit
    cost = decode_cost(info)
    assert cost >= 8192 * 8192 * 4 * 4  # at least its float32 RGBA result
    assert cost > DecodeBudget(DEFAULT_DECODE_BUDGET).per_image
    budget = DecodeBudget(DEFAULT_DECODE_BUDGET)
    with (
        pytest.raises(InputError, match="MiB of memory to decode"),
        budget.reserve(cost, "the keyframe image"),
    ):
        pass


def test_a_frame_of_ordinary_size_fits_the_default_budget() -> None:
    info = probe(png_header_only(1920, 1080, 16, 6))
    assert decode_cost(info) < DecodeBudget(DEFAULT_DECODE_BUDGET).per_image / 4


def test_decodes_in_flight_together_stay_within_the_budget() -> None:
    budget = DecodeBudget(100 * MiB)
    held = threading.Event()
    release = threading.Event()

    def first() -> None:
        with budget.reserve(40 * MiB, "the first image"):
            held.set()
            release.wait(30)

    t = threading.Thread(target=first)
    t.start()
    assert held.wait(30)
    with (
        budget.reserve(40 * MiB, "a second image"),  # 80 of 100: fits beside the first
        pytest.raises(InputError, match="busy decoding other large images"),
        budget.reserve(40 * MiB, "a third image", wait_s=0.05),
    ):
        pass
    release.set()
    t.join(30)
    with budget.reserve(50 * MiB, "once the others are done"):
        pass
