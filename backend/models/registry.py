"""What is installed in the user's models folder, recognised by content, never by file name.

Plain Python (no torch): diffusers folders are recognised by their JSON configs, single files by
the tensor names in their safetensors header. Pickle checkpoints are refused, listed with a
reason and never opened past their first bytes. Nothing reachable from the registry points
outside the models folder: symlinks are resolved and refused when they leave it.

Recommended layout (scanning is recursive and ignores it; it is where messages send people):

    <models>/checkpoints/   SD1.5-family base models
    <models>/controlnet/    ControlNets (depth, normal, lineart, ...)
    <models>/motion/        AnimateDiff motion modules
    <models>/sparsectrl/    AnimateDiff SparseCtrl models
    <models>/lora/          LoRAs
    <models>/ip_adapter/    IP-Adapters (.safetensors) and their CLIP image encoder folder
    <models>/tokenizer/     the CLIP tokenizer, needed by single-file checkpoints
    <models>/wan/           Wan2.1-VACE diffusers folders (the video model of engine wan_vace)
"""

from __future__ import annotations

import enum
import json
import logging
import os
import re
import struct
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .safetensors_header import (
    HeaderError,
    SafetensorsHeader,
    is_pickle_name,
    read_header,
    sniff_pickle,
)

log = logging.getLogger("framesmith.models")

SKELETONS_DIR = Path(__file__).resolve().parent / "configs"
SIDECAR_NAME = "framesmith.json"
SIDECAR_SUFFIX = ".framesmith.json"
METADATA_KEY = "framesmith"
MAX_DEPTH = 12
MAX_JSON_BYTES = 4 * 1024 * 1024


class ModelKind(enum.StrEnum):
    CHECKPOINT = "checkpoint"
    CONTROLNET = "controlnet"
    MOTION_ADAPTER = "motion_adapter"
    SPARSECTRL = "sparsectrl"
    LORA = "lora"
    IP_ADAPTER = "ip_adapter"
    IMAGE_ENCODER = "image_encoder"
    TOKENIZER = "tokenizer"
    WAN_VACE = "wan_vace"


@dataclass(frozen=True)
class KindInfo:
    label: str  # "motion adapter": for sentences
    folder: str  # recommended sub-folder
    example: str  # what to put there


KINDS: Mapping[ModelKind, KindInfo] = {
    ModelKind.CHECKPOINT: KindInfo(
        "checkpoint",
        "checkpoints",
        "an SD1.5-family checkpoint (a single .safetensors such as "
        "v1-5-pruned-emaonly.safetensors, or a diffusers folder with model_index.json)",
    ),
    ModelKind.CONTROLNET: KindInfo(
        "ControlNet",
        "controlnet",
        "an SD1.5 ControlNet (e.g. control_v11f1p_sd15_depth.safetensors or a diffusers "
        "ControlNetModel folder)",
    ),
    ModelKind.MOTION_ADAPTER: KindInfo(
        "motion adapter",
        "motion",
        "an AnimateDiff motion module (e.g. mm_sd_v15_v2.safetensors or a diffusers "
        "MotionAdapter folder)",
    ),
    ModelKind.SPARSECTRL: KindInfo(
        "SparseCtrl model",
        "sparsectrl",
        "an AnimateDiff SparseCtrl model (a diffusers SparseControlNetModel folder such as "
        "animatediff-sparsectrl-rgb)",
    ),
    ModelKind.LORA: KindInfo("LoRA", "lora", "an SD1.5 LoRA (.safetensors)"),
    ModelKind.IP_ADAPTER: KindInfo(
        "IP-Adapter", "ip_adapter", "an SD1.5 IP-Adapter (e.g. ip-adapter_sd15.safetensors)"
    ),
    ModelKind.IMAGE_ENCODER: KindInfo(
        "image encoder",
        "ip_adapter",
        "the IP-Adapter CLIP image encoder (a diffusers/transformers folder)",
    ),
    ModelKind.TOKENIZER: KindInfo(
        "CLIP tokenizer",
        "tokenizer",
        "the tokenizer/ folder of Stable Diffusion 1.5 (vocab.json, merges.txt, "
        "tokenizer_config.json, special_tokens_map.json)",
    ),
    ModelKind.WAN_VACE: KindInfo(
        "Wan2.1-VACE model",
        "wan",
        "a Wan2.1-VACE diffusers folder (e.g. Wan2.1-VACE-1.3B-diffusers, with transformer/, "
        "vae/, text_encoder/, tokenizer/, scheduler/ and model_index.json)",
    ),
}

