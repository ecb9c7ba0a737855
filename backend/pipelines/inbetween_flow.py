"""Method "flow": in-betweens from optical flow estimated between two keys.

DIS optical flow both ways from matched motion hypotheses, both keys warped to the in-between
and blended by how far each is trusted, a cross-fade where neither is; line art kept in whole
dark strokes; paths bent through neighbouring keys. numpy and OpenCV only.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..vision import lineart
from ..vision.flow import (
    Preset,
    backward_warp,
    consistency_error,
    fill_holes,
    flow_both_ways,
    photometric_error,
    resize_flow,
    shrink,
    to_gray_u8,
)
from ..vision.splat import Splat, premultiply, softmax_splat, unpremultiply

# Softmax importance = -(PHOTO_WEIGHT · colour error + CONSISTENCY_WEIGHT · flow disagreement).
# Colour error is the mean absolute difference in 0..1, the disagreement is in pixels.
PHOTO_WEIGHT = 20.0
CONSISTENCY_WEIGHT = 0.1
IMPORTANCE_FLOOR = -30.0
# Importance added to pixels moving at least FOREGROUND_PX away from the shot's median motion.
# Only as far as its motion is sure: exp(−colour error / FOREGROUND_SURE_ERROR − disagreement
# / FOREGROUND_SURE_PX).
FOREGROUND_BONUS = 4.0
FOREGROUND_PX = 4.0
FOREGROUND_SURE_ERROR = 0.03
FOREGROUND_SURE_PX = 1.0
# A splatted pixel is fully trusted once time-weighted coverage × mean exp(importance) of what
# landed there reaches this; below, it is blended towards the cross-fade (a wrong motion then
# gives a soft blend, not a torn, ghosted splat).
FULL_TRUST = 0.3
# How far a key's pixels are trusted where the other key shows nothing, whatever their checks
# say (0: not at all beyond the checks, 1: fully).
ALONE_TRUST = 0.15
# A neighbouring key bends the path only where its motion brings back this key's colours (mean
# absolute error under this) and its two flows agree (under this many pixels).
CURVE_PHOTO_LIMIT = 0.1
CURVE_FLOW_LIMIT = 8.0
# A drawing's in-between flow is blurred this much (pixels at 192 wide, scaled with the size).
DRAWN_FLOW_SMOOTHING = 2.0
# Motion is estimated on pictures at most this long (1080p: at half size); DIS finds the same
# motion in a quarter of the time, and warping still moves every full-size pixel. A drawing's
# distance image is smooth, and so is its motion: a quarter size is enough.
FLOW_MAX_SIDE = 1024
DRAWN_FLOW_MAX_SIDE = 512


@dataclass(frozen=True)
class Neighbour:
    """The key beyond one end of an interval, for bending the path: its picture, and how far
    it is from that end in units of the interval's length."""

    image: np.ndarray
    span: float


@dataclass(frozen=True)
class Side:
    """One key's pixels on their way through the interval: where each is at time s (0 at this
    key, 1 at the other) is p + s·flow + s·(s − 1)·curve, a straight path when curve is None."""

    work: np.ndarray  # the key, premultiplied when it has alpha
    # The motion, at most FLOW_MAX_SIDE long (the key itself stays full size):
    flow: np.ndarray  # to the other key
    importance: np.ndarray  # softmax splatting importance of each pixel (higher wins)
    curve: np.ndarray | None = None

    def moved(self, s: float) -> np.ndarray:
        if self.curve is None:
            return s * self.flow
        return s * self.flow + (s * (s - 1.0)) * self.curve


def path_curve(flow: np.ndarray, beyond: np.ndarray, span: float, trust: np.ndarray) -> np.ndarray:
    """The quadratic term of a path through three keys: a pixel is at 0 at this key, at flow
    at the other (time 1) and at beyond at the neighbouring key (time −span). Scaled by trust
    (0..1 per pixel) and never longer than the longer of the two steps per unit of time (a
    swing out and back between two keys has a short step but a long curve)."""
    curve = (beyond + span * flow) / (span * (1.0 + span))
    step = np.maximum(np.linalg.norm(flow, axis=2), np.linalg.norm(beyond, axis=2) / span)
    limit = step[..., None] + 1.0
    length = np.linalg.norm(curve, axis=2, keepdims=True)
    curve *= np.minimum(1.0, limit / np.maximum(length, 1e-6))
    return (curve * trust[..., None]).astype(np.float32)


