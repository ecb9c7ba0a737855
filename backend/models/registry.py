"""What is installed in the user's models folder, and what each job still needs.

The registry scans the folder once (scan.py), on first use or when asked, and answers queries
over that scan: models of a kind, a model by name, and the sentences that say what to install
for a pipeline mode (messages.py). Plain Python: no torch.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from . import messages
from .catalogue import KINDS, PIPELINE_MODES, ModelKind
from .entries import Inventory, ModelEntry, RefusedFile, relative_path, strip_safetensors
from .scan import scan_models_folder


@dataclass(frozen=True)
class Need:
    """One requirement of a job: any model of a kind, a named one, or a ControlNet type."""

    kind: ModelKind
    name: str | None = None
    controlnet_type: str | None = None


class ModelRegistry:
    """`root` is the models folder; `extra` are more folders scanned read-only (a ComfyUI or
    A1111 models tree), whose models are named relative to their own folder (prefixed with the
    folder's name where that name is taken already)."""

    def __init__(self, root: Path | str, extra: Iterable[Path | str] = ()) -> None:
        self.root = Path(root).expanduser().resolve()
        self.extra = tuple(
            dict.fromkeys(r for p in extra if (r := Path(p).expanduser().resolve()) != self.root)
        )
        self._found: Inventory | None = None
        self._lock = threading.Lock()

    def scan(self) -> ModelRegistry:
        found = scan_models_folder(self.root)
        for folder in self.extra:
            found = merge_inventories(found, scan_models_folder(folder))
        with self._lock:
            self._found = found
        return self

    @property
    def roots(self) -> tuple[Path, ...]:
        return (self.root, *self.extra)

    def contains(self, path: Path) -> bool:
        """Whether the resolved `path` lies in the models folder or an extra folder."""
        return any(path == r or r in path.parents for r in self.roots)

    @property
    def inventory(self) -> Inventory:
        """The last scan (scanning now if the folder was never scanned)."""
        if self._found is None:
            self.scan()
        assert self._found is not None
        return self._found

    @property
    def entries(self) -> tuple[ModelEntry, ...]:
        return self.inventory.entries

    @property
    def refused(self) -> tuple[RefusedFile, ...]:
        return self.inventory.refused

    # ---- queries --------------------------------------------------------------------------

    def of_kind(self, kind: ModelKind) -> list[ModelEntry]:
        return self.inventory.of_kind(kind)

    def controlnets(self, controlnet_type: str | None = None) -> list[ModelEntry]:
        nets = self.of_kind(ModelKind.CONTROLNET)
        if controlnet_type is None:
            return nets
        return [e for e in nets if e.controlnet_type == controlnet_type]

    def get(self, name: str, kind: ModelKind | None = None) -> ModelEntry:
        """The entry called `name` (its relative path, or a file/folder name if unambiguous)."""
        found = self.inventory
        pool = found.entries if kind is None else found.of_kind(kind)
        wanted = strip_safetensors(name.strip().replace("\\", "/").strip("/"))
        for entry in pool:
            if entry.name == wanted:
                return entry
        by_stem = [e for e in pool if e.name.rsplit("/", 1)[-1] == wanted]
        if len(by_stem) == 1:
            return by_stem[0]
        raise KeyError(messages.unknown_name(found, name, kind, by_stem))

    def missing_for(
        self,
        pipeline: str,
        needs: Iterable[Need | ModelKind] = (),
        *,
        mode: str | None = None,
    ) -> list[str]:
        """Sentences naming what to install, and where, to run `pipeline` in `mode`.

        `mode` defaults to the pipeline's fullest mode (stylize: video, inbetween: diffusion);
        `needs` adds job-specific requirements (a named checkpoint, a depth ControlNet, ...).
        """
        if pipeline not in PIPELINE_MODES:
            raise ValueError(f"unknown pipeline {pipeline!r}; known: {', '.join(PIPELINE_MODES)}")
        modes = PIPELINE_MODES[pipeline]
        mode = mode or next(iter(modes))
        if mode not in modes:
            raise ValueError(f"unknown mode {mode!r} for {pipeline}; known: {', '.join(modes)}")
        wanted: list[Need] = [Need(kind) for kind in modes[mode]]
        wanted += [n if isinstance(n, Need) else Need(n) for n in needs]
        lines: list[str] = []
        for need in wanted:
            line = self._missing_line(need)
            if line and line not in lines:
                lines.append(line)
        return lines

    def _missing_line(self, need: Need) -> str | None:
        if need.name is not None:
            try:
                self.get(need.name, need.kind)
            except KeyError as exc:
                return str(exc.args[0])
            return None
        installed = self.of_kind(need.kind)
        if need.controlnet_type is not None:
            if any(e.controlnet_type == need.controlnet_type for e in installed):
                return None
            return messages.no_conditioning_type(self.inventory, need.kind, need.controlnet_type)
        if installed:
            return None
        return messages.none_installed(self.inventory, need.kind)

    # ---- GET /v1/models -------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """The body of GET /v1/models."""
        installed = {
            kind.value: [e.to_json(self.root) for e in self.of_kind(kind)] for kind in ModelKind
        }
        pipelines = {pipeline: self._pipeline_json(pipeline) for pipeline in PIPELINE_MODES}
        pipelines["stylize"]["controlnets"] = {
            t: [e.name for e in self.controlnets(t)]
            for t in sorted({e.controlnet_type or "unknown" for e in self.controlnets()})
        }
        return {
            "root": str(self.root),
            "extra": [str(p) for p in self.extra],
            "layout": {kind.value: f"{KINDS[kind].folder}/" for kind in ModelKind},
            "installed": installed,
            "refused": [
                {"path": relative_path(r.path, self.root), "reason": r.reason} for r in self.refused
            ],
            "pipelines": pipelines,
        }

    def _pipeline_json(self, pipeline: str) -> dict[str, Any]:
        modes = PIPELINE_MODES[pipeline]
        per_mode = {
            mode: {
                "needs": [k.value for k in kinds],
                "ready": not (missing := self.missing_for(pipeline, mode=mode)),
                "missing": missing,
            }
            for mode, kinds in modes.items()
        }
        default = per_mode[next(iter(modes))]
        return {
            # top level: the fullest mode (stylize video, inbetween diffusion)
            "mode": next(iter(modes)),
            "ready": default["ready"],
            "missing": default["missing"],
            "modes": per_mode,
        }


def merge_inventories(found: Inventory, more: Inventory) -> Inventory:
    """`found` plus the models of another folder; a name already taken gets the folder's name
    in front (then a number), so every model keeps one unique name."""
    taken = {e.name for e in found.entries}
    added = []
    for entry in more.entries:
        name, n = entry.name, 1
        while name in taken:
            n += 1
            name = (
                f"{more.root.name}/{entry.name}" if n == 2 else f"{more.root.name}{n}/{entry.name}"
            )
        taken.add(name)
        added.append(replace(entry, name=name))
    return Inventory(
        root=found.root,
        entries=tuple(sorted((*found.entries, *added), key=lambda e: (e.kind.value, e.name))),
        refused=tuple(sorted((*found.refused, *more.refused), key=lambda r: str(r.path))),
    )
