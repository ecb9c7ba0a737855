"""Frame bookkeeping: ranges, key frames, strip keys, file names, strip layout, free channels."""

from __future__ import annotations

from pathlib import Path

import pytest

from client.frames import (
    FrameError,
    FrameRange,
    ImageStripInfo,
    describe_keys,
    frame_file,
    frame_of,
    free_channel,
    key_frames,
    missing_files,
    resolve_range,
    strip_keys,
    strip_layout,
)


def test_range_from_scene_or_custom() -> None:
    assert resolve_range(True, (1, 24), (5, 9)).frames == tuple(range(1, 25))
    assert resolve_range(False, (1, 24), (5, 9)).frames == (5, 6, 7, 8, 9)
    with pytest.raises(FrameError, match="ends before it starts"):
        resolve_range(False, (1, 24), (9, 5))


def test_key_frames_round_dedupe_and_clip() -> None:
    rng = FrameRange(1, 12)
    # fcurves repeat frames (location and rotation keys); a sub-frame key rounds to its frame
    assert key_frames([1.0, 1.0, 4.4999, 4.5, 12.0, 13.0, -3.0], rng) == (1, 4, 5, 12)
    assert key_frames([], rng) == ()


def test_describe_keys_says_what_was_found() -> None:
    rng = FrameRange(1, 12)
    assert "has no keys" in describe_keys([], rng, "Cube")
    words = describe_keys([5.0, 20.0, 30.0], rng, "Cube")
    assert "keys at 5, 20, 30" in words and "1 of them fall in the frame range 1–12" in words


def test_strip_keys_single_images_sequences_trims_and_channel_priority(tmp_path: Path) -> None:
    def strip(name, channel, start, final_start, final_end, files):
        return ImageStripInfo(name, channel, start, final_start, final_end, str(tmp_path), files)

    strips = [
        strip("pose A", 1, 1, 1, 4, ("a.png",)),  # one drawing held for 3 frames: key at 1
        strip("seq", 2, 6, 7, 9, ("s0.png", "s1.png", "s2.png", "s3.png")),  # trimmed: 7, 8
        strip("over", 3, 8, 8, 9, ("o.png",)),  # higher channel wins frame 8
        strip("late", 1, 40, 40, 41, ("l.png",)),  # outside the range
    ]
    keys = strip_keys(strips, FrameRange(1, 24))
    assert keys == {1: tmp_path / "a.png", 7: tmp_path / "s1.png", 8: tmp_path / "o.png"}


def test_frame_files_sort_and_parse_back() -> None:
    assert frame_file(7) == "0007.png" and frame_file(12345) == "12345.png"
    assert frame_file(-3) == "-0003.png"
    assert [frame_of(frame_file(f)) for f in (-3, 0, 7, 12345)] == [-3, 0, 7, 12345]
    assert frame_of(".0007.png.1.2.tmp") is None


def test_strip_layout_is_one_file_per_frame_without_gaps(tmp_path: Path) -> None:
    layout = strip_layout(tmp_path, [5, 3, 4])
    assert (layout.start, layout.end, layout.files) == (3, 5, ("0003.png", "0004.png", "0005.png"))
    with pytest.raises(FrameError, match="frames 4 are missing"):
        strip_layout(tmp_path, [3, 5])
    (tmp_path / "0003.png").write_bytes(b"x")
    assert missing_files(tmp_path, [3, 4]) == [4]


def test_free_channel_is_above_overlapping_strips_only() -> None:
    occupied = [(1, 1, 25), (2, 1, 10), (5, 30, 40)]  # (channel, first, one past last)
    assert free_channel(occupied, 1, 24) == 3
    assert free_channel(occupied, 10, 24) == 2  # channel 2 ends before frame 10
    assert free_channel(occupied, 25, 35) == 6
    assert free_channel([], 1, 24) == 1
    with pytest.raises(FrameError, match="no free channel"):
        free_channel([(128, 1, 2)], 1, 1)
