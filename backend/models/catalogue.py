"""The kinds of model Framesmith knows: their names, folders, what each pipeline mode needs.

Plain tables, and the downloadable catalogue (name, repo, files, sha256, size, licence per
model) next to the kinds it fills; its only I/O is reading a `--catalogue` JSON file.

Recommended layout of a models folder (scanning is recursive and ignores it; it is where
messages send people):

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
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


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
        "wan_vace": (ModelKind.WAN_VACE,),
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


# ---- the download catalogue -------------------------------------------------------------------
#
# Each entry names a model on the hub (repo, revision, files) and where it goes in the models
# folder: `folder` (default: the kind's folder / the entry's name) + each file's path in the
# repo. `serve --catalogue FILE` adds or overrides entries by name from a JSON list in the same
# shape as to_json(). Paths never leave the models folder: absolute paths, `..`, `.`, empty and
# hidden parts and backslashes are refused where the catalogue is read, and again where the
# hub's listing resolves a pattern (downloads_hub.py).

# What a download may put in the models folder: weights as safetensors, configs and tokenizers
# as JSON or text. Never pickles (.bin, .ckpt, .pt, .pth), never code (.py).
DOWNLOADABLE_SUFFIXES = (".safetensors", ".json", ".txt")
KIND_ALIASES = {"motion": ModelKind.MOTION_ADAPTER}  # the spelling of the kind
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}")
_REPO = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
_REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,199}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_ENTRY_KEYS = frozenset(
    [
        "name",
        "title",
        "kind",
        "pass",
        "repo",
        "revision",
        "files",
        "folder",
        "size",
        "licence",
        "vram_gb",
        "notes",
    ]
)


class CatalogueError(ValueError):
    """A catalogue entry that cannot be used; the message says which entry and why."""


@dataclass(frozen=True)
class CatalogueFile:
    """One file of an entry (`path` in the repo), or a glob over the hub's listing (`pattern`)."""

    path: str | None = None
    pattern: str | None = None
    sha256: str | None = None  # lowercase hex; None: verified against the hub's ETag
    size: int | None = None  # bytes, as shown before the download (the hub's size is checked)

    def to_json(self) -> dict[str, Any]:
        if self.pattern is not None:
            return {"pattern": self.pattern}
        out: dict[str, Any] = {"path": self.path}
        if self.sha256:
            out["sha256"] = self.sha256
        if self.size is not None:
            out["size"] = self.size
        return out


@dataclass(frozen=True)
class CatalogueEntry:
    name: str
    title: str
    kind: ModelKind
    repo: str
    files: tuple[CatalogueFile, ...]
    licence: str
    revision: str = "main"
    folder: str | None = None  # under the models folder; None: KINDS[kind].folder / name
    conditioning: str | None = None  # "pass" in JSON: a ControlNet's type (depth, ...)
    size: int | None = None  # bytes in all; None: the files' sizes added up, where all known
    vram_gb: float | None = None
    notes: str | None = None

    @property
    def destination(self) -> str:
        """Where the files go, relative to the models folder (posix)."""
        return self.folder or f"{KINDS[self.kind].folder}/{self.name}"

    @property
    def total_size(self) -> int | None:
        if self.size is not None:
            return self.size
        sizes = [f.size for f in self.files]
        return None if any(s is None for s in sizes) else sum(s or 0 for s in sizes)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "title": self.title, "kind": self.kind.value}
        if self.conditioning:
            out["pass"] = self.conditioning
        out |= {
            "repo": self.repo,
            "revision": self.revision,
            "files": [f.to_json() for f in self.files],
            "folder": self.destination,
            "size": self.total_size,
            "licence": self.licence,
        }
        if self.vram_gb is not None:
            out["vram_gb"] = self.vram_gb
        if self.notes:
            out["notes"] = self.notes
        return out


def safe_relative_path(value: Any, what: str, *, pattern: bool = False) -> str:
    """`value` as a relative posix path that stays inside the folder it is joined to."""
    if not isinstance(value, str) or not value.strip():
        raise CatalogueError(f"{what} must be a relative path, not {value!r}")
    if "\\" in value or "\x00" in value:
        raise CatalogueError(f"{what} {value!r} has a backslash or NUL: use '/' between parts")
    if value.startswith(("/", "~")) or re.match(r"[A-Za-z]:", value):
        raise CatalogueError(
            f"{what} {value!r} is an absolute path: catalogue paths are relative, inside the"
            " models folder"
        )
    parts = value.split("/")
    if ".." in parts:
        raise CatalogueError(
            f"{what} {value!r} contains '..': catalogue paths may not leave the models folder"
        )
    if any(p in ("", ".") or p.startswith(".") for p in parts):
        raise CatalogueError(
            f"{what} {value!r} has an empty, '.' or hidden part (the models scan skips hidden"
            " names)"
        )
    if not pattern and any(c in value for c in "*?["):
        raise CatalogueError(f'{what} {value!r} has glob characters: use "pattern" for globs')
    return value


def downloadable(path: str) -> bool:
    return path.lower().endswith(DOWNLOADABLE_SUFFIXES)


