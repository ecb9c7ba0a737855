"""Walk a models folder and list what is in it, recognised by content, never by file name.

Plain Python (no torch): diffusers folders are recognised by their JSON configs, single files by
the tensor names in their safetensors header (classify.py). Pickle checkpoints are refused,
listed with a reason and never opened past their first bytes. Nothing the scan lists points
outside the models folder: symlinks are resolved and refused when they leave it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .catalogue import ModelKind
from .classify import (
    check_pipeline_folder,
    check_sd15_cross_attention,
    classify_header,
    conditioning_type,
    folder_kind,
    is_tokenizer_folder,
    weights_stem,
    weights_variant,
)
from .entries import (
    Inventory,
    ModelEntry,
    Refused,
    RefusedFile,
    relative_path,
    strip_safetensors,
)
from .safetensors_header import HeaderError, is_pickle_name, read_checked_header, sniff_pickle
from .sidecars import (
    SIDECAR_NAME,
    metadata_declaration,
    read_json,
    read_sidecar,
    single_file_sidecar,
)
from .wan_folder import WAN_VACE_CLASSES, check_wan_vace_folder

log = logging.getLogger("framesmith.models")

MAX_DEPTH = 12


def scan_models_folder(root: Path) -> Inventory:
    """The models under `root` (sorted by kind and name) and the files refused (by path)."""
    scanner = FolderScanner(root)
    if root.is_dir():
        scanner.scan_dir(root, 0)
    return Inventory(
        root=root,
        entries=tuple(sorted(scanner.entries, key=lambda e: (e.kind.value, e.name))),
        refused=tuple(sorted(scanner.refused, key=lambda r: str(r.path))),
    )


class FolderScanner:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.entries: list[ModelEntry] = []
        self.refused: list[RefusedFile] = []

    def inside(self, path: Path) -> bool:
        return path == self.root or self.root in path.parents

    def scan_dir(self, directory: Path, depth: int) -> None:
        try:
            if self.scan_model_folder(directory):
                return
        except Refused as exc:
            self.refused.append(RefusedFile(directory, str(exc)))
            return
        if depth >= MAX_DEPTH:
            return
        try:
            children = sorted(directory.iterdir(), key=lambda p: p.name)
        except OSError as exc:
            self.refused.append(RefusedFile(directory, f"cannot be read ({exc.strerror})"))
            return
        for child in children:
            if child.name.startswith("."):
                continue
            try:
                self.scan_child(child, depth)
            except Exception as exc:  # one unreadable file never breaks the scan
                log.warning("models folder: %s could not be scanned", child, exc_info=True)
                self.refused.append(RefusedFile(child, f"could not be read ({exc})"[:500]))

    def scan_child(self, child: Path, depth: int) -> None:
        if child.is_symlink():
            target = child.resolve()
            if not self.inside(target):
                self.refused.append(
                    RefusedFile(child, "symlink pointing outside the models folder")
                )
                return
            if target.is_dir():
                return  # scanned where it really is; following it could loop
        if child.is_dir():
            self.scan_dir(child, depth + 1)
        elif child.is_file():
            self.scan_file(child)

    # ---- single files ---------------------------------------------------------------------

    def scan_file(self, path: Path) -> None:
        real = path.resolve()
        # A .zip is an archive a person downloaded, not a torch.save file a loader would open.
        pickle_kind = None if path.suffix.lower() == ".zip" else sniff_pickle(real)
        is_safetensors_name = path.name.lower().endswith(".safetensors")
        if is_pickle_name(path) or pickle_kind:
            what = pickle_kind or f"a pickle checkpoint ({path.suffix})"
            disguise = " disguised as .safetensors" if is_safetensors_name else ""
            self.refused.append(
                RefusedFile(
                    path,
                    f"{what}{disguise}: pickle files can run code when loaded, so Framesmith "
                    "never opens them; use a .safetensors version of this model",
                )
            )
            return
        if not is_safetensors_name:
            return  # READMEs, previews, sidecars, configs
        try:
            header = read_checked_header(real)
        except (HeaderError, OSError) as exc:
            self.refused.append(RefusedFile(path, f"not a valid safetensors file: {exc}"))
            return
        # What the file declares about itself: the safetensors metadata, then a sidecar.
        declared = {
            **metadata_declaration(header.metadata),
            **read_sidecar(single_file_sidecar(path)),
        }
        try:
            kind, config = classify_header(header)
        except Refused as exc:
            self.refused.append(RefusedFile(path, str(exc)))
            return
        name = strip_safetensors(relative_path(path, self.root))
        self.entries.append(
            ModelEntry(
                name=name,
                kind=kind,
                path=real,
                layout="single_file",
                controlnet_type=conditioning_type(kind, name, declared, hints=()),
                size_bytes=real.stat().st_size,
                config=str(declared.get("config") or config or "") or None,
            )
        )

    # ---- diffusers folders ----------------------------------------------------------------

    def scan_model_folder(self, directory: Path) -> bool:
        """Add an entry if `directory` is a diffusers/transformers model folder."""
        model_index = read_json(directory / "model_index.json")
        config = read_json(directory / "config.json")
        tokenizer_config = read_json(directory / "tokenizer_config.json")
        hints: tuple[str, ...] = ()
        if model_index is not None and model_index.get("_class_name") in WAN_VACE_CLASSES:
            kind, variant = ModelKind.WAN_VACE, check_wan_vace_folder(directory)
        elif model_index is not None:
            kind, variant = ModelKind.CHECKPOINT, check_pipeline_folder(directory, model_index)
        elif config is not None and (kind_ := folder_kind(config)) is not None:
            kind = kind_
            if kind in {ModelKind.CONTROLNET, ModelKind.SPARSECTRL}:
                check_sd15_cross_attention(config, "ControlNet")
            variant = weights_variant(directory, weights_stem(kind))
            hints = (str(config.get("_name_or_path", "")),)
        elif tokenizer_config is not None and is_tokenizer_folder(directory):
            kind, variant = ModelKind.TOKENIZER, None
        else:
            return False
        size = self.check_folder_files(directory)
        name = directory.name if directory == self.root else relative_path(directory, self.root)
        self.entries.append(
            ModelEntry(
                name=name,
                kind=kind,
                path=directory.resolve(),
                layout="diffusers",
                controlnet_type=conditioning_type(
                    kind, name, read_sidecar(directory / SIDECAR_NAME), hints
                ),
                size_bytes=size,
                variant=variant,
            )
        )
        return True

    def check_folder_files(self, directory: Path) -> int:
        """Every file a loader could read must stay inside the root and be what it claims."""
        size = 0
        for dirpath, dirnames, filenames in os.walk(directory, followlinks=False):
            here = Path(dirpath)
            for name in list(dirnames):
                link = here / name
                if link.is_symlink() and not self.inside(link.resolve()):
                    raise Refused(f"{self.rel(link)} links outside the models folder")
            for name in filenames:
                file = here / name
                real = file.resolve()
                if not self.inside(real):
                    raise Refused(f"{self.rel(file)} links outside the models folder")
                if name.lower().endswith(".safetensors"):
                    self.check_weights_file(file, real)
                if real.is_file():
                    size += real.stat().st_size
        return size

    def check_weights_file(self, file: Path, real: Path) -> None:
        if sniff_pickle(real):
            raise Refused(f"{self.rel(file)} is a pickle, not safetensors")
        try:
            read_checked_header(real)
        except (HeaderError, OSError) as exc:
            raise Refused(f"{self.rel(file)} is not a valid safetensors file: {exc}") from None

    def rel(self, path: Path) -> str:
        return relative_path(path, self.root)
