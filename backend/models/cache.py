"""The models one job runs with (ModelSet), loaded once and kept between jobs (ModelCache)."""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from diffusers import (
    ControlNetModel,
    MotionAdapter,
    SparseControlNetModel,
    StableDiffusionPipeline,
)

from ..device import free_memory
from .catalogue import ModelKind
from .dtypes import device_name, dtype_name
from .entries import ModelEntry, fingerprint
from .ip_adapter import load_ip_adapter
from .load_checks import ModelLoadError
from .loaders import (
    ImageEncoder,
    load_checkpoint,
    load_controlnet,
    load_image_encoder,
    load_motion_adapter,
    load_sparsectrl,
)
from .lora import apply_lora
from .registry import ModelRegistry

T = TypeVar("T")


@dataclass(frozen=True)
class LoraSpec:
    name: str
    weight: float = 1.0


@dataclass(frozen=True)
class ModelSet:
    """The models one job runs with: the cache key (names + dtype + device)."""

    checkpoint: str
    motion_adapter: str | None = None
    controlnets: tuple[str, ...] = ()
    sparsectrl: str | None = None
    loras: tuple[LoraSpec, ...] = ()
    ip_adapter: str | None = None  # attached to the checkpoint with image_encoder
    image_encoder: str | None = None
    dtype: str = "float32"
    device: str = "cpu"

    def normalized(self) -> ModelSet:
        return dataclasses.replace(
            self,
            controlnets=tuple(self.controlnets),
            loras=tuple(self.loras),
            dtype=dtype_name(self.dtype),
            device=device_name(self.device),
        )

    def wanted(self) -> list[tuple[str, str, ModelKind]]:
        """(slot, model name, kind) of every model in the set."""
        wanted = [("checkpoint", self.checkpoint, ModelKind.CHECKPOINT)]
        if self.motion_adapter:
            wanted.append(("motion_adapter", self.motion_adapter, ModelKind.MOTION_ADAPTER))
        if self.sparsectrl:
            wanted.append(("sparsectrl", self.sparsectrl, ModelKind.SPARSECTRL))
        wanted += [
            (f"controlnet:{i}", n, ModelKind.CONTROLNET) for i, n in enumerate(self.controlnets)
        ]
        wanted += [(f"lora:{i}", lo.name, ModelKind.LORA) for i, lo in enumerate(self.loras)]
        if self.ip_adapter or self.image_encoder:
            if not (self.ip_adapter and self.image_encoder):
                raise ModelLoadError("an IP-Adapter needs both the adapter and an image encoder")
            wanted.append(("ip_adapter", self.ip_adapter, ModelKind.IP_ADAPTER))
            wanted.append(("image_encoder", self.image_encoder, ModelKind.IMAGE_ENCODER))
        return wanted


@dataclass
class LoadedModels:
    models: ModelSet
    pipe: StableDiffusionPipeline  # LoRAs already merged
    motion_adapter: MotionAdapter | None
    controlnets: tuple[ControlNetModel, ...]
    sparsectrl: SparseControlNetModel | None
    entries: dict[str, ModelEntry] = field(default_factory=dict)
    fingerprint: tuple[Any, ...] = ()
    image_encoder: ImageEncoder | None = None  # with an IP-Adapter attached to pipe