# What each pipeline mode needs. The first mode of each pipeline is the default of missing_for.
PIPELINE_MODES: Mapping[str, Mapping[str, tuple[ModelKind, ...]]] = {
    "stylize": {
        "video": (ModelKind.CHECKPOINT, ModelKind.MOTION_ADAPTER),
        "per_frame": (ModelKind.CHECKPOINT,),
        "wan_vace": (ModelKind.WAN_VACE,),
    },
    "inbetween": {
        "diffusion": (ModelKind.CHECKPOINT, ModelKind.MOTION_ADAPTER, ModelKind.SPARSECTRL),
        "flow": (),
    },
}

# Conditioning types a ControlNet may have, and the name fragments that hint at them. Order
# matters: the first match wins ("lineart" before "line", "softedge" before "edge").
CONTROLNET_TYPES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("depth", ("depth", "midas", "zoe")),
    ("normal", ("normal", "normalbae", "nrm")),
    ("lineart", ("lineart", "line", "freestyle")),
    ("canny", ("canny",)),
    ("softedge", ("softedge", "hed", "pidi")),
    ("scribble", ("scribble", "sketch")),
    ("openpose", ("openpose", "pose")),
    ("segmentation", ("seg",)),
    ("mlsd", ("mlsd",)),
    ("tile", ("tile",)),
    ("inpaint", ("inpaint",)),
    ("ip2p", ("ip2p",)),
    ("shuffle", ("shuffle",)),
    ("rgb", ("rgb",)),
)
KNOWN_CONTROLNET_TYPES = frozenset(t for t, _ in CONTROLNET_TYPES)

_SD_PIPELINE_CLASSES = frozenset(
    {
        "StableDiffusionPipeline",
        "StableDiffusionImg2ImgPipeline",
        "StableDiffusionControlNetPipeline",
        "LatentConsistencyModelPipeline",
        "AnimateDiffPipeline",
    }
)


@dataclass(frozen=True)
class ModelEntry:
    name: str  # path relative to the models folder, posix, without ".safetensors"
    kind: ModelKind
    path: Path  # resolved, inside the models folder
    layout: Literal["diffusers", "single_file"]
    controlnet_type: str | None  # ControlNet / SparseCtrl conditioning ("depth", "rgb", ...)
    size_bytes: int
    variant: str | None = None  # diffusers weight variant ("fp16") when only that one exists
    config: str | None = None  # single files: the shipped config skeleton to load them with

    def to_json(self, root: Path) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind.value,
            "path": _relative(self.path, root),
            "layout": self.layout,
            "controlnet_type": self.controlnet_type,
            "size_bytes": self.size_bytes,
            "variant": self.variant,
        }


@dataclass(frozen=True)
class RefusedFile:
    path: Path  # as found under the models folder (not resolved)
    reason: str


@dataclass(frozen=True)
class Need:
    """One requirement of a job: any model of a kind, a named one, or a ControlNet type."""

    kind: ModelKind
    name: str | None = None
    controlnet_type: str | None = None


class _Refused(Exception):
    pass


