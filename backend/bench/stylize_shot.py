"""A synthetic rendered shot with exact passes: a textured ball rolling across a textured wall.

Every pass is what Blender would write for it: beauty (8-bit RGB), depth (float, the wall at a
finite distance), camera-space normals, Freestyle-like line art (white on black) and the Vector
pass made from the exact motion (the ball moves a whole number of pixels per frame, so warping a
frame along the vectors reproduces the next one exactly except where the ball uncovers the wall).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..jobs import Pass
from ..vision.passes import flow_to_vector
from ..vision.png import encode_png

WALL_DEPTH = 10.0
BALL_DEPTH = 4.0  # the ball's centre; its surface bulges towards the camera by up to one radius


@dataclass(frozen=True)
class ShotFrame:
    beauty: np.ndarray  # uint8 HxWx3
    depth: np.ndarray  # float32 HxW
    normal: np.ndarray  # float32 HxWx3, camera space (x right, y up, z to the viewer)
    lineart: np.ndarray  # uint8 HxWx3, white lines on black
    vector: np.ndarray  # float32 HxWx4, Blender's Vector pass

    def encoded(self, p: Pass) -> bytes:
        """The pass as the add-on uploads it: PNG for colour passes, OpenEXR for float passes."""
        if p is Pass.BEAUTY:
            return encode_png(self.beauty)
        if p is Pass.LINEART:
            return encode_png(self.lineart)
        if p is Pass.DEPTH:
            return exr_bytes({"V": self.depth})
        if p is Pass.NORMAL:
            return exr_bytes(dict(zip("XYZ", np.moveaxis(self.normal, 2, 0), strict=True)))
        if p is Pass.VECTOR:
            return exr_bytes(dict(zip("XYZW", np.moveaxis(self.vector, 2, 0), strict=True)))
        raise ValueError(f"the synthetic shot has no {p.value} pass")


@dataclass(frozen=True)
class Shot:
    width: int
    height: int
    count: int
    speed: int  # pixels per frame, to the right

    @cached_property
    def frames(self) -> tuple[ShotFrame, ...]:
        return tuple(self._frame(t) for t in range(self.count))

    def frame(self, t: int) -> ShotFrame:
        """One frame, made now and not kept (`frames` keeps every frame)."""
        return self._frame(t)

    @property
    def radius(self) -> float:
        return 0.2 * min(self.width, self.height)

    def centre(self, t: int) -> tuple[float, float]:
        start = self.radius + 2.0
        return start + self.speed * t, self.height / 2.0

    def _frame(self, t: int) -> ShotFrame:
        h, w, r = self.height, self.width, self.radius
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        cx, cy = self.centre(t)
        dx, dy = xx - cx, yy - cy
        d2 = dx * dx + dy * dy
        inside = d2 < r * r
        bulge = np.sqrt(np.clip(r * r - d2, 0.0, None)) / r  # the sphere's z, 0..1

        wall = np.stack(
            [
                0.55 + 0.25 * np.sin(xx / 3.0) * np.cos(yy / 5.0),
                0.45 + 0.2 * np.cos(xx / 7.0 + yy / 4.0),
                0.35 + 0.15 * np.sin((xx + yy) / 6.0),
            ],
            axis=2,
        )
        # The ball's texture is fixed to the ball (a function of the offset from its centre).
        shade = 0.4 + 0.6 * bulge
        ball = np.stack(
            [
                shade * (0.75 + 0.2 * np.sin(dx / 2.5)),
                shade * (0.3 + 0.2 * np.cos(dy / 2.0)),
                shade * (0.2 + 0.15 * np.sin((dx - dy) / 3.0)),
            ],
            axis=2,
        )
        beauty = np.where(inside[:, :, None], ball, wall)
        depth = np.where(inside, BALL_DEPTH - r / 10.0 * bulge, WALL_DEPTH)
        facing = np.stack([np.zeros_like(xx), np.zeros_like(xx), np.ones_like(xx)], axis=2)
        sphere = np.stack([dx / r, -dy / r, bulge], axis=2)
        normal = np.where(inside[:, :, None], sphere, facing)
        outline = np.abs(np.sqrt(d2) - r) < 1.0
        lineart = np.repeat((outline * 255).astype(np.uint8)[:, :, None], 3, axis=2)

        moving = inside.astype(np.float32)
        zero = np.zeros_like(moving)
        backward = np.stack([-self.speed * moving, zero], axis=2)  # where it was last frame
        forward = np.stack([self.speed * moving, zero], axis=2)  # where it will be next frame
        return ShotFrame(
            beauty=np.clip(np.rint(beauty * 255.0), 0, 255).astype(np.uint8),
            depth=depth.astype(np.float32),
            normal=normal.astype(np.float32),
            lineart=lineart,
            vector=flow_to_vector(backward, forward),
        )


def make_shot(width: int, height: int, count: int) -> Shot:
    """A shot whose ball crosses most of the frame over `count` frames (at least 1 px a frame)."""
    radius = 0.2 * min(width, height)
    room = width - 2.0 * radius - 4.0
    speed = max(1, int(room // max(1, count - 1)))
    return Shot(width, height, count, speed)


def exr_bytes(channels: dict[str, np.ndarray]) -> bytes:
    """Float32 channels -> one single-part scanline OpenEXR file, as Blender's File Output."""
    import OpenEXR

    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    planes = {name: np.ascontiguousarray(v, dtype=np.float32) for name, v in channels.items()}
    out = io.BytesIO()
    OpenEXR.File(header, planes).write(out)
    return out.getvalue()
