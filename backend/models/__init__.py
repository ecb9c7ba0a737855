"""The user's models: a content-based registry of a models folder and offline loading.

Offline: the backend package sets the Hugging Face offline flags when it is imported (offline.py),
so every module here that imports diffusers or transformers runs offline.

Torch-free: catalogue (kinds and tables), entries, sidecars, safetensors_header, classify,
wan_folder, scan, messages, registry, load_checks, skeletons. With torch: dtypes, loaders, lora,
ip_adapter, cache, wan, and the tiny test models (tiny, tiny_wan, tiny_common, ldm_layout).
"""