def _parse_file(data: Any, where: str) -> CatalogueFile:
    if not isinstance(data, dict) or not ({"path", "pattern"} & data.keys()):
        raise CatalogueError(f'{where}: each file is {{"path", ...}} or {{"pattern"}}')
    unknown = set(data) - {"path", "pattern", "sha256", "size"}
    if unknown or ("path" in data and "pattern" in data):
        raise CatalogueError(f"{where}: unexpected keys {sorted(unknown) or ['path+pattern']}")
    if "pattern" in data:
        return CatalogueFile(pattern=safe_relative_path(data["pattern"], where, pattern=True))
    path = safe_relative_path(data["path"], where)
    if not downloadable(path):
        raise CatalogueError(
            f"{where}: {path!r} is not a .safetensors, .json or .txt file; Framesmith downloads"
            " no pickles or code"
        )
    sha = data.get("sha256")
    if sha is not None and (not isinstance(sha, str) or not _SHA256.fullmatch(sha.lower())):
        raise CatalogueError(f"{where}: sha256 must be 64 hexadecimal digits")
    size = data.get("size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise CatalogueError(f"{where}: size must be a whole number of bytes")
    return CatalogueFile(path=path, sha256=sha.lower() if sha else None, size=size)


def _text(data: dict[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = data.get(key, default)
    if not isinstance(value, str) or not value.strip():
        raise CatalogueError(f"{where}: {key!r} must be a non-empty string")
    return value.strip()


def _number(data: dict[str, Any], key: str, where: str) -> Any:
    value = data.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise CatalogueError(f"{where}: {key!r} must be a number")
    if value is not None and value < 0:
        raise CatalogueError(f"{where}: {key!r} may not be negative")
    return value


def parse_entry(data: Any, where: str = "catalogue entry") -> CatalogueEntry:
    """One entry from its JSON form; CatalogueError names the entry and the problem."""
    if not isinstance(data, dict):
        raise CatalogueError(f"{where} must be a JSON object")
    name = data.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise CatalogueError(
            f"{where}: name must be letters, digits, '.', '-' or '_' (up to 80), not {name!r}"
        )
    where = f"catalogue entry {name!r}"
    if unknown := sorted(set(data) - _ENTRY_KEYS):
        raise CatalogueError(f"{where}: unknown keys {unknown}")
    kind_name = _text(data, "kind", where)
    kind = KIND_ALIASES.get(kind_name) or next((k for k in ModelKind if k.value == kind_name), None)
    if kind is None:
        raise CatalogueError(
            f"{where}: kind {kind_name!r} is not one of {', '.join(k.value for k in ModelKind)}"
        )
    repo = _text(data, "repo", where)
    revision = _text(data, "revision", where, "main")
    if not _REPO.fullmatch(repo) or ".." in repo:
        raise CatalogueError(f"{where}: repo must be 'owner/name', not {repo!r}")
    if not _REVISION.fullmatch(revision) or ".." in revision.split("/"):
        raise CatalogueError(f"{where}: revision {revision!r} is not a branch, tag or commit")
    files = data.get("files")
    if not isinstance(files, list) or not files:
        raise CatalogueError(f"{where}: files must be a non-empty list")
    folder = data.get("folder")
    conditioning = data.get("pass")
    if conditioning is not None and conditioning not in KNOWN_CONTROLNET_TYPES:
        raise CatalogueError(f"{where}: pass {conditioning!r} is not a known conditioning type")
    return CatalogueEntry(
        name=name,
        title=_text(data, "title", where, name),
        kind=kind,
        repo=repo,
        files=tuple(_parse_file(f, f"{where}, file {i + 1}") for i, f in enumerate(files)),
        licence=_text(data, "licence", where),
        revision=revision,
        folder=None if folder is None else safe_relative_path(folder, f"{where}: folder"),
        conditioning=conditioning,
        size=_number(data, "size", where),
        vram_gb=_number(data, "vram_gb", where),
        notes=None if data.get("notes") is None else _text(data, "notes", where),
    )


def parse_catalogue(data: Any, source: str = "the catalogue") -> list[CatalogueEntry]:
    """Entries from a JSON list; a name may appear once."""
    if not isinstance(data, list):
        raise CatalogueError(f"{source} must be a JSON list of entries")
    entries = [parse_entry(item, f"{source}, entry {i + 1}") for i, item in enumerate(data)]
    names = [e.name for e in entries]
    if duplicates := sorted({n for n in names if names.count(n) > 1}):
        raise CatalogueError(f"{source} names {', '.join(duplicates)} more than once")
    return entries


def load_catalogue(path: Path | None) -> dict[str, CatalogueEntry]:
    """The built-in entries, with those of `path` (a JSON list) added or overriding by name."""
    entries = {e.name: e for e in BUILTIN_CATALOGUE}
    if path is None:
        return entries
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise CatalogueError(f"cannot read the catalogue {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise CatalogueError(f"the catalogue {path} is not valid JSON: {exc}") from None
    for entry in parse_catalogue(data, f"the catalogue {path}"):
        entries[entry.name] = entry
    return entries


def _files(*specs: tuple[str, int | None]) -> tuple[CatalogueFile, ...]:
    return tuple(CatalogueFile(path=path, size=size) for path, size in specs)


def _patterns(*patterns: str) -> tuple[CatalogueFile, ...]:
    return tuple(CatalogueFile(pattern=pattern) for pattern in patterns)


# The built-in entries: the models the pipelines use. Sizes are the model cards' (rounded as the
# hub shows them: display only, the hub's exact size is checked); no sha256 is given, so every
# file is checked against the hub's LFS ETag (the sha256 the hub stores for it).
_SD15_TOKENIZER = (
    ("tokenizer/vocab.json", 1_060_000),
    ("tokenizer/merges.txt", 525_000),
    ("tokenizer/special_tokens_map.json", 472),
    ("tokenizer/tokenizer_config.json", 806),
)
_OPENRAIL = "openrail"
_APACHE = "apache-2.0"


def _controlnet(name: str, repo: str, conditioning: str, title: str) -> CatalogueEntry:
    return CatalogueEntry(
        name=name,
        title=title,
        kind=ModelKind.CONTROLNET,
        repo=repo,
        files=_files(
            ("config.json", 945), ("diffusion_pytorch_model.fp16.safetensors", 723_000_000)
        ),
        licence=_OPENRAIL,
        conditioning=conditioning,
        vram_gb=0.8,
        notes="ControlNet v1.1 for SD1.5, the fp16 weights (the .bin files are never fetched)",
    )


BUILTIN_CATALOGUE: tuple[CatalogueEntry, ...] = (
    CatalogueEntry(
        name="sd15",
        title="Stable Diffusion 1.5 (v1-5-pruned-emaonly)",
        kind=ModelKind.CHECKPOINT,
        repo="stable-diffusion-v1-5/stable-diffusion-v1-5",
        files=_files(("v1-5-pruned-emaonly.safetensors", 4_270_000_000), *_SD15_TOKENIZER),
        licence="creativeml-openrail-m",
        vram_gb=2.5,
        notes="The single-file checkpoint with the CLIP tokenizer single files need",
    ),
    _controlnet(
        "controlnet-depth",
        "lllyasviel/control_v11f1p_sd15_depth",
        "depth",
        "ControlNet v1.1 depth (SD1.5)",
    ),
    _controlnet(
        "controlnet-normal",
        "lllyasviel/control_v11p_sd15_normalbae",
        "normal",
        "ControlNet v1.1 normal map (SD1.5)",
    ),
    _controlnet(
        "controlnet-lineart",
        "lllyasviel/control_v11p_sd15_lineart",
        "lineart",
        "ControlNet v1.1 line art (SD1.5)",
    ),
    CatalogueEntry(
        name="animatediff-v1-5-3",
        title="AnimateDiff motion adapter v1.5-3",
        kind=ModelKind.MOTION_ADAPTER,
        repo="guoyww/animatediff-motion-adapter-v1-5-3",
        files=_files(("config.json", 349), ("diffusion_pytorch_model.safetensors", 1_670_000_000)),
        licence=_APACHE,
        vram_gb=1.7,
    ),
    CatalogueEntry(
        name="sparsectrl-rgb",
        title="AnimateDiff SparseCtrl RGB",
        kind=ModelKind.SPARSECTRL,
        repo="guoyww/animatediff-sparsectrl-rgb",
        files=_files(
            ("config.json", 1_480), ("diffusion_pytorch_model.fp16.safetensors", 994_000_000)
        ),
        licence=_APACHE,
        conditioning="rgb",
        vram_gb=1.0,
        notes="Keyframe conditioning for generative in-betweens",
    ),
    CatalogueEntry(
        name="ip-adapter-sd15",
        title="IP-Adapter for SD1.5, with its ViT-H image encoder",
        kind=ModelKind.IP_ADAPTER,
        repo="h94/IP-Adapter",
        files=_files(
            ("models/ip-adapter_sd15.safetensors", 44_600_000),
            ("models/image_encoder/config.json", 560),
            ("models/image_encoder/model.safetensors", 2_528_373_448),
        ),
        licence=_APACHE,
        vram_gb=1.5,
        notes="Style reference images; the image encoder is most of the download",
    ),
    CatalogueEntry(
        name="wan2.1-vace-1.3b",
        title="Wan2.1-VACE 1.3B (diffusers)",
        kind=ModelKind.WAN_VACE,
        repo="Wan-AI/Wan2.1-VACE-1.3B-diffusers",
        # The parts as the hub lists them (sharded weights): safetensors, JSON and text only, so
        # the tokenizer comes as tokenizer.json without the SentencePiece spiece.model.
        files=_files(("model_index.json", None), ("scheduler/scheduler_config.json", None))
        + _patterns("transformer/*", "vae/*", "text_encoder/*", "tokenizer/*"),
        licence=_APACHE,
        vram_gb=8.0,
        notes="Engine Wan2.1-VACE (stylize and diffusion in-betweens) at 480p; the umT5 text "
        "encoder (about 11.4 GB) is most of the download and runs on the CPU once per prompt",
    ),
)