class ModelRegistry:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).expanduser().resolve()
        self._entries: tuple[ModelEntry, ...] = ()
        self._refused: tuple[RefusedFile, ...] = ()
        self._scanned = False
        self._lock = threading.Lock()

    # ---- scanning -------------------------------------------------------------------------

    def scan(self) -> ModelRegistry:
        entries: list[ModelEntry] = []
        refused: list[RefusedFile] = []
        if self.root.is_dir():
            _Scanner(self.root, entries, refused).scan_dir(self.root, 0)
        entries.sort(key=lambda e: (e.kind.value, e.name))
        refused.sort(key=lambda r: str(r.path))
        with self._lock:
            self._entries, self._refused, self._scanned = tuple(entries), tuple(refused), True
        return self

    def _ensure_scanned(self) -> None:
        if not self._scanned:
            self.scan()

    @property
    def entries(self) -> tuple[ModelEntry, ...]:
        self._ensure_scanned()
        return self._entries

    @property
    def refused(self) -> tuple[RefusedFile, ...]:
        self._ensure_scanned()
        return self._refused

    # ---- queries --------------------------------------------------------------------------

    def of_kind(self, kind: ModelKind) -> list[ModelEntry]:
        return [e for e in self.entries if e.kind == kind]

    def controlnets(self, controlnet_type: str | None = None) -> list[ModelEntry]:
        nets = self.of_kind(ModelKind.CONTROLNET)
        if controlnet_type is None:
            return nets
        return [e for e in nets if e.controlnet_type == controlnet_type]

    def get(self, name: str, kind: ModelKind | None = None) -> ModelEntry:
        """The entry called `name` (its relative path, or a file/folder name if unambiguous)."""
        pool = self.entries if kind is None else self.of_kind(kind)
        wanted = _strip_safetensors(name.strip().replace("\\", "/").strip("/"))
        for entry in pool:
            if entry.name == wanted:
                return entry
        by_stem = [e for e in pool if e.name.rsplit("/", 1)[-1] == wanted]
        if len(by_stem) == 1:
            return by_stem[0]
        raise KeyError(self._unknown_name_message(name, kind, by_stem))

    def _unknown_name_message(
        self, name: str, kind: ModelKind | None, ambiguous: list[ModelEntry]
    ) -> str:
        label = KINDS[kind].label if kind else "model"
        title = label[:1].upper() + label[1:]
        if ambiguous:
            names = ", ".join(e.name for e in ambiguous)
            return f"{title} name {name!r} is ambiguous: use one of {names}"
        for refused in self.refused:
            rel = _strip_safetensors(_relative(refused.path, self.root))
            if name in {rel, rel.rsplit("/", 1)[-1]}:
                return f"{title} {name!r} was refused: {refused.reason}"
        if kind is not None:
            other = [e for e in self.entries if e.kind != kind and name in _names(e)]
            if other:
                return f"{name!r} is a {KINDS[other[0].kind].label}, not a {label}"
            installed = ", ".join(e.name for e in self.of_kind(kind)) or "none"
            folder = self.root / KINDS[kind].folder
            return (
                f"{title} {name!r} is not installed (installed: {installed}); "
                f"put it in {folder}{os.sep}"
            )
        installed = ", ".join(e.name for e in self.entries) or "none"
        return f"no model called {name!r} in {self.root} (installed: {installed})"

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
        info = KINDS[need.kind]
        folder = f"{self.root / info.folder}{os.sep}"
        if need.name is not None:
            try:
                self.get(need.name, need.kind)
            except KeyError as exc:
                return str(exc.args[0])
            return None
        if need.controlnet_type is not None:
            kind_entries = self.of_kind(need.kind)
            if any(e.controlnet_type == need.controlnet_type for e in kind_entries):
                return None
            t = need.controlnet_type
            return (
                f"No {t} {info.label} installed: put {info.example.replace('depth', t)} in "
                f"{folder}. Framesmith tells a {info.label}'s type from a name containing "
                f'\'{t}\' or a framesmith.json sidecar with {{"controlnet_type": "{t}"}}.'
            )
        if self.of_kind(need.kind):
            return None
        line = f"No {info.label} installed: put {info.example} in {folder}."
        mark = _REFUSED_MARK.get(need.kind)
        refused = [r for r in self.refused if mark is not None and mark in r.reason]
        if refused:
            first = refused[0]
            line += f" {_relative(first.path, self.root)}/ was refused: {first.reason}."
        return line

    def to_json(self) -> dict[str, Any]:
        """The body of GET /v1/models."""
        installed = {
            kind.value: [e.to_json(self.root) for e in self.of_kind(kind)] for kind in ModelKind
        }
        pipelines: dict[str, Any] = {}
        for pipeline, modes in PIPELINE_MODES.items():
            per_mode = {
                mode: {
                    "needs": [k.value for k in kinds],
                    "ready": not (missing := self.missing_for(pipeline, mode=mode)),
                    "missing": missing,
                }
                for mode, kinds in modes.items()
            }
            default = per_mode[next(iter(modes))]
            pipelines[pipeline] = {
                # top level: the fullest mode (stylize video, inbetween diffusion)
                "mode": next(iter(modes)),
                "ready": default["ready"],
                "missing": default["missing"],
                "modes": per_mode,
            }
        pipelines["stylize"]["controlnets"] = {
            t: [e.name for e in self.controlnets(t)]
            for t in sorted({e.controlnet_type or "unknown" for e in self.controlnets()})
        }
        return {
            "root": str(self.root),
            "layout": {kind.value: f"{KINDS[kind].folder}/" for kind in ModelKind},
            "installed": installed,
            "refused": [
                {"path": _relative(r.path, self.root), "reason": r.reason} for r in self.refused
            ],
            "pipelines": pipelines,
        }


