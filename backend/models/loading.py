"""Load the user's local weights, offline, safetensors only, and keep them loaded between jobs.

Every load starts from a registry entry (so from a path inside the models folder that was
recognised by content), re-checks the file right before diffusers sees it, and passes
`local_files_only=True` with local configs: a missing local path would otherwise be taken for a
hub repo id, and a single file without `config=` would fetch its configs from the hub.
"""

from __future__ import annotations

from .offline import ensure_offline

ensure_offline()

import dataclasses  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import re  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
from collections import OrderedDict  # noqa: E402
from collections.abc import Callable, Iterator, Mapping  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, TypeVar  # noqa: E402

import torch  # noqa: E402
from diffusers import (  # noqa: E402
    ControlNetModel,
    MotionAdapter,
    SparseControlNetModel,
    StableDiffusionPipeline,
)
from diffusers.utils import logging as diffusers_logging  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import (  # noqa: E402
    CLIPImageProcessorPil,
    CLIPTokenizer,
    CLIPVisionModelWithProjection,
)
from transformers.utils import logging as transformers_logging  # noqa: E402

from .registry import (  # noqa: E402
    KINDS,
    SKELETONS_DIR,
    ModelEntry,
    ModelKind,
    ModelRegistry,
    available_skeletons,
    read_checked_header,
)
from .safetensors_header import (  # noqa: E402
    HeaderError,
    SafetensorsHeader,
    sniff_pickle,
)

T = TypeVar("T")


class _DropEmptyFp32Warning(logging.Filter):
    # diffusers warns about "modules that should be kept in float32: []" on every dtype load.
    def filter(self, record: logging.LogRecord) -> bool:
        return "should be kept in float32: []" not in record.getMessage()


logging.getLogger("diffusers.models.modeling_utils").addFilter(_DropEmptyFp32Warning())
# Loading progress bars would only clutter the server log; job progress is reported instead.
diffusers_logging.disable_progress_bar()
transformers_logging.disable_progress_bar()

