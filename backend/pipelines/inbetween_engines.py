"""Method "diffusion" by engine: params.diffusion.engine picks SparseCtrl in AnimateDiff
(inbetween_diffusion, the default) or Wan2.1-VACE (inbetween_wan); this object hands every call
of the in-between method interface (inbetween_methods.Method) to the job's engine.

Torch-free, like both engines' modules.
"""

from __future__ import annotations

from typing import Any

from ..jobs import JobSpec
from .base import Chunk, RunContext
from .inbetween_diffusion import DiffusionMethod
from .inbetween_params import InbetweenParams
from .inbetween_wan import WanInbetween

ENGINES: dict[str, Any] = {"sparsectrl": DiffusionMethod(), "wan_vace": WanInbetween()}


def engine_of(params: InbetweenParams) -> Any:
    """The method object of the job's diffusion engine."""
    return ENGINES[params.diffusion_settings.engine]


class DiffusionEngines:
    # base.ShrinksOnOutOfMemory for InbetweenPipeline.memory_levels_for: the most any engine
    # has (each engine's plans clamp the level to their own).
    memory_levels = max(int(getattr(m, "memory_levels", 1)) for m in ENGINES.values())

    def check_job(self, job: JobSpec, params: InbetweenParams) -> None:
        engine_of(params).check_job(job, params)

    def missing_models(self, job: JobSpec, params: InbetweenParams, models: Any) -> list[str]:
        return list(engine_of(params).missing_models(job, params, models))

    def pin_models(self, job: JobSpec, params: InbetweenParams, models: Any) -> dict[str, Any]:
        return dict(engine_of(params).pin_models(job, params, models))

    def run_chunk(self, ctx: RunContext, chunk: Chunk, params: InbetweenParams) -> None:
        engine_of(params).run_chunk(ctx, chunk, params)

    def out_of_memory_advice(self, job: JobSpec, params: InbetweenParams) -> str:
        return str(engine_of(params).out_of_memory_advice(job, params))
