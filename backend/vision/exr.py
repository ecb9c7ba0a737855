"""OpenEXR files: the channels of one pass picked from a single- or multilayer file, decoded
into float32, and their values checked (no NaN, no impossible normals or motion vectors)."""

from __future__ import annotations

import io

import numpy as np
import OpenEXR

from ..jobs import InputError, Pass, shortened_list
from .image_headers import ExrHeader, damaged

MAX_NORMAL_LENGTH = 10.0  # a normal is a unit vector; anything this long is corrupt data
MAX_VECTOR_PIXELS = 1e6  # motion vectors are pixel offsets; beyond this they are garbage

FLOAT_PASSES = frozenset({Pass.DEPTH, Pass.NORMAL, Pass.VECTOR})
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


def decode_exr(data: bytes, header: ExrHeader, pass_: Pass, what: str) -> np.ndarray:
    names = _select_exr_channels(tuple(c.name for c in header.channels), pass_, what)
    if pass_ not in FLOAT_PASSES and len(names) <= 2:  # a colour pass stored as Y or Y+A
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
            f"{shortened_list(names, 12)}); expected e.g. {_expected_channels(pass_)}"
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
    return pass_.value if pass_ in FLOAT_PASSES else "colour"


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
                    raise damaged(what, "OpenEXR", "its pixels do not match its header")
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
