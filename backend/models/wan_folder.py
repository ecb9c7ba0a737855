"""The Wan2.1-VACE diffusers folder (engine wan_vace): its layout check and working size."""

from __future__ import annotations

from pathlib import Path

from .classify import weights_variant
from .entries import ModelEntry, Refused
from .sidecars import SIDECAR_NAME, read_json, read_sidecar

WAN_VACE_CLASSES = frozenset({"WanVACEPipeline"})
WAN_VACE_PARTS = ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")
# The area the Wan2.1-VACE 1.3B was trained at (832×480); a folder's framesmith.json may say
# otherwise with {"working_size": [width, height]} (the 14B's 1280×720, the tiny test model's).
WAN_WORKING_SIZE = (832, 480)


def check_wan_vace_folder(directory: Path) -> str | None:
    """The weights variant of a complete Wan2.1-VACE diffusers folder; refused when a part is
    missing, or when the transformer is a plain Wan (text/image-to-video) one."""
    missing = [p for p in WAN_VACE_PARTS if not (directory / p).is_dir()]
    if missing:
        parts = ", ".join(f"{p}/" for p in missing)
        raise Refused(
            f"an incomplete Wan2.1-VACE folder: no {parts} (a diffusers Wan2.1-VACE folder has "
            f"{', '.join(f'{p}/' for p in WAN_VACE_PARTS)} and model_index.json)"
        )
    transformer = read_json(directory / "transformer" / "config.json") or {}
    if transformer.get("_class_name") != "WanVACETransformer3DModel":
        raise Refused(
            f"a Wan2.1-VACE folder whose transformer/ holds a "
            f"{transformer.get('_class_name') or 'unknown model'}, not a WanVACETransformer3DModel"
        )
    variants = {
        weights_variant(directory / "transformer", "diffusion_pytorch_model"),
        weights_variant(directory / "vae", "diffusion_pytorch_model"),
        weights_variant(directory / "text_encoder", "model"),
    }
    if len(variants) > 1:
        raise Refused("a Wan2.1-VACE folder whose parts have different weight variants")
    return variants.pop()


def wan_working_area(entry: ModelEntry) -> int:
    """Pixels per frame a Wan2.1-VACE model works best at."""
    declared = read_sidecar(entry.path / SIDECAR_NAME).get("working_size")
    if (
        isinstance(declared, list)
        and len(declared) == 2
        and all(isinstance(v, int) and 16 <= v <= 8192 for v in declared)
    ):
        return int(declared[0]) * int(declared[1])
    return WAN_WORKING_SIZE[0] * WAN_WORKING_SIZE[1]
