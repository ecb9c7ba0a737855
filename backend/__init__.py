"""Framesmith backend: the out-of-process job server that owns the GPU. Never imports bpy.

Importing the package puts the Hugging Face offline flags in the environment, before any of its
modules can import diffusers, transformers or huggingface_hub (which read them once, on import).
"""

from .models.offline import set_offline_env

set_offline_env()

__version__ = "0.1.0"
API_VERSION = "v1"
