"""Load the user's local weights, offline, safetensors only: checkpoints, ControlNets, motion
adapters, SparseCtrl models and CLIP image encoders.

Every load starts from a registry entry (so from a path inside the models folder that was
recognised by content), re-checks the file right before diffusers sees it (load_checks.py), and
passes `local_files_only=True` with local configs: a missing local path would otherwise be taken
for a hub repo id, and a single file without `config=` would fetch its configs from the hub.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from diffusers import (
    ControlNetModel,
    MotionAdapter,
    SparseControlNetModel,
    StableDiffusionPipeline,
)
from diffusers.utils import logging as diffusers_logging
from safetensors.torch import load_file
from transformers import CLIPImageProcessorPil, CLIPTokenizer, CLIPVisionModelWithProjection
from transformers.utils import logging as transformers_logging

from .catalogue import KINDS, ModelKind
from .dtypes import resolve_dtype
from .entries import ModelEntry
from .load_checks import ModelLoadError, checked_path, expect_kind
from .registry import ModelRegistry
from .skeletons import available_skeletons, skeleton_dir

M = TypeVar("M", bound=torch.nn.Module)


class _DropEmptyFp32Warning(logging.Filter):
    # diffusers warns about "modules that should be kept in float32: []" on every dtype load.
    def filter(self, record: logging.LogRecord) -> bool:
        return "should be kept in float32: []" not in record.getMessage()


logging.getLogger("diffusers.models.modeling_utils").addFilter(_DropEmptyFp32Warning())
# Loading progress bars would only clutter the server log; job progress is reported instead.
diffusers_logging.disable_progress_bar()
transformers_logging.disable_progress_bar()


# ---- shared by every loader -------------------------------------------------------------------


def read_single_file(entry: ModelEntry, registry: ModelRegistry | None) -> dict[str, torch.Tensor]:
    """The tensors of a single-file model, after the pre-load checks."""
    path = checked_path(entry, registry)
    if not path.is_file():
        raise ModelLoadError(f"'{entry.name}' is not a single file")
    return load_file(str(path))


def freeze(model: M) -> M:
    """Eval mode, no gradients: every model here only runs inference."""
    model.eval()
    model.requires_grad_(False)
    return model


def finish(model: M, device: str | torch.device) -> M:
    model.to(device)
    return freeze(model)


def _config_for(entry: ModelEntry) -> Path:
    if entry.config is None:
        raise ModelLoadError(
            f"Cannot tell which architecture the single file '{entry.name}' has. Put a "
            f"framesmith.json sidecar next to it ({entry.path.stem}.framesmith.json) with "
            f'{{"config": "<one of {", ".join(available_skeletons(entry.kind))}>"}}, or use a '
            "diffusers folder of this model."
        )
    return skeleton_dir(entry.config)


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
    expect_kind(entry, ModelKind.CHECKPOINT)
    path = checked_path(entry, registry)
    common: dict[str, Any] = {
        "dtype": resolve_dtype(dtype),
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
        finish(component, device)
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
    expect_kind(entry, ModelKind.CONTROLNET)
    return _load_model(ControlNetModel, entry, registry, dtype, device)


def load_motion_adapter(
    entry: ModelEntry,
    *,
    registry: ModelRegistry | None = None,
    dtype: str | torch.dtype = "float32",
    device: str | torch.device = "cpu",
) -> MotionAdapter:
    expect_kind(entry, ModelKind.MOTION_ADAPTER)
    return _load_model(MotionAdapter, entry, registry, dtype, device)


def load_sparsectrl(
    entry: ModelEntry,
    *,
    registry: ModelRegistry | None = None,
    dtype: str | torch.dtype = "float32",
    device: str | torch.device = "cpu",
) -> SparseControlNetModel:
    expect_kind(entry, ModelKind.SPARSECTRL)
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
        path = checked_path(entry, registry)
        model = cls.from_pretrained(
            str(path),
            dtype=torch_dtype,
            local_files_only=True,
            use_safetensors=True,
            variant=entry.variant,
        )
    else:
        skeleton = _config_for(entry)
        state = read_single_file(entry, registry)
        extra = _motion_config_from_keys(state) if cls is MotionAdapter else {}
        model = cls.from_single_file(
            state, config=str(skeleton), dtype=torch_dtype, local_files_only=True, **extra
        )
    return finish(model, device)


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


# ---- CLIP image encoder (for IP-Adapters) ----------------------------------------------------


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
    expect_kind(entry, ModelKind.IMAGE_ENCODER)
    path = checked_path(entry, registry)
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
    return ImageEncoder(finish(model, device), processor)