# ---- the scan -----------------------------------------------------------------------------


class _Scanner:
    def __init__(self, root: Path, entries: list[ModelEntry], refused: list[RefusedFile]):
        self.root = root
        self.entries = entries
        self.refused = refused

    def inside(self, path: Path) -> bool:
        return path == self.root or self.root in path.parents

    def scan_dir(self, directory: Path, depth: int) -> None:
        try:
            if self.scan_model_folder(directory):
                return
        except _Refused as exc:
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
            **_metadata_declaration(header.metadata),
            **_read_sidecar(path.with_name(_strip_safetensors(path.name) + SIDECAR_SUFFIX)),
        }
        try:
            kind, config = _classify_header(header)
        except _Refused as exc:
            self.refused.append(RefusedFile(path, str(exc)))
            return
        name = _strip_safetensors(_relative(path, self.root))
        self.entries.append(
            ModelEntry(
                name=name,
                kind=kind,
                path=real,
                layout="single_file",
                controlnet_type=_conditioning_type(kind, name, declared, hints=()),
                size_bytes=real.stat().st_size,
                config=str(declared.get("config") or config or "") or None,
            )
        )

    # ---- diffusers folders ----------------------------------------------------------------

    def scan_model_folder(self, directory: Path) -> bool:
        """Add an entry if `directory` is a diffusers/transformers model folder."""
        model_index = _read_json(directory / "model_index.json")
        config = _read_json(directory / "config.json")
        tokenizer_config = _read_json(directory / "tokenizer_config.json")
        if model_index is not None and model_index.get("_class_name") in WAN_VACE_CLASSES:
            kind, variant, hints = ModelKind.WAN_VACE, check_wan_vace_folder(directory), ()
        elif model_index is not None:
            kind, variant = ModelKind.CHECKPOINT, self.check_pipeline_folder(directory, model_index)
            hints = ()
        elif config is not None and (kind_ := _folder_kind(config)) is not None:
            kind = kind_
            if kind in {ModelKind.CONTROLNET, ModelKind.SPARSECTRL}:
                _check_sd15_cross_attention(config, "ControlNet")
            variant = _weights_variant(directory, _weights_stem(kind))
            hints = (str(config.get("_name_or_path", "")),)
        elif tokenizer_config is not None and _is_tokenizer_folder(directory):
            kind, variant, hints = ModelKind.TOKENIZER, None, ()
        else:
            return False
        size = self.check_folder_files(directory)
        name = directory.name if directory == self.root else _relative(directory, self.root)
        self.entries.append(
            ModelEntry(
                name=name,
                kind=kind,
                path=directory.resolve(),
                layout="diffusers",
                controlnet_type=_conditioning_type(
                    kind, name, _read_sidecar(directory / SIDECAR_NAME), hints
                ),
                size_bytes=size,
                variant=variant,
            )
        )
        return True

    def check_pipeline_folder(self, directory: Path, model_index: Mapping[str, Any]) -> str | None:
        cls = str(model_index.get("_class_name", ""))
        if "XL" in cls or "3" in cls or "Flux" in cls:
            raise _Refused(f"a {cls} folder: Framesmith runs SD1.5-family models only")
        if cls not in _SD_PIPELINE_CLASSES:
            raise _Refused(f"a {cls or 'unknown'} pipeline folder, not an SD1.5-family checkpoint")
        for component in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
            if component not in model_index or not (directory / component).is_dir():
                raise _Refused(f"incomplete diffusers checkpoint: no {component}/ folder")
        unet = _read_json(directory / "unet" / "config.json") or {}
        if unet.get("in_channels", 4) != 4:
            raise _Refused(
                f"an inpainting/edit checkpoint ({unet.get('in_channels')}-channel UNet): "
                "Framesmith needs a plain SD1.5-family checkpoint"
            )
        if unet.get("addition_embed_type") == "text_time":
            raise _Refused("an SDXL checkpoint: Framesmith runs SD1.5-family models only")
        _check_sd15_cross_attention(unet, "checkpoint")
        variants = {
            _weights_variant(directory / "unet", "diffusion_pytorch_model"),
            _weights_variant(directory / "vae", "diffusion_pytorch_model"),
            _weights_variant(directory / "text_encoder", "model"),
        }
        if len(variants) > 1:
            raise _Refused("its unet, vae and text_encoder weights have different variants")
        return variants.pop()

    def check_folder_files(self, directory: Path) -> int:
        """Every file a loader could read must stay inside the root and be what it claims."""
        size = 0
        for dirpath, dirnames, filenames in os.walk(directory, followlinks=False):
            here = Path(dirpath)
            for name in list(dirnames):
                link = here / name
                if link.is_symlink() and not self.inside(link.resolve()):
                    raise _Refused(f"{_relative(link, self.root)} links outside the models folder")
            for name in filenames:
                file = here / name
                real = file.resolve()
                if not self.inside(real):
                    raise _Refused(f"{_relative(file, self.root)} links outside the models folder")
                if name.lower().endswith(".safetensors"):
                    if sniff_pickle(real):
                        raise _Refused(f"{_relative(file, self.root)} is a pickle, not safetensors")
                    try:
                        read_checked_header(real)
                    except (HeaderError, OSError) as exc:
                        raise _Refused(
                            f"{_relative(file, self.root)} is not a valid safetensors file: {exc}"
                        ) from None
                if real.is_file():
                    size += real.stat().st_size
        return size