def importance_of(
    src: np.ndarray, dst: np.ndarray, f_sd: np.ndarray, f_ds: np.ndarray
) -> np.ndarray:
    """Splatting importance of src's pixels: low where the colour they land on in dst differs
    (0..1 mean absolute) or where the two flows disagree (pixels)."""
    photo = photometric_error(src, dst, f_sd)
    disagreement = consistency_error(f_sd, f_ds)
    score = -(PHOTO_WEIGHT * photo + CONSISTENCY_WEIGHT * disagreement)
    score = np.maximum(score, IMPORTANCE_FLOOR)
    # Where a moving thing and the still background land together, both matched their keys
    # equally well; the one moving against the shot's main motion is taken to be in front, but
    # only where its own motion is sure (it matched, and the two flows agree).
    dominant = np.median(f_sd.reshape(-1, 2), axis=0)
    apart = np.clip(np.linalg.norm(f_sd - dominant, axis=2) / FOREGROUND_PX, 0.0, 1.0)
    sure = np.exp(-photo / FOREGROUND_SURE_ERROR - disagreement / FOREGROUND_SURE_PX)
    return (score + FOREGROUND_BONUS * apart * sure).astype(np.float32)


class FlowInterpolator:
    """Frames between two keys (same layout, straight alpha) from estimated motion.

    Motion: DIS both ways, started from matched rigid-motion hypotheses (vision.motion), at
    most FLOW_MAX_SIDE long. For each in-between both keys' motions are reversed to the
    in-between (splatted there, holes filled) and both keys warped backward, so nothing
    cracks. Pictures: the two warps are blended by time, coverage and how sure each motion is,
    falling back to a cross-fade where neither is trusted. Line art (lineart.detect): motion
    estimated on the strokes' distance images and the nearer key's strokes kept whole and dark.
    With a neighbouring key beyond an end, that end's paths bend through it. Motion is
    estimated once, on the first frame asked for.
    """

    def __init__(
        self,
        key0: np.ndarray,
        key1: np.ndarray,
        preset: Preset = "medium",
        before: Neighbour | None = None,
        after: Neighbour | None = None,
    ) -> None:
        self.key0, self.key1 = key0, key1
        self.preset = preset
        self.before, self.after = before, after
        self.has_alpha = key0.shape[2] == 4
        self.same = bool(np.array_equal(key0, key1))
        self.paper = lineart.detect(key0, key1)
        self._sides: tuple[Side, Side] | None = None

    @property
    def _flow_side(self) -> int:
        return FLOW_MAX_SIDE if self.paper is None else DRAWN_FLOW_MAX_SIDE

    def _picture(self, image: np.ndarray) -> np.ndarray:
        """The 8-bit picture motion is estimated on, at most _flow_side long."""
        if self.paper is None:
            picture = to_gray_u8(image)
        else:
            picture = lineart.flow_picture(image, self.paper, lineart.reach_for(image.shape))
        return shrink(picture, self._flow_side)

    def _work(self, image: np.ndarray) -> np.ndarray:
        return premultiply(image) if self.has_alpha else image

    def sides(self) -> tuple[Side, Side]:
        """(key 0's side, key 1's side), estimated on the first call."""
        if self._sides is None:
            g0, g1 = self._picture(self.key0), self._picture(self.key1)
            # Pictures are refined down to full resolution; a drawing's distance image is
            # smooth, and finer steps only add noise along its strokes.
            f01, f10 = flow_both_ways(g0, g1, self.preset, fine=self.paper is None)
            c0 = self._curve(g0, f01, self.before)
            c1 = self._curve(g1, f10, self.after)
            w0, w1 = self._work(self.key0), self._work(self.key1)
            small0, small1 = shrink(w0, self._flow_side), shrink(w1, self._flow_side)
            imp0 = importance_of(small0, small1, f01, f10)
            imp1 = importance_of(small1, small0, f10, f01)
            self._sides = (Side(w0, f01, imp0, c0), Side(w1, f10, imp1, c1))
        return self._sides

    def _curve(
        self, picture: np.ndarray, flow: np.ndarray, neighbour: Neighbour | None
    ) -> np.ndarray | None:
        if neighbour is None or neighbour.image.shape != self.key0.shape:
            return None
        beyond_picture = self._picture(neighbour.image)
        beyond, back = flow_both_ways(picture, beyond_picture, self.preset, fine=self.paper is None)
        # Trust the neighbour's motion where it brings back what this key shows.
        error = photometric_error(_unit(picture), _unit(beyond_picture), beyond)
        trust = np.clip(1.0 - error / CURVE_PHOTO_LIMIT, 0.0, 1.0)
        trust *= np.clip(1.0 - consistency_error(beyond, back) / CURVE_FLOW_LIMIT, 0.0, 1.0)
        return path_curve(flow, beyond, neighbour.span, trust)

    def at(self, s: float) -> np.ndarray:
        """The frame at time s in (0, 1) between the keys, straight alpha, float 0..1."""
        if self.same:
            return self.key0
        side0, side1 = self.sides()
        if self.paper is not None:
            result = self._drawn(side0, side1, s)
        else:
            result = self._splatted(side0, side1, s)
        result = np.clip(result, 0.0, 1.0).astype(np.float32)
        return unpremultiply(result) if self.has_alpha else result

    def _splatted(self, side0: Side, side1: Side, s: float) -> np.ndarray:
        h, w = side0.work.shape[:2]
        flow0, landed0 = _reversed(side0, s)
        flow1, landed1 = _reversed(side1, 1.0 - s)
        seen0, sure0 = _seen_and_sure(landed0, w, h)
        seen1, sure1 = _seen_and_sure(landed1, w, h)
        # A key's pixels here count by how far it is in time, how much of it lands here and
        # how sure its motion is; where the other key shows nothing (a region only this key
        # sees, whose pixels fail the checks for being hidden in the other), partly regardless.
        trust0 = seen0 * (sure0 + ALONE_TRUST * (1.0 - seen1) * (1.0 - sure0))
        trust1 = seen1 * (sure1 + ALONE_TRUST * (1.0 - seen0) * (1.0 - sure1))
        w0 = ((1.0 - s) * trust0)[..., None]
        w1 = (s * trust1)[..., None]
        total = w0 + w1
        safe = np.where(total > 0.0, total, 1.0)
        warped0 = backward_warp(side0.work, resize_flow(flow0, w, h))
        warped1 = backward_warp(side1.work, resize_flow(flow1, w, h))
        mixed = (w0 * warped0 + w1 * warped1) / safe
        # Where neither key is trusted, a cross-fade: a wrong motion then gives a soft blend,
        # not a torn, ghosted picture.
        trust = np.clip(total / FULL_TRUST, 0.0, 1.0)
        fallback = (1.0 - s) * side0.work + s * side1.work
        return trust * mixed + (1.0 - trust) * fallback

    def _drawn(self, side0: Side, side1: Side, s: float) -> np.ndarray:
        assert self.paper is not None
        warped0 = backward_warp(side0.work, _drawn_flow(side0, s))
        warped1 = backward_warp(side1.work, _drawn_flow(side1, 1.0 - s))
        if s <= 0.5:
            return lineart.composite(warped0, warped1, self.paper)
        return lineart.composite(warped1, warped0, self.paper)


