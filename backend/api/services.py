"""What every route shares (the store, the worker, the model registry) and the dependency that
hands it to them."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request

from ..cluster.runner import ClusterWorker
from ..downloads import Downloads
from ..models.registry import ModelRegistry
from ..store import DEFAULT_MAX_AWAITING, Store
from ..worker import Worker

log = logging.getLogger("framesmith.api")


@dataclass
class Services:
    store: Store
    worker: Worker | ClusterWorker  # ClusterWorker under `serve --ray`
    models_dir: Path
    max_queue: int = 64
    device: str = "cpu"
    max_awaiting: int = DEFAULT_MAX_AWAITING  # jobs waiting for inputs; the idlest expire
    extra_models: tuple[Path, ...] = ()  # more models folders, scanned read-only
    downloads: Downloads | None = None  # the catalogue's downloads (None: none offered)
    _registry: ModelRegistry | None = None
    _scan_lock: threading.Lock = field(default_factory=threading.Lock)

    def models(self, rescan: bool = False) -> ModelRegistry:
        """The model registry of the last scan; a scan only when asked (rescan) or when none
        has finished yet (a caller then waits for the one in progress, never starts another)."""
        if rescan:
            return self.scan_models()
        registry = self._registry
        if registry is not None:
            return registry
        with self._scan_lock:
            if self._registry is not None:
                return self._registry
        return self.scan_models()

    def models_when_read(self) -> Any:
        """The registry for a path that may not need one (a job start): nothing waits for the
        first scan unless the pipeline actually reads the registry."""
        return self._registry if self._registry is not None else _FirstScan(self)

    def scan_models(self) -> ModelRegistry:
        """Scan the models folder now (one scan at a time) and serve the result from then on."""
        with self._scan_lock:
            started = time.monotonic()
            registry = ModelRegistry(self.models_dir, self.extra_models).scan()
            self._registry = registry
        log.info(
            "models folder %s scanned in %.2f s: %d model(s), %d refused",
            self.models_dir,
            time.monotonic() - started,
            len(registry.entries),
            len(registry.refused),
        )
        return registry


class _FirstScan:
    """Stands for the registry until the first scan has finished; waits for it when read."""

    def __init__(self, services: Services) -> None:
        self._services = services

    def __getattr__(self, name: str) -> Any:
        return getattr(self._services.models(), name)


async def get_services(request: Request) -> Services:
    """The app's Services (create_app keeps them on app.state)."""
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]
