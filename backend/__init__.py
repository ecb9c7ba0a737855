"""Framesmith backend: the out-of-process job server that owns the GPU. Never imports bpy."""

__version__ = "0.1.0"
API_VERSION = "v1"
