"""`python -m backend doctor`: what this environment can run, in words a user can act on."""

from __future__ import annotations

import importlib.metadata
import platform
import shutil
from pathlib import Path

from . import __version__, device, pipelines
from .models.registry import ModelRegistry

PACKAGES = (
    "torch",
    "diffusers",
    "transformers",
    "safetensors",
    "numpy",
    "opencv-python-headless",
    "OpenEXR",
    "fastapi",
    "uvicorn",
    "pydantic",
)


def run(models_dir: Path | None) -> int:
    print(f"Framesmith backend {__version__} on Python {platform.python_version()}")
    ok = True
    for name in PACKAGES:
        try:
            print(f"  {name:24} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            print(f"  {name:24} MISSING: pip install -r requirements/backend.txt")
            ok = False
    print(f"device: {device.describe(device.resolve('auto'))}")
    openssl = shutil.which("openssl")
    print(f"openssl: {openssl or 'MISSING: serve --tls-self-signed needs it (or use --tls-cert)'}")
    for kind in pipelines.kinds():
        loaded = pipelines.load(kind)
        print(f"pipeline {kind}: {'available' if loaded.pipeline else loaded.error}")
    if models_dir is not None:
        registry = ModelRegistry(models_dir)
        registry.scan()
        summary = registry.to_json()
        for kind, entries in summary.get("installed", {}).items():
            print(f"models {kind}: {', '.join(e['name'] for e in entries) or 'none'}")
        for refused in summary.get("refused", []):
            print(f"refused: {refused}")
        for pipeline, info in summary.get("pipelines", {}).items():
            for line in info.get("missing", []):
                print(f"{pipeline}: {line}")
    return 0 if ok else 1