# ---- hostile files --------------------------------------------------------------------------


def read_checked_header(path: Path) -> SafetensorsHeader:
    """read_header, plus what a hostile file can do to it: every failure is a HeaderError whose
    text says what is wrong, and a file the safetensors loader would refuse is refused here."""
    try:
        header = read_header(path)
        _check_tensor_ranges(path)
    except RecursionError:
        raise HeaderError("its header is JSON nested deeper than any model's") from None
    except MemoryError:
        raise HeaderError("its header is too large to read") from None
    except HeaderError:
        raise
    except ValueError as exc:  # e.g. an integer longer than Python converts (4300 digits)
        raise HeaderError(f"its header holds a value that cannot be read ({exc})") from None
    return header


def _check_tensor_ranges(path: Path) -> None:
    """The tensors' byte ranges must tile the data exactly, as the safetensors loader demands:
    sorted by offset, each starting where the previous ended, the last ending at the file's end.
    Overlaps, gaps and trailing bytes are refused. Reads the (already validated) header again:
    read_header keeps no offsets."""
    size = path.stat().st_size
    with path.open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n).decode("utf-8"))
    ranges = sorted(
        (tuple(value["data_offsets"]), key)
        for key, value in header.items()
        if key != "__metadata__"
    )
    end = 0
    for (start, stop), key in ranges:
        if start != end:
            what = "overlaps another tensor" if start < end else "leaves a gap before it"
            raise HeaderError(f"tensor {key!r} {what} (bytes {start} to {stop})")
        end = stop
    if end != size - 8 - n:
        raise HeaderError(f"{size - 8 - n - end} bytes after the last tensor belong to none")


