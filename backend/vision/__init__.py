"""Image decode/encode with limits (imageio) and render-pass conversion (passes)."""

from .imageio import MAX_SIDE, ImageInfo, decode, encode_png, probe, to_uint8
from .passes import (
    BACKGROUND_DEPTH,
    DepthRange,
    depth_range,
    depth_to_control,
    lineart_to_control,
    normal_to_control,
    vector_to_flow,
)

__all__ = [
    "BACKGROUND_DEPTH",
    "MAX_SIDE",
    "DepthRange",
    "ImageInfo",
    "decode",
    "depth_range",
    "depth_to_control",
    "encode_png",
    "lineart_to_control",
    "normal_to_control",
    "probe",
    "to_uint8",
    "vector_to_flow",
]
