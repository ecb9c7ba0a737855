"""What the tiny model builders share: fixed seeds, our initialiser, and writing helpers."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import torch

SEEDS = {"unet": 1, "vae": 2, "text_encoder": 3, "depth": 4, "normal": 5, "lineart": 6}
SEEDS |= {"motion": 7, "sparsectrl": 8, "lora": 9, "ip_adapter": 10, "image_encoder": 11}
SEEDS |= {"wan_transformer": 12, "wan_vae": 13, "wan_text_encoder": 14}


def randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Deterministic random weights from our own generator, then eval mode.

    Norm scales near 1, biases near 0, other weights ~N(0, 1/fan_in): well-behaved activations
    through the tiny nets, and no zero-initialised layer left silent.
    """
    gen = torch.Generator().manual_seed(seed)
    norm_types = (torch.nn.GroupNorm, torch.nn.LayerNorm)
    norm_params = {
        f"{name}.{p}" if name else p
        for name, module in model.named_modules()
        if isinstance(module, norm_types)
        for p, _ in module.named_parameters(recurse=False)
    }
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            noise = torch.randn(param.shape, generator=gen, dtype=torch.float32)
            if name in norm_params:
                value = 1.0 + 0.1 * noise if name.endswith("weight") else 0.02 * noise
            elif param.ndim == 1:
                value = 0.02 * noise
            else:
                value = noise / math.sqrt(max(1, math.prod(param.shape[1:])))
            param.copy_(value.to(param.dtype))
    return model.eval()


def write_sidecar(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def fresh(path: Path) -> Path:
    """`path`, with whatever was there removed and its parent folder created."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