# ---- classification -----------------------------------------------------------------------


def _classify_header(header: SafetensorsHeader) -> tuple[ModelKind, str | None]:
    """(kind, default config skeleton) of a single safetensors file, from its tensor names."""
    keys = list(header.tensors)
    if not keys:
        raise _Refused("an empty safetensors file")

    def has(fragment: str) -> bool:
        return any(fragment in k for k in keys)

    def starts(*prefixes: str) -> bool:
        return any(k.startswith(prefixes) for k in keys)

    lora = starts("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_") or any(
        re.search(r"[._]lora(_[AB]|_down|_up|\.down|\.up|_linear_layer)[._]", k) for k in keys
    )
    if lora:
        if has("motion_modules"):
            raise _Refused("an AnimateDiff motion LoRA: not supported yet")
        if starts("lora_te2_", "lora_unet_input_blocks_4_1_transformer_blocks_1"):
            raise _Refused("an SDXL LoRA: Framesmith runs SD1.5-family models only")
        return ModelKind.LORA, None
    if starts("image_proj.") and starts("ip_adapter."):
        return ModelKind.IP_ADAPTER, None
    if starts("model.diffusion_model."):
        return ModelKind.CHECKPOINT, _checkpoint_config(header, keys)
    if has("input_hint_block."):
        _check_context_dim(header, keys, "ControlNet")
        return ModelKind.CONTROLNET, "sd15-controlnet"
    # SparseCtrl RGB's "simplified" condition embedding is a single conv with no conv_in.
    if {"controlnet_cond_embedding.conv_in.weight", "controlnet_cond_embedding.weight"} & set(keys):
        if starts("add_embedding."):
            raise _Refused("an SDXL ControlNet: Framesmith runs SD1.5-family models only")
        _check_context_dim(header, keys, "ControlNet")
        if has(".motion_modules."):
            return ModelKind.SPARSECTRL, None
        return ModelKind.CONTROLNET, "sd15-controlnet"
    if has(".motion_modules.") and starts("down_blocks.", "mid_block.", "up_blocks."):
        return ModelKind.MOTION_ADAPTER, "sd15-motion-adapter-v2"
    sample = ", ".join(sorted(keys)[:3])
    raise _Refused(f"safetensors content Framesmith does not recognise (tensors such as {sample})")


def _checkpoint_config(header: SafetensorsHeader, keys: list[str]) -> str | None:
    if any(k.startswith("conditioner.embedders.") for k in keys):
        raise _Refused("an SDXL checkpoint: Framesmith runs SD1.5-family models only")
    if any(k.startswith("cond_stage_model.model.") for k in keys):
        raise _Refused(
            "a Stable Diffusion 2.x checkpoint: Framesmith runs SD1.5-family models only"
        )
    for part, what in (
        ("first_stage_model.", "VAE"),
        ("cond_stage_model.transformer.", "CLIP text encoder"),
    ):
        if not any(k.startswith(part) for k in keys):
            raise _Refused(f"an incomplete checkpoint (no {what} inside): use a full checkpoint")
    conv_in = header.shape("model.diffusion_model.input_blocks.0.0.weight")
    if conv_in is not None and len(conv_in) == 4 and conv_in[1] != 4:
        raise _Refused(
            f"an inpainting/edit checkpoint ({conv_in[1]}-channel UNet): "
            "Framesmith needs a plain SD1.5-family checkpoint"
        )
    _check_context_dim(header, keys, "checkpoint")
    if conv_in is not None and conv_in[0] == 320:
        return "sd15"
    return None


