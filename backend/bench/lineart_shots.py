"""Line-art test shots for the in-between benchmark, drawn here with OpenCV (no Blender).

What a 2D animator hands over: thin dark strokes, anti-aliased, either on white paper (RGB) or
on transparent film (RGBA, the Grease Pencil case). Three drawings, each with its own kind of
motion, every frame drawn exactly so the frames between the keys have a true answer:

- figure: a stick figure walks across the frame, arms and legs swinging (articulated motion);
- arcs: three separate brush arcs drift, turn and open up (rigid motion plus rotation);
- hair: strands hanging from a head sway in the wind (non-rigid, thin, close together).

Each shot is written like a rendered one: OUT/<shot>/beauty/NNNN.png and OUT/<shot>/shot.json
(with "film": true for the RGBA ones), frames 1..N.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

Polyline = np.ndarray  # Nx2 float (x, y) in pixels
Drawing = Callable[[float, int, int], list[Polyline]]  # (time 0..1, width, height) -> strokes

INK = np.array([0.08, 0.08, 0.12], np.float32)  # stroke colour, RGB
SUPERSAMPLE = 4
_SHIFT = 4  # fixed-point bits for sub-pixel coordinates in cv2.polylines


def stroke_width(height: int) -> float:
    """3 px at 128 px high (the issue's drawings), never under 1.5 px."""
    return max(1.5, 3.0 * height / 128.0)


def _limb(start: np.ndarray, angle: float, bend: float, upper: float, lower: float) -> Polyline:
    """Two segments from start; angles in radians from straight down, positive forward (+x)."""
    knee = start + upper * np.array([math.sin(angle), math.cos(angle)])
    end = knee + lower * np.array([math.sin(angle - bend), math.cos(angle - bend)])
    return np.stack([start, knee, end])


def _circle(centre: np.ndarray, radius: float, start: float = 0.0, span: float = 2 * math.pi):
    angles = start + np.linspace(0.0, span, 48)
    return centre + radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def figure(u: float, w: int, h: int) -> list[Polyline]:
    """A stick figure walking left to right: one stride over the shot, head bobbing."""
    unit = h / 128.0
    phase = 2.0 * math.pi * u
    hip = np.array([w * (0.2 + 0.6 * u), h * 0.6 - 3.0 * unit * abs(math.sin(phase))])
    neck = hip + np.array([2.0 * unit, -30.0 * unit])
    shoulder = neck + np.array([0.0, 4.0 * unit])
    swing = math.sin(phase)
    strokes = [np.stack([hip, neck]), _circle(neck + np.array([0.0, -9.0 * unit]), 8.0 * unit)]
    for side in (1.0, -1.0):
        leg_bend = math.radians(35.0) * max(0.0, -side * math.cos(phase))
        strokes.append(
            _limb(hip, side * math.radians(28.0) * swing, -leg_bend, 20 * unit, 20 * unit)
        )
        arm = -side * math.radians(40.0) * swing
        strokes.append(_limb(shoulder, arm, math.radians(-35.0), 15 * unit, 14 * unit))
    return strokes


def arcs(u: float, w: int, h: int) -> list[Polyline]:
    """Three separate arcs drifting on different paths while turning and opening."""
    unit = h / 128.0
    strokes = []
    for i, (cx, cy, r, dx, dy) in enumerate(((0.22, 0.5, 26, 30, 6), (0.78, 0.6, 20, -36, -10),
                                             (0.5, 0.17, 13, 16, 4))):  # fmt: skip
        centre = np.array([w * cx + dx * unit * u, h * cy + dy * unit * u])
        start = i * 2.1 + (1.6 - 0.5 * i) * u
        strokes.append(_circle(centre, r * unit, start, math.radians(110 + 60 * u)))
    return strokes


def hair(u: float, w: int, h: int) -> list[Polyline]:
    """A head outline with nine strands hanging from it, swaying, the head drifting."""
    unit = h / 128.0
    centre = np.array([w * (0.4 + 0.2 * u), h * 0.3])
    radius = 24.0 * unit
    scalp = _circle(centre, radius, math.pi, math.pi)
    strokes = [scalp]
    t = np.linspace(0.0, 1.0, 24)[:, None]
    for i, angle in enumerate(np.linspace(math.pi * 1.05, math.pi * 1.95, 9)):
        root = centre + radius * np.array([math.cos(angle), math.sin(angle)])
        sway = 14.0 * unit * math.sin(2.0 * math.pi * 1.2 * u + 0.6 * i)
        out = 10.0 * unit * math.cos(angle)
        tip = root + np.array([out + sway, 60.0 * unit + 8.0 * unit * math.sin(angle)])
        control = root + np.array([out * 1.2 + 0.3 * sway, 28.0 * unit])
        strokes.append((1 - t) ** 2 * root + 2 * (1 - t) * t * control + t**2 * tip)
    return strokes


DRAWINGS: dict[str, Drawing] = {"figure": figure, "arcs": arcs, "hair": hair}
# shot name -> (drawing, on transparent film)
SHOTS: dict[str, tuple[str, bool]] = {
    "lineart_figure": ("figure", False),
    "lineart_figure_film": ("figure", True),
    "lineart_arcs": ("arcs", False),
    "lineart_arcs_film": ("arcs", True),
    "lineart_hair": ("hair", False),
    "lineart_hair_film": ("hair", True),
}


def ink(strokes: list[Polyline], w: int, h: int, width: float) -> np.ndarray:
    """Stroke coverage 0..1 (HxW float32), anti-aliased by drawing 4× larger and shrinking."""
    scale = SUPERSAMPLE * (1 << _SHIFT)
    canvas = np.zeros((h * SUPERSAMPLE, w * SUPERSAMPLE), np.uint8)
    points = [np.rint((s + 0.5) * scale - (1 << _SHIFT) / 2).astype(np.int32) for s in strokes]
    thickness = max(1, round(width * SUPERSAMPLE))
    cv2.polylines(canvas, points, False, 255, thickness, cv2.LINE_8, _SHIFT)
    small = cv2.resize(canvas, (w, h), interpolation=cv2.INTER_AREA)
    return small.astype(np.float32) / 255.0


def picture(coverage: np.ndarray, film: bool) -> np.ndarray:
    """uint8 RGB (ink on white) or RGBA (ink colour, coverage as alpha), channels in RGB order."""
    c = coverage[..., None]
    if film:
        rgba = np.concatenate([np.broadcast_to(INK, (*c.shape[:2], 3)), c], axis=2)
        rgba[..., :3] *= c > 0  # fully transparent pixels carry colour 0
    else:
        rgba = 1.0 - c * (1.0 - INK)
    return np.clip(np.rint(rgba * 255.0), 0, 255).astype(np.uint8)


def write_shot(out: Path, name: str, width: int, height: int, frames: int) -> Path:
    drawing, film = SHOTS[name]
    folder = out / name
    (folder / "beauty").mkdir(parents=True, exist_ok=True)
    for frame in range(1, frames + 1):
        u = (frame - 1) / max(1, frames - 1)
        strokes = DRAWINGS[drawing](u, width, height)
        image = picture(ink(strokes, width, height, stroke_width(height)), film)
        order = cv2.COLOR_RGBA2BGRA if film else cv2.COLOR_RGB2BGR
        cv2.imwrite(str(folder / "beauty" / f"{frame:04d}.png"), cv2.cvtColor(image, order))
    info = {"shot": name, "width": width, "height": height,
            "frames": list(range(1, frames + 1)), "film": film, "lineart": True}  # fmt: skip
    (folder / "shot.json").write_text(json.dumps(info))
    return folder


def write_shots(out: Path, width: int, height: int, frames: int) -> list[Path]:
    return [write_shot(out, name, width, height, frames) for name in SHOTS]
