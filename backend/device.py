"""Which compute device the worker uses, and giving its memory back. torch is imported here
only, and only when asked."""

from __future__ import annotations

import gc
import logging
import sys

log = logging.getLogger("framesmith.device")


def resolve(preference: str) -> str:
    """'auto' picks CUDA when torch sees a GPU, else the CPU. An explicit choice is checked."""
    if preference == "cpu":
        return "cpu"
    try:
        import torch
    except ImportError:
        if preference != "auto":
            raise SystemExit(f"--device {preference}: torch is not installed here") from None
        return "cpu"
    if torch.cuda.is_available():
        if preference == "auto":
            return "cuda:0"
        return preference
    if preference != "auto":
        raise SystemExit(f"--device {preference}: torch sees no CUDA device here")
    return "cpu"


def describe(device: str) -> str:
    if not device.startswith("cuda"):
        return device
    try:
        import torch

        props = torch.cuda.get_device_properties(torch.device(device))
        return f"{device} ({props.name}, {props.total_memory / 2**30:.0f} GiB)"
    except Exception:  # a description is best effort
        return device


def free_memory() -> None:
    """Give memory back after large objects were dropped (a model set, a failed chunk's
    tensors): collect them, then empty torch's CUDA cache. torch is looked up, not imported: a
    process that never imported it holds no GPU memory."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