def _check_context_dim(header: SafetensorsHeader, keys: list[str], what: str) -> None:
    for key in keys:
        if key.endswith("attn2.to_k.weight"):
            shape = header.shape(key) or ()
            if len(shape) == 2 and shape[1] in (1024, 2048):
                family = "Stable Diffusion 2.x" if shape[1] == 1024 else "SDXL"
                raise _Refused(f"a {family} {what}: Framesmith runs SD1.5-family models only")
            return


def _check_sd15_cross_attention(config: Mapping[str, Any], what: str) -> None:
    dim = config.get("cross_attention_dim")
    if dim in (1024, 2048):
        family = "Stable Diffusion 2.x" if dim == 1024 else "SDXL"
        raise _Refused(f"a {family} {what}: Framesmith runs SD1.5-family models only")


def _folder_kind(config: Mapping[str, Any]) -> ModelKind | None:
    cls = config.get("_class_name")
    kinds = {
        "ControlNetModel": ModelKind.CONTROLNET,
        "MotionAdapter": ModelKind.MOTION_ADAPTER,
        "SparseControlNetModel": ModelKind.SPARSECTRL,
    }
    if cls in kinds:
        return kinds[cls]
    if cls == "ControlNetXSAdapter" or cls == "ControlNetUnionModel":
        raise _Refused(f"a {cls} folder: not supported")
    architectures = config.get("architectures") or []
    if "CLIPVisionModelWithProjection" in architectures:
        return ModelKind.IMAGE_ENCODER
    return None


def _weights_stem(kind: ModelKind) -> str:
    return "model" if kind == ModelKind.IMAGE_ENCODER else "diffusion_pytorch_model"


def _weights_variant(directory: Path, stem: str) -> str | None:
    """None for plain safetensors weights, e.g. "fp16" when only that variant exists."""
    if (directory / f"{stem}.safetensors").is_file() or (
        directory / f"{stem}.safetensors.index.json"
    ).is_file():
        return None
    variants = sorted(
        p.name[len(stem) + 1 : -len(".safetensors")]
        for p in directory.glob(f"{stem}.*.safetensors")
        if "-of-" not in p.name
    )
    if variants:
        return "fp16" if "fp16" in variants else variants[0]
    pickles = (
        [p.name for p in directory.iterdir() if is_pickle_name(p)] if directory.is_dir() else []
    )
    if pickles:
        raise _Refused(
            f"{directory.name}/ holds its weights only as pickle files ({', '.join(pickles)}): "
            "Framesmith loads .safetensors weights only"
        )
    raise _Refused(f"{directory.name}/ has no {stem}.safetensors weights")


WAN_VACE_CLASSES = frozenset({"WanVACEPipeline"})
WAN_VACE_PARTS = ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")
# A kind whose folders, when refused, are named in the "none installed" sentence: a person who
# copied an incomplete download learns what is wrong with it, not only that nothing is there.
_REFUSED_MARK: Mapping[ModelKind, str] = {ModelKind.WAN_VACE: "Wan2.1-VACE"}


def check_wan_vace_folder(directory: Path) -> str | None:
    """The weights variant of a complete Wan2.1-VACE diffusers folder; refused when a part is
    missing, or when the transformer is a plain Wan (text/image-to-video) one."""
    missing = [p for p in WAN_VACE_PARTS if not (directory / p).is_dir()]
    if missing:
        parts = ", ".join(f"{p}/" for p in missing)
        raise _Refused(
            f"an incomplete Wan2.1-VACE folder: no {parts} (a diffusers Wan2.1-VACE folder has "
            f"{', '.join(f'{p}/' for p in WAN_VACE_PARTS)} and model_index.json)"
        )
    transformer = _read_json(directory / "transformer" / "config.json") or {}
    if transformer.get("_class_name") != "WanVACETransformer3DModel":
        raise _Refused(
            f"a Wan2.1-VACE folder whose transformer/ holds a "
            f"{transformer.get('_class_name') or 'unknown model'}, not a WanVACETransformer3DModel"
        )
    variants = {
        _weights_variant(directory / "transformer", "diffusion_pytorch_model"),
        _weights_variant(directory / "vae", "diffusion_pytorch_model"),
        _weights_variant(directory / "text_encoder", "model"),
    }
    if len(variants) > 1:
        raise _Refused("a Wan2.1-VACE folder whose parts have different weight variants")
    return variants.pop()