def _reversed(side: Side, s: float) -> tuple[np.ndarray, Splat]:
    """(backward flow from the in-between at s to the side's key, what of the key landed there)
    at the motion's own size (motion is smooth; warping with it still reads every full-size
    pixel): each key pixel's motion is splatted to where it is at s and the holes are filled
    from around, so that warping leaves no cracks."""
    moved = side.moved(s)
    landed = softmax_splat(-moved, moved, side.importance)
    return fill_holes(landed.image, np.clip(landed.coverage / 0.5, 0.0, 1.0)), landed


def _seen_and_sure(landed: Splat, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    """At full size: how much of a key lands on each pixel (0..1), and how sure the motion of
    what landed is (mean exp(importance), 0..1)."""
    covered = landed.coverage > 1e-3
    sure = np.divide(landed.weight, landed.coverage, out=np.zeros_like(landed.weight),
                     where=covered).astype(np.float32)  # fmt: skip
    seen = np.minimum(landed.coverage, 1.0).astype(np.float32)
    if seen.shape != (h, w):
        seen = cv2.resize(seen, (w, h), interpolation=cv2.INTER_LINEAR)
        sure = cv2.resize(sure, (w, h), interpolation=cv2.INTER_LINEAR)
    return seen, sure


def _drawn_flow(side: Side, s: float) -> np.ndarray:
    """A drawing's backward flow at full size, blurred to remove the ripples that would kink
    or break a warped stroke."""
    h, w = side.work.shape[:2]
    flow, _ = _reversed(side, s)
    sigma = DRAWN_FLOW_SMOOTHING * max(flow.shape[:2]) / 192.0
    return resize_flow(cv2.GaussianBlur(flow, (0, 0), sigma), w, h)


def _unit(picture: np.ndarray) -> np.ndarray:
    return picture.astype(np.float32)[..., None] / 255.0
