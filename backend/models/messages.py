"""The sentences a person reads when a model is missing, misnamed or refused.

Each says what is wrong and what to do: which file to put in which folder of the models folder.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from .catalogue import KINDS, ModelKind
from .entries import Inventory, ModelEntry, relative_path, strip_safetensors

# A kind whose folders, when refused, are named in the "none installed" sentence: a person who
# copied an incomplete download learns what is wrong with it, not only that nothing is there.
_REFUSED_MARK: Mapping[ModelKind, str] = {ModelKind.WAN_VACE: "Wan2.1-VACE"}


def unknown_name(
    found: Inventory, name: str, kind: ModelKind | None, ambiguous: list[ModelEntry]
) -> str:
    """Why no model called `name` (of `kind`) could be picked, and what is there instead."""
    label = KINDS[kind].label if kind else "model"
    title = label[:1].upper() + label[1:]
    if ambiguous:
        names = ", ".join(e.name for e in ambiguous)
        return f"{title} name {name!r} is ambiguous: use one of {names}"
    for refused in found.refused:
        rel = strip_safetensors(relative_path(refused.path, found.root))
        if name in {rel, rel.rsplit("/", 1)[-1]}:
            return f"{title} {name!r} was refused: {refused.reason}"
    if kind is not None:
        other = [e for e in found.entries if e.kind != kind and name in e.short_names()]
        if other:
            return f"{name!r} is a {KINDS[other[0].kind].label}, not a {label}"
        installed = ", ".join(e.name for e in found.of_kind(kind)) or "none"
        folder = found.root / KINDS[kind].folder
        return (
            f"{title} {name!r} is not installed (installed: {installed}); "
            f"put it in {folder}{os.sep}"
        )
    installed = ", ".join(e.name for e in found.entries) or "none"
    return f"no model called {name!r} in {found.root} (installed: {installed})"


def no_conditioning_type(found: Inventory, kind: ModelKind, ctype: str) -> str:
    """No ControlNet (or SparseCtrl model) of conditioning type `ctype` is installed."""
    info = KINDS[kind]
    return (
        f"No {ctype} {info.label} installed: put {info.example.replace('depth', ctype)} in "
        f"{_folder(found, kind)}. Framesmith tells a {info.label}'s type from a name containing "
        f'\'{ctype}\' or a framesmith.json sidecar with {{"controlnet_type": "{ctype}"}}.'
    )


def none_installed(found: Inventory, kind: ModelKind) -> str:
    """No model of `kind` is installed (and, for some kinds, why a candidate was refused)."""
    info = KINDS[kind]
    line = f"No {info.label} installed: put {info.example} in {_folder(found, kind)}."
    mark = _REFUSED_MARK.get(kind)
    refused = [r for r in found.refused if mark is not None and mark in r.reason]
    if refused:
        first = refused[0]
        line += f" {relative_path(first.path, found.root)}/ was refused: {first.reason}."
    return line


def _folder(found: Inventory, kind: ModelKind) -> str:
    return f"{found.root / KINDS[kind].folder}{os.sep}"