# The area the Wan2.1-VACE 1.3B was trained at (832×480); a folder's framesmith.json may say
# otherwise with {"working_size": [width, height]} (the 14B's 1280×720, the tiny test model's).
WAN_WORKING_SIZE = (832, 480)


def wan_working_area(entry: ModelEntry) -> int:
    """Pixels per frame a Wan2.1-VACE model works best at."""
    declared = _read_sidecar(entry.path / SIDECAR_NAME).get("working_size")
    if (
        isinstance(declared, list)
        and len(declared) == 2
        and all(isinstance(v, int) and 16 <= v <= 8192 for v in declared)
    ):
        return int(declared[0]) * int(declared[1])
    return WAN_WORKING_SIZE[0] * WAN_WORKING_SIZE[1]


def _is_tokenizer_folder(directory: Path) -> bool:
    if (directory / "tokenizer.json").is_file():
        return True
    return (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file()


def _conditioning_type(
    kind: ModelKind,
    name: str,
    declared: Mapping[str, Any],
    hints: tuple[str, ...],
) -> str | None:
    if kind not in {ModelKind.CONTROLNET, ModelKind.SPARSECTRL}:
        return None
    ctype = declared.get("controlnet_type")
    if isinstance(ctype, str) and ctype.strip():
        return ctype.strip().lower()
    for text in (name.rsplit("/", 1)[-1], *hints, name):
        found = _type_from_name(text)
        if found:
            return found
    return None


def _type_from_name(text: str) -> str | None:
    tokens = [t for t in re.split(r"[^a-z0-9]+", text.lower()) if t]
    for ctype, fragments in CONTROLNET_TYPES:
        for token in tokens:
            if any(token == f or (len(f) > 3 and token.startswith(f)) for f in fragments):
                return ctype
    return None


# ---- small helpers ------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        if not path.is_file() or path.stat().st_size > MAX_JSON_BYTES:
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # hostile JSON: deep nesting, huge numbers
        return None
    return data if isinstance(data, dict) else None


def _read_sidecar(path: Path) -> dict[str, Any]:
    return _read_json(path) or {}


def _metadata_declaration(metadata: Mapping[str, str]) -> dict[str, Any]:
    """The sidecar schema ({"controlnet_type": ..., "config": ...}) stored as JSON text in the
    safetensors metadata key "framesmith" (one key: safetensors writes metadata in hash order)."""
    try:
        value = json.loads(metadata.get(METADATA_KEY, "{}"))
    except (ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def _strip_safetensors(name: str) -> str:
    return name[: -len(".safetensors")] if name.lower().endswith(".safetensors") else name


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _names(entry: ModelEntry) -> Iterator[str]:
    yield entry.name
    yield entry.name.rsplit("/", 1)[-1]


def available_skeletons(kind: ModelKind | None = None) -> list[str]:
    """Names of the config skeletons shipped in backend/models/configs/ (of one kind)."""
    if not SKELETONS_DIR.is_dir():
        return []
    names = []
    for folder in sorted(p for p in SKELETONS_DIR.iterdir() if p.is_dir()):
        if kind is None or _skeleton_kind(folder) == kind:
            names.append(folder.name)
    return names


def _skeleton_kind(folder: Path) -> ModelKind | None:
    if (folder / "model_index.json").is_file():
        return ModelKind.CHECKPOINT
    try:
        return _folder_kind(_read_json(folder / "config.json") or {})
    except _Refused:
        return None