_DTYPES: Mapping[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message says what to do (shown as the job's error)."""


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[dtype.lower().removeprefix("torch.")]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use float32, float16 or bfloat16") from None


def dtype_name(dtype: str | torch.dtype) -> str:
    return str(resolve_dtype(dtype)).removeprefix("torch.")


def device_name(device: str | torch.device) -> str:
    return str(torch.device(device))


def skeleton_dir(name: str) -> Path:
    """A config skeleton shipped in backend/models/configs/ (never a path from outside it)."""
    path = (SKELETONS_DIR / name).resolve()
    if "/" in name or "\\" in name or path.parent != SKELETONS_DIR or not path.is_dir():
        shipped = ", ".join(available_skeletons())
        raise ModelLoadError(f"unknown config skeleton {name!r} (shipped: {shipped})")
    return path


# ---- checks before diffusers sees a path --------------------------------------------------


def _checked_path(entry: ModelEntry, registry: ModelRegistry | None) -> Path:
    path = entry.path
    if not path.exists():
        raise ModelLoadError(
            f"{KINDS[entry.kind].label} '{entry.name}' is no longer at {path}: "
            "it was moved or deleted since the models folder was scanned"
        )
    files = [path] if path.is_file() else sorted(path.rglob("*.safetensors"))
    if registry is not None:
        for item in (path, *files):
            real = item.resolve()
            if real != registry.root and registry.root not in real.parents:
                raise ModelLoadError(
                    f"'{entry.name}': {item.name} resolves outside the models folder"
                )
    for file in files:
        _check_safetensors(file, entry)
    return path


def _check_safetensors(file: Path, entry: ModelEntry) -> SafetensorsHeader:
    # The file may have been replaced since the scan: look again right before loading.
    if sniff_pickle(file):
        raise ModelLoadError(
            f"'{entry.name}': {file.name} is a pickle; Framesmith never loads pickles"
        )
    try:
        return read_checked_header(file)
    except (HeaderError, OSError) as exc:
        raise ModelLoadError(
            f"'{entry.name}': {file.name} is not a valid safetensors file ({exc})"
        ) from None


def _read_single_file(entry: ModelEntry, registry: ModelRegistry | None) -> dict[str, torch.Tensor]:
    path = _checked_path(entry, registry)
    if not path.is_file():
        raise ModelLoadError(f"'{entry.name}' is not a single file")
    return load_file(str(path))


def _config_for(entry: ModelEntry) -> Path:
    if entry.config is None:
        raise ModelLoadError(
            f"Cannot tell which architecture the single file '{entry.name}' has. Put a "
            f"framesmith.json sidecar next to it ({entry.path.stem}.framesmith.json) with "
            f'{{"config": "<one of {", ".join(available_skeletons(entry.kind))}>"}}, or use a diffusers '
            "folder of this model."
        )
    return skeleton_dir(entry.config)


def _finish(model: T, device: str | torch.device) -> T:
    model.to(device)  # type: ignore[attr-defined]
    model.eval()  # type: ignore[attr-defined]
    model.requires_grad_(False)  # type: ignore[attr-defined]
    return model


def _expect(entry: ModelEntry, kind: ModelKind) -> None:
    if entry.kind != kind:
        raise ModelLoadError(
            f"'{entry.name}' is a {KINDS[entry.kind].label}, not a {KINDS[kind].label}"
        )


# ---- checkpoints ----------------------------------------------------------------------------


def find_tokenizer(skeleton: Path, registry: ModelRegistry | None) -> Path:
    """The CLIP tokenizer folder to use with a single-file checkpoint loaded with `skeleton`.

    The tokenizer's vocabulary cannot be shipped, so it comes from the skeleton (tiny models
    only), a tokenizer/ folder in the models folder, or any installed diffusers checkpoint of
    the same text-encoder vocabulary.
    """
    if (skeleton / "tokenizer").is_dir():
        return skeleton / "tokenizer"
    vocab_size = _json_value(skeleton / "text_encoder" / "config.json", "vocab_size")
    if registry is not None:
        for tok in registry.of_kind(ModelKind.TOKENIZER):
            return tok.path
        for ckpt in registry.of_kind(ModelKind.CHECKPOINT):
            folder = ckpt.path / "tokenizer"
            size = _json_value(ckpt.path / "text_encoder" / "config.json", "vocab_size")
            if ckpt.layout == "diffusers" and folder.is_dir() and size == vocab_size:
                return folder
    where = registry.root / KINDS[ModelKind.TOKENIZER].folder if registry else "<models>/tokenizer"
    raise ModelLoadError(
        "Single-file checkpoints need the CLIP tokenizer, which cannot be shipped with "
        f"Framesmith: put {KINDS[ModelKind.TOKENIZER].example} in {where}/ (or install any "
        "SD1.5 checkpoint as a diffusers folder, whose tokenizer/ is used)."
    )


def _json_value(path: Path, key: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get(key)
    except (OSError, ValueError, AttributeError):
        return None


@contextmanager
def _safetensors_name(path: Path) -> Iterator[Path]:
    # diffusers picks its reader by the exact lowercase extension and would hand anything else
    # (X.SAFETENSORS) to torch.load; give it a correctly named link instead.
    if path.name.endswith(".safetensors"):
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="framesmith-") as tmp:
        link = Path(tmp) / "model.safetensors"
        link.symlink_to(path)
        yield link


def load_checkpoint(
    entry: ModelEntry,
    *,
    registry: ModelRegistry | None = None,
    dtype: str | torch.dtype = "float32",
    device: str | torch.device = "cpu",
) -> StableDiffusionPipeline:
    """An SD1.5-family checkpoint as a StableDiffusionPipeline (no safety checker), in eval mode."""
    _expect(entry, ModelKind.CHECKPOINT)
    path = _checked_path(entry, registry)
    torch_dtype = resolve_dtype(dtype)
    common: dict[str, Any] = {
        "dtype": torch_dtype,
        "local_files_only": True,
        "safety_checker": None,
        "feature_extractor": None,
        "requires_safety_checker": False,
    }
    if entry.layout == "diffusers":
        pipe = StableDiffusionPipeline.from_pretrained(
            str(path), use_safetensors=True, variant=entry.variant, **common
        )
    else:
        skeleton = _config_for(entry)
        tokenizer = CLIPTokenizer.from_pretrained(
            str(find_tokenizer(skeleton, registry)), local_files_only=True
        )
        with _safetensors_name(path) as named:
            pipe = StableDiffusionPipeline.from_single_file(
                str(named), config=str(skeleton), tokenizer=tokenizer, **common
            )
    for component in (pipe.unet, pipe.vae, pipe.text_encoder):
        _finish(component, device)
    pipe.set_progress_bar_config(disable=True)  # denoising progress goes to the job instead
    return pipe


# ---- ControlNet, motion adapter, SparseCtrl -------------------------------------------------


def load_controlnet(
    entry: ModelEntry,
    *,
    registry: ModelRegistry | None = None,
    dtype: str | torch.dtype = "float32",
    device: str | torch.device = "cpu",
) -> ControlNetModel:
    _expect(entry, ModelKind.CONTROLNET)
    return _load_model(ControlNetModel, entry, registry, dtype, device)


def load_motion_adapter(
    entry: ModelEntry,
    *,
    registry: ModelRegistry | None = None,
    dtype: str | torch.dtype = "float32",
    device: str | torch.device = "cpu",
) -> MotionAdapter:
    _expect(entry, ModelKind.MOTION_ADAPTER)
    return _load_model(MotionAdapter, entry, registry, dtype, device)


def load_sparsectrl(
    entry: ModelEntry,
    *,
    registry: ModelRegistry | None = None,
    dtype: str | torch.dtype = "float32",
    device: str | torch.device = "cpu",
) -> SparseControlNetModel:
    _expect(entry, ModelKind.SPARSECTRL)
    if entry.layout == "single_file" and entry.config is None:
        raise ModelLoadError(
            f"SparseCtrl single file '{entry.name}': Framesmith ships no SparseCtrl config, so "
            "use the diffusers SparseControlNetModel folder of this model (e.g. "
            "animatediff-sparsectrl-rgb) in "
            f"{registry.root / 'sparsectrl' if registry else '<models>/sparsectrl'}/"
        )
    return _load_model(SparseControlNetModel, entry, registry, dtype, device)


def _load_model(
    cls: Any,
    entry: ModelEntry,
    registry: ModelRegistry | None,
    dtype: str | torch.dtype,
    device: str | torch.device,
) -> Any:
    torch_dtype = resolve_dtype(dtype)
    if entry.layout == "diffusers":
        path = _checked_path(entry, registry)
        model = cls.from_pretrained(
            str(path),
            dtype=torch_dtype,
            local_files_only=True,
            use_safetensors=True,
            variant=entry.variant,
        )
    else:
        skeleton = _config_for(entry)
        state = _read_single_file(entry, registry)
        extra = _motion_config_from_keys(state) if cls is MotionAdapter else {}
        model = cls.from_single_file(
            state, config=str(skeleton), dtype=torch_dtype, local_files_only=True, **extra
        )
    return _finish(model, device)


def _motion_config_from_keys(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Motion-module versions differ in mid block and window length; read both off the file."""
    extra: dict[str, Any] = {
        "use_motion_mid_block": any(k.startswith("mid_block.motion_modules.") for k in state)
    }
    for key, value in state.items():
        if key.endswith(("pos_encoder.pe", "pos_embed.pe")) and value.ndim == 3:
            extra["motion_max_seq_length"] = int(value.shape[1])
            break
    return extra


# ---- LoRA -----------------------------------------------------------------------------------

_LORA_KEY = re.compile(
    r"^(?P<module>.+?)\.(?:"
    r"lora_(?P<peft>[AB])(?:\.[^.]+)?"
    r"|lora[._](?P<dir1>down|up)"
    r"|lora_linear_layer\.(?P<dir2>down|up)"
    r")\.weight$"
)
_OLD_PROCESSOR_KEY = re.compile(
    r"^(?P<module>.+?)\.(?P<proj>to_q|to_k|to_v|to_out)_lora\.(?P<dir>down|up)\.weight$"
)
_TEXT_PROJ = {"to_q": "q_proj", "to_k": "k_proj", "to_v": "v_proj", "to_out": "out_proj"}
_UNET_PROJ = {"to_q": "to_q", "to_k": "to_k", "to_v": "to_v", "to_out": "to_out.0"}


@dataclass
class _LoraLayer:
    down: torch.Tensor | None = None
    up: torch.Tensor | None = None
    alpha: float | None = None


def _lora_target(key: str) -> tuple[str, str, str] | None:
    """(component, module path, "down"|"up") of one LoRA weight name, or None."""
    if m := _OLD_PROCESSOR_KEY.match(key):
        module, direction = m["module"].removesuffix(".processor"), m["dir"]
        table = _TEXT_PROJ if module.startswith("text_encoder") else _UNET_PROJ
        module = f"{module}.{table[m['proj']]}"
    elif m := _LORA_KEY.match(key):
        module = m["module"]
        direction = {"A": "down", "B": "up"}.get(m["peft"] or "", m["dir1"] or m["dir2"])
    else:
        return None
    component, _, rest = module.partition(".")
    if component not in {"unet", "text_encoder"}:
        component, rest = "unet", module
    return component, rest, direction


def _lora_layers(
    state: Mapping[str, torch.Tensor], alphas: Mapping[str, float]
) -> dict[tuple[str, str], _LoraLayer]:
    """{(component, module path): (down, up, alpha)} from any layout lora_state_dict returns."""
    layers: dict[tuple[str, str], _LoraLayer] = {}
    found_alphas = {**alphas, **{k: v for k, v in state.items() if k.endswith(".alpha")}}
    for key, value in state.items():
        if key.endswith(".alpha"):
            continue
        target = _lora_target(key)
        if target is None:
            raise ModelLoadError(
                f"unsupported LoRA tensor {key!r} (LoHa/LoKr/DoRA are not supported)"
            )
        component, path, direction = target
        setattr(layers.setdefault((component, path), _LoraLayer()), direction, value)
    for key, value in found_alphas.items():
        # diffusers names an alpha after the layer ("<module>.alpha") or, for converted kohya
        # files, after its down weight ("<module>.to_q_lora.down.weight.alpha").
        stem = key.removesuffix(".alpha")
        target = _lora_target(stem)
        if target is not None:
            where = target[:2]
        else:
            component, _, rest = stem.partition(".")
            where = (component, rest) if component in {"unet", "text_encoder"} else ("unet", stem)
        if where in layers:
            layers[where].alpha = float(value)
    return layers


def apply_lora(
    pipe: StableDiffusionPipeline,
    entry: ModelEntry,
    weight: float = 1.0,
    *,
    registry: ModelRegistry | None = None,
) -> int:
    """Merge a LoRA into the pipeline's UNet / text encoder weights; returns layers changed.

    Merged (fused) rather than attached as adapters: no peft needed, no per-step cost. The cache
    keys a checkpoint by its LoRAs, so a merged pipeline is never reused for another set.
    """
    _expect(entry, ModelKind.LORA)
    raw = _read_single_file(entry, registry)
    try:
        state, alphas = StableDiffusionPipeline.lora_state_dict(raw, unet_config=pipe.unet.config)
    except ValueError as exc:
        raise ModelLoadError(
            f"LoRA '{entry.name}' is in a layout Framesmith cannot read ({exc})"
        ) from None
    layers = _lora_layers(state, alphas or {})
    missing = [f"{c}.{p}" for c, p in layers if _submodule(pipe, c, p) is None]
    if not layers or missing:
        example = f" (e.g. {missing[0]})" if missing else ""
        raise ModelLoadError(
            f"LoRA '{entry.name}' does not fit this checkpoint: {len(missing)} of {len(layers)} "
            f"layers have no matching module{example}. Is it a LoRA for SD1.5?"
        )
    for (component, path), layer in layers.items():
        module = _submodule(pipe, component, path)
        assert module is not None
        _merge(module, layer, weight, f"{entry.name}: {component}.{path}")
    return len(layers)


def _submodule(pipe: StableDiffusionPipeline, component: str, path: str) -> torch.nn.Module | None:
    model = getattr(pipe, component)
    # LoRAs name CLIP modules text_model.encoder...; transformers 5 has no text_model level.
    for candidate in (path, path.removeprefix("text_model.")):
        try:
            return model.get_submodule(candidate)
        except AttributeError:
            continue
    return None


def _merge(module: torch.nn.Module, layer: _LoraLayer, weight: float, where: str) -> None:
    target = getattr(module, "weight", None)
    if layer.down is None or layer.up is None or not isinstance(target, torch.Tensor):
        raise ModelLoadError(f"LoRA layer {where} is incomplete or targets a layer without weights")
    down, up = layer.down.float(), layer.up.float()
    rank = down.shape[0]
    scale = weight * (layer.alpha / rank if layer.alpha is not None else 1.0)
    delta = up.flatten(1) @ down.flatten(1)
    if delta.numel() != target.numel():
        raise ModelLoadError(
            f"LoRA layer {where} has shape {tuple(delta.shape)}, the model {tuple(target.shape)}"
        )
    with torch.no_grad():
        merged = target.float() + scale * delta.reshape(target.shape).to(target.device)
        target.copy_(merged.to(target.dtype))


# ---- IP-Adapter ------------------------------------------------------------------------------

DEFAULT_IP_ADAPTER_SCALE = 0.6


@dataclass(frozen=True)
class ImageEncoder:
    """The CLIP image encoder an IP-Adapter reads a reference image through."""

    model: CLIPVisionModelWithProjection
    processor: CLIPImageProcessorPil


def load_image_encoder(
    entry: ModelEntry,
    *,
    registry: ModelRegistry | None = None,
    dtype: str | torch.dtype = "float32",
    device: str | torch.device = "cpu",
) -> ImageEncoder:
    _expect(entry, ModelKind.IMAGE_ENCODER)
    path = _checked_path(entry, registry)
    model = CLIPVisionModelWithProjection.from_pretrained(
        str(path),
        dtype=resolve_dtype(dtype),
        local_files_only=True,
        use_safetensors=True,
        variant=entry.variant,
    )
    if (path / "preprocessor_config.json").is_file():
        processor = CLIPImageProcessorPil.from_pretrained(str(path), local_files_only=True)
    else:  # as diffusers does for an encoder folder without one: CLIP's defaults at its size
        size = int(model.config.image_size)
        processor = CLIPImageProcessorPil(
            size={"shortest_edge": size}, crop_size={"height": size, "width": size}
        )
    return ImageEncoder(_finish(model, device), processor)


def load_ip_adapter(
    pipe: StableDiffusionPipeline,
    entry: ModelEntry,
    encoder: ImageEncoder,
    scale: float = DEFAULT_IP_ADAPTER_SCALE,
    *,
    registry: ModelRegistry | None = None,
) -> None:
    """Attach an IP-Adapter (single safetensors file) and its image encoder to `pipe`.

    The weights go to diffusers as a state dict and the encoder is registered beforehand, so
    diffusers never looks for either on the hub. Changes the UNet in place (its cross-attention
    processors): the cache keys a checkpoint by its IP-Adapter, as by its LoRAs.
    """
    _expect(entry, ModelKind.IP_ADAPTER)
    raw = _read_single_file(entry, registry)
    state: dict[str, dict[str, torch.Tensor]] = {"image_proj": {}, "ip_adapter": {}}
    for key, value in raw.items():
        part, _, rest = key.partition(".")
        if part in state:
            state[part][rest] = value
    proj = state["image_proj"].get("proj.weight")
    if proj is None:
        raise ModelLoadError(
            f"IP-Adapter '{entry.name}' is not a plain IP-Adapter (no image_proj.proj.weight); "
            "Framesmith supports the SD1.5 IP-Adapter (ip-adapter_sd15.safetensors) and its "
            "light variant"
        )
    embed_dim = int(encoder.model.config.projection_dim)
    if proj.shape[-1] != embed_dim:
        raise ModelLoadError(
            f"IP-Adapter '{entry.name}' expects {proj.shape[-1]}-wide image embeddings but the "
            f"image encoder makes {embed_dim}: install the image encoder this IP-Adapter was "
            "trained with (SD1.5 IP-Adapters: the ViT-H/14 encoder, models/image_encoder)"
        )
    pipe.register_modules(image_encoder=encoder.model, feature_extractor=encoder.processor)
    try:
        pipe.load_ip_adapter(
            state, subfolder="", weight_name="", image_encoder_folder=None, low_cpu_mem_usage=False
        )
    except (KeyError, RuntimeError, ValueError) as exc:
        raise ModelLoadError(
            f"IP-Adapter '{entry.name}' does not fit this checkpoint ({exc}). Is it an "
            "IP-Adapter for SD1.5?"
        ) from None
    pipe.set_ip_adapter_scale(scale)


# ---- the cache ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoraSpec:
    name: str
    weight: float = 1.0


@dataclass(frozen=True)
class ModelSet:
    """The models one job runs with: the cache key (names + dtype + device)."""

    checkpoint: str
    motion_adapter: str | None = None
    controlnets: tuple[str, ...] = ()
    sparsectrl: str | None = None
    loras: tuple[LoraSpec, ...] = ()
    ip_adapter: str | None = None  # attached to the checkpoint with image_encoder
    image_encoder: str | None = None
    dtype: str = "float32"
    device: str = "cpu"

    def normalized(self) -> ModelSet:
        return dataclasses.replace(
            self,
            controlnets=tuple(self.controlnets),
            loras=tuple(self.loras),
            dtype=dtype_name(self.dtype),
            device=device_name(self.device),
        )


@dataclass
class LoadedModels:
    models: ModelSet
    pipe: StableDiffusionPipeline  # LoRAs already merged
    motion_adapter: MotionAdapter | None
    controlnets: tuple[ControlNetModel, ...]
    sparsectrl: SparseControlNetModel | None
    entries: dict[str, ModelEntry] = field(default_factory=dict)
    fingerprint: tuple[Any, ...] = ()
    image_encoder: ImageEncoder | None = None  # with an IP-Adapter attached to pipe


def _fingerprint(entry: ModelEntry) -> tuple[Any, ...]:
    """Changes when the model's files change on disk (replaced, re-downloaded)."""
    files = [entry.path] if entry.path.is_file() else sorted(entry.path.rglob("*.safetensors"))
    stats = []
    for file in files:
        try:
            st = file.stat()
        except OSError:
            continue
        stats.append((str(file), st.st_size, st.st_mtime_ns))
    return (entry.kind.value, str(entry.path), tuple(stats))


class ModelCache:
    """Keeps the models of the last `max_sets` model sets loaded, sharing identical components.

    `load(models)` returns the same LoadedModels object for the same set until a file changes
    or the set is evicted; components shared between consecutive sets (the checkpoint when only
    the ControlNets change) are reused instead of reloaded.
    """

    def __init__(self, registry: ModelRegistry, max_sets: int = 1) -> None:
        self.registry = registry
        self.max_sets = max(1, max_sets)
        self._sets: OrderedDict[ModelSet, LoadedModels] = OrderedDict()
        self._components: dict[tuple[Any, ...], Any] = {}
        self._lock = threading.RLock()

    def __len__(self) -> int:
        return len(self._sets)

    def __contains__(self, models: object) -> bool:
        return isinstance(models, ModelSet) and models.normalized() in self._sets

    def load(self, models: ModelSet) -> LoadedModels:
        key = models.normalized()
        with self._lock:
            entries = self._entries(key)
            fingerprint = tuple(_fingerprint(e) for e in entries.values())
            cached = self._sets.get(key)
            if cached is not None and cached.fingerprint == fingerprint:
                self._sets.move_to_end(key)
                return cached
            loaded = self._assemble(key, entries, fingerprint)
            self._sets[key] = loaded
            self._sets.move_to_end(key)
            while len(self._sets) > self.max_sets:
                self._sets.popitem(last=False)
            self._drop_unused()
            return loaded

    def clear(self) -> None:
        with self._lock:
            self._sets.clear()
            self._components.clear()
        _free_memory()

    def _entries(self, key: ModelSet) -> dict[str, ModelEntry]:
        wanted: list[tuple[str, str, ModelKind]] = [
            ("checkpoint", key.checkpoint, ModelKind.CHECKPOINT)
        ]
        if key.motion_adapter:
            wanted.append(("motion_adapter", key.motion_adapter, ModelKind.MOTION_ADAPTER))
        if key.sparsectrl:
            wanted.append(("sparsectrl", key.sparsectrl, ModelKind.SPARSECTRL))
        wanted += [
            (f"controlnet:{i}", n, ModelKind.CONTROLNET) for i, n in enumerate(key.controlnets)
        ]
        wanted += [(f"lora:{i}", lo.name, ModelKind.LORA) for i, lo in enumerate(key.loras)]
        if key.ip_adapter or key.image_encoder:
            if not (key.ip_adapter and key.image_encoder):
                raise ModelLoadError("an IP-Adapter needs both the adapter and an image encoder")
            wanted.append(("ip_adapter", key.ip_adapter, ModelKind.IP_ADAPTER))
            wanted.append(("image_encoder", key.image_encoder, ModelKind.IMAGE_ENCODER))
        entries: dict[str, ModelEntry] = {}
        for slot, name, kind in wanted:
            try:
                entries[slot] = self.registry.get(name, kind)
            except KeyError as exc:
                raise ModelLoadError(str(exc.args[0])) from None
        return entries

    def _component(self, key: tuple[Any, ...], factory: Callable[[], T]) -> T:
        if key not in self._components:
            self._components[key] = factory()
        return self._components[key]

    def _assemble(
        self, key: ModelSet, entries: dict[str, ModelEntry], fingerprint: tuple[Any, ...]
    ) -> LoadedModels:
        common = {"registry": self.registry, "dtype": key.dtype, "device": key.device}
        where = (key.dtype, key.device)

        def fp(slot: str) -> tuple[Any, ...]:
            return _fingerprint(entries[slot])

        loras = tuple((fp(f"lora:{i}"), lo.weight) for i, lo in enumerate(key.loras))
        encoder = None
        if "image_encoder" in entries:
            encoder = self._component(
                ("image_encoder", fp("image_encoder"), *where),
                lambda: load_image_encoder(entries["image_encoder"], **common),
            )
        ip = (fp("ip_adapter"), fp("image_encoder")) if encoder is not None else ()

        def checkpoint() -> StableDiffusionPipeline:
            pipe = load_checkpoint(entries["checkpoint"], **common)
            for i, lora in enumerate(key.loras):
                apply_lora(pipe, entries[f"lora:{i}"], lora.weight, registry=self.registry)
            if encoder is not None:
                load_ip_adapter(pipe, entries["ip_adapter"], encoder, registry=self.registry)
            return pipe

        pipe = self._component(("checkpoint", fp("checkpoint"), loras, ip, *where), checkpoint)
        adapter = None
        if "motion_adapter" in entries:
            adapter = self._component(
                ("motion", fp("motion_adapter"), *where),
                lambda: load_motion_adapter(entries["motion_adapter"], **common),
            )
        sparse = None
        if "sparsectrl" in entries:
            sparse = self._component(
                ("sparsectrl", fp("sparsectrl"), *where),
                lambda: load_sparsectrl(entries["sparsectrl"], **common),
            )
        nets = tuple(
            self._component(
                ("controlnet", fp(f"controlnet:{i}"), *where),
                lambda i=i: load_controlnet(entries[f"controlnet:{i}"], **common),
            )
            for i in range(len(key.controlnets))
        )
        return LoadedModels(
            models=key,
            pipe=pipe,
            motion_adapter=adapter,
            controlnets=nets,
            sparsectrl=sparse,
            entries=entries,
            fingerprint=fingerprint,
            image_encoder=encoder,
        )

    def _drop_unused(self) -> None:
        used: set[int] = set()
        for loaded in self._sets.values():
            used |= {id(loaded.pipe), id(loaded.motion_adapter), id(loaded.sparsectrl)}
            used.add(id(loaded.image_encoder))
            used |= {id(n) for n in loaded.controlnets}
        before = len(self._components)
        self._components = {k: v for k, v in self._components.items() if id(v) in used}
        if len(self._components) != before:
            _free_memory()


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
