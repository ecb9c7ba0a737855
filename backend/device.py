"""Which compute device the worker uses. torch is imported here only, and only when asked."""

from __future__ import annotations

import logging

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
