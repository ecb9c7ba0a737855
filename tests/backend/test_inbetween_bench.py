"""The in-between benchmark's own measures and drawn shots (no Blender, no ffmpeg): stroke pieces
count what an animator would, ink kept falls when strokes fade, the drawn shots are whole."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from backend.bench import lineart_shots
from backend.bench.inbetween import Shot
from backend.bench.scores import ink_kept, over_grey, stroke_pieces


def _lines(*segments: tuple[int, int, int, int], film: bool = False) -> np.ndarray:
    cover = np.zeros((40, 60), np.uint8)
    for x0, y0, x1, y1 in segments:
        cv2.line(cover, (x0, y0), (x1, y1), 255, 3)
    return lineart_shots.picture(cover.astype(np.float32) / 255.0, film)


def test_stroke_pieces_counts_separate_strokes_and_a_torn_one() -> None:
    assert stroke_pieces(_lines((5, 5, 50, 5))) == 1
    assert stroke_pieces(_lines((5, 5, 50, 5), (5, 30, 50, 30))) == 2
    torn = _lines((5, 5, 22, 5), (30, 5, 50, 5))  # a gap of a few pixels
    assert stroke_pieces(torn) == 2
    assert stroke_pieces(_lines((5, 5, 50, 5), film=True)) == 1
    faded = _lines((5, 5, 50, 5))
    faded = (255 - (255 - faded.astype(np.int32)) // 3).astype(np.uint8)  # a third as dark
    assert stroke_pieces(faded) == 0


def test_ink_kept_falls_when_strokes_fade_or_move() -> None:
    truth = _lines((5, 5, 50, 5))
    assert ink_kept(truth, truth) == 1.0
    assert ink_kept(_lines((5, 6, 50, 6)), truth) == 1.0  # a pixel off still counts
    assert ink_kept(_lines((5, 20, 50, 20)), truth) == 0.0
    blank = np.full_like(truth, 255)
    assert ink_kept(blank, truth) == 0.0


def test_over_grey_shows_film_as_composited() -> None:
    film = _lines((5, 5, 50, 5), film=True)
    shown = over_grey(film)
    assert shown.shape == (40, 60, 3)
    assert np.all(shown[30, 30] == 128) and shown[5, 30].max() < 40


def test_drawn_shots_are_whole_in_every_frame(tmp_path: Path) -> None:
    lineart_shots.write_shots(tmp_path, 192, 128, 9)
    for name, (_, film) in lineart_shots.SHOTS.items():
        shot = Shot.load(tmp_path / name)
        assert shot.lineart and shot.film == film and not shot.guided
        info = json.loads((tmp_path / name / "shot.json").read_text())
        assert info["frames"] == list(range(1, 10))
        pieces = {stroke_pieces(shot.truth(f)) for f in shot.frames}
        assert pieces == ({3} if "arcs" in name else {1}), name
        assert shot.truth(1).shape[2] == (4 if film else 3)