class ModelCache:
    """Keeps the models of the last `max_sets` model sets loaded, sharing identical components.

    `load(models)` returns the same LoadedModels object for the same set until a file changes
    or the set is evicted; components shared between consecutive sets (the checkpoint when only
    the ControlNets change) are reused instead of reloaded.
    """

    def __init__(self, registry: ModelRegistry, max_sets: int = 1) -> None:
        self.registry = registry
        self.max_sets = max(1, max_sets)
        self._sets: OrderedDict[ModelSet, LoadedModels] = OrderedDict()
        self._components: dict[tuple[Any, ...], Any] = {}
        self._lock = threading.RLock()

    def __len__(self) -> int:
        return len(self._sets)

    def __contains__(self, models: object) -> bool:
        return isinstance(models, ModelSet) and models.normalized() in self._sets

    def load(self, models: ModelSet) -> LoadedModels:
        key = models.normalized()
        with self._lock:
            entries = self._entries(key)
            prints = tuple(fingerprint(e) for e in entries.values())
            cached = self._sets.get(key)
            if cached is not None and cached.fingerprint == prints:
                self._sets.move_to_end(key)
                return cached
            loaded = self._assemble(key, entries, prints)
            self._sets[key] = loaded
            self._sets.move_to_end(key)
            while len(self._sets) > self.max_sets:
                self._sets.popitem(last=False)
            self._drop_unused()
            return loaded

    def clear(self) -> None:
        with self._lock:
            self._sets.clear()
            self._components.clear()
        free_memory()

    def _entries(self, key: ModelSet) -> dict[str, ModelEntry]:
        entries: dict[str, ModelEntry] = {}
        for slot, name, kind in key.wanted():
            try:
                entries[slot] = self.registry.get(name, kind)
            except KeyError as exc:
                raise ModelLoadError(str(exc.args[0])) from None
        return entries

    def _component(self, key: tuple[Any, ...], factory: Callable[[], T]) -> T:
        if key not in self._components:
            self._components[key] = factory()
        return self._components[key]

    def _assemble(
        self, key: ModelSet, entries: dict[str, ModelEntry], prints: tuple[Any, ...]
    ) -> LoadedModels:
        common = {"registry": self.registry, "dtype": key.dtype, "device": key.device}
        where = (key.dtype, key.device)

        def fp(slot: str) -> tuple[Any, ...]:
            return fingerprint(entries[slot])

        encoder = None
        if "image_encoder" in entries:
            encoder = self._component(
                ("image_encoder", fp("image_encoder"), *where),
                lambda: load_image_encoder(entries["image_encoder"], **common),
            )
        pipe = self._checkpoint(key, entries, encoder)
        adapter = None
        if "motion_adapter" in entries:
            adapter = self._component(
                ("motion", fp("motion_adapter"), *where),
                lambda: load_motion_adapter(entries["motion_adapter"], **common),
            )
        sparse = None
        if "sparsectrl" in entries:
            sparse = self._component(
                ("sparsectrl", fp("sparsectrl"), *where),
                lambda: load_sparsectrl(entries["sparsectrl"], **common),
            )
        nets = tuple(
            self._component(
                ("controlnet", fp(f"controlnet:{i}"), *where),
                lambda i=i: load_controlnet(entries[f"controlnet:{i}"], **common),
            )
            for i in range(len(key.controlnets))
        )
        return LoadedModels(
            models=key,
            pipe=pipe,
            motion_adapter=adapter,
            controlnets=nets,
            sparsectrl=sparse,
            entries=entries,
            fingerprint=prints,
            image_encoder=encoder,
        )

    def _checkpoint(
        self, key: ModelSet, entries: dict[str, ModelEntry], encoder: ImageEncoder | None
    ) -> StableDiffusionPipeline:
        """The checkpoint with its LoRAs and IP-Adapter: keyed by all three, since both change
        the pipeline in place."""
        loras = tuple(
            (fingerprint(entries[f"lora:{i}"]), lo.weight) for i, lo in enumerate(key.loras)
        )
        ip: tuple[Any, ...] = ()
        if encoder is not None:
            ip = (fingerprint(entries["ip_adapter"]), fingerprint(entries["image_encoder"]))

        def load() -> StableDiffusionPipeline:
            pipe = load_checkpoint(
                entries["checkpoint"], registry=self.registry, dtype=key.dtype, device=key.device
            )
            for i, lora in enumerate(key.loras):
                apply_lora(pipe, entries[f"lora:{i}"], lora.weight, registry=self.registry)
            if encoder is not None:
                load_ip_adapter(pipe, entries["ip_adapter"], encoder, registry=self.registry)
            return pipe

        slot = ("checkpoint", fingerprint(entries["checkpoint"]), loras, ip, key.dtype, key.device)
        return self._component(slot, load)

    def _drop_unused(self) -> None:
        used: set[int] = set()
        for loaded in self._sets.values():
            used |= {id(loaded.pipe), id(loaded.motion_adapter), id(loaded.sparsectrl)}
            used.add(id(loaded.image_encoder))
            used |= {id(n) for n in loaded.controlnets}
        before = len(self._components)
        self._components = {k: v for k, v in self._components.items() if id(v) in used}
        if len(self._components) != before:
            free_memory()
