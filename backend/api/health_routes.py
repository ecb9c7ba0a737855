"""GET /v1/health and GET /v1/models: what this backend is and what it can run."""

from __future__ import annotations

import os
from typing import Any

from fastapi import APIRouter

from .. import API_VERSION, __version__, pipelines
from ..cluster.runner import ClusterWorker
from ..pipelines.stylize_params import ENGINE_WORKING_SIZE
from ..store import JobState
from .services import ServicesDep

router = APIRouter()


def engines() -> dict[str, Any]:
    return {name: {"working_size": size} for name, size in ENGINE_WORKING_SIZE.items()}


@router.get("/v1/health")
def health(services: ServicesDep) -> dict[str, Any]:
    store = services.store
    kinds: dict[str, Any] = {}
    for kind in pipelines.kinds():
        loaded = pipelines.load(kind)
        kinds[kind] = {"available": loaded.pipeline is not None, "error": loaded.error}
    out = {
        "api": API_VERSION,
        "version": __version__,
        "device": services.device,
        "pid": os.getpid(),
        "data_dir": str(store.root),
        "pipelines": kinds,
        "engines": engines(),
        "queue": {
            "running": store.count(JobState.RUNNING),
            "queued": store.count(JobState.QUEUED),
            "max_queued": services.max_queue,
        },
    }
    if isinstance(services.worker, ClusterWorker):  # serve --ray: its address and workers
        out["cluster"] = services.worker.health()
    return out


@router.get("/v1/models")
def models(services: ServicesDep, rescan: bool = False) -> dict[str, Any]:
    """What the last scan of the models folder found (one at start); `rescan=true` scans
    again first, after models were added or removed."""
    listing = services.models(rescan=rescan).to_json()
    listing["engines"] = engines()
    return listing
