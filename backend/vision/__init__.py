"""Image probing (image_headers), decoding with limits (imageio), PNG encoding (png), float to
8-bit conversion (pixels) and render-pass conversion (passes)."""

from .image_headers import ImageInfo, probe
from .imageio import MAX_SIDE, decode
from .passes import (
    BACKGROUND_DEPTH,
    DepthRange,
    depth_range,
    depth_to_control,
    lineart_to_control,
    normal_to_control,
    vector_to_flow,
)
from .pixels import to_uint8
from .png import encode_png

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
