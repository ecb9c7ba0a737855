"""HTTP routes (v1). Thin: validation and translation only; the work is in store and worker."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Header, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from . import API_VERSION, __version__, pipelines
from .pipelines.base import (
    ANY_SIZE_PASSES,
    InputError,
    JobSpec,
    Pass,
    Pipeline,
    validation_text,
)
from .pipelines.stylize_params import ENGINE_WORKING_SIZE
from .store import IdempotencyConflict, JobRecord, JobState, Store, UnsafePath
from .worker import MAX_PIXELS, Worker

log = logging.getLogger("framesmith.api")

MAX_FRAMES = 100_000
MAX_SIDE = 8192


@dataclass
class Services:
    store: Store
    worker: Worker
    models_dir: Path
    max_queue: int = 64
    device: str = "cpu"
    _registry: Any = None
    _registry_lock: threading.Lock = field(default_factory=threading.Lock)

    def models(self, rescan: bool = False) -> Any:
        """The model registry (scanned on first use; rescanned on request)."""
        with self._registry_lock:
            if self._registry is None or rescan:
                from .models.registry import ModelRegistry

                registry = ModelRegistry(self.models_dir)
                registry.scan()
                self._registry = registry
            return self._registry


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str = Field(description="stylize or inbetween")
    frames: list[int] = Field(min_length=1, max_length=MAX_FRAMES, description="output frames")
    width: int = Field(ge=8, le=MAX_SIDE)
    height: int = Field(ge=8, le=MAX_SIDE)
    params: dict[str, Any] = Field(default_factory=dict)
    keyframes: list[int] = Field(default_factory=list, max_length=MAX_FRAMES)


class JobCheck(BaseModel):
    ok: bool = Field(description="true when a job created with this body could start")
    problems: list[str] = Field(description="one sentence per reason it could not, for a person")


class ProgressOut(BaseModel):
    stage: str
    done: int
    total: int
    chunk: int
    chunks: int
    fraction: float


class JobOut(BaseModel):
    id: str
    kind: str
    state: JobState
    progress: ProgressOut
    error: str | None
    finished_frames: list[int]
    frames: list[int]
    keyframes: list[int]
    width: int
    height: int
    params: dict[str, Any]
    missing_inputs: dict[str, list[int]]
    cancel_requested: bool
    created_at: float
    updated_at: float


def create_app(services: Services) -> FastAPI:
    app = FastAPI(
        title="Framesmith backend",
        version=__version__,
        redirect_slashes=False,  # a program's mistake gets a 404, not a redirect to guess from
        description="Stylize renders and in-between keyframes for the Framesmith Blender"
        " extension. Every route needs 'Authorization: Bearer <token>'.",
    )
    store = services.store

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": _readable(exc.errors())})

    def job_or_404(job_id: str) -> JobRecord:
        job = store.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job with id {job_id!r}")
        return job

    def pipeline_for(kind: str) -> Pipeline:
        try:
            return pipelines.get(kind)
        except LookupError as exc:
            raise HTTPException(400, str(exc)) from exc

    def missing_inputs(job: JobRecord, pipeline: Pipeline | None) -> dict[str, list[int]]:
        if pipeline is None or job.state is not JobState.AWAITING_INPUTS:
            return {}
        have = store.uploaded(job.id)
        out: dict[str, list[int]] = {}
        for p, frames in pipeline.required_inputs(job.spec()).items():
            missing = [f for f in frames if f not in have.get(p, set())]
            if missing:
                out[p.value] = missing
        return out

    def job_out(job: JobRecord) -> JobOut:
        loaded = pipelines.load(job.kind)
        p = job.progress
        return JobOut(
            id=job.id,
            kind=job.kind,
            state=job.state,
            progress=ProgressOut(
                stage=p.stage,
                done=p.done,
                total=p.total,
                chunk=p.chunk,
                chunks=p.chunks,
                fraction=1.0 if job.state is JobState.DONE else p.fraction,
            ),
            error=job.error,
            finished_frames=store.finished_frames(job.id),
            frames=list(job.frames),
            keyframes=list(job.keyframes),
            width=job.width,
            height=job.height,
            params=job.params,
            missing_inputs=missing_inputs(job, loaded.pipeline),
            cancel_requested=job.cancel_requested,
            created_at=job.created_at,
            updated_at=job.updated_at,
        )

    def engines() -> dict[str, Any]:
        return {name: {"working_size": size} for name, size in ENGINE_WORKING_SIZE.items()}

    @app.get("/v1/health")
    def health() -> dict[str, Any]:
        kinds: dict[str, Any] = {}
        for kind in pipelines.kinds():
            loaded = pipelines.load(kind)
            kinds[kind] = {"available": loaded.pipeline is not None, "error": loaded.error}
        return {
            "api": API_VERSION,
            "version": __version__,
            "device": services.device,
            "pipelines": kinds,
            "engines": engines(),
            "queue": {
                "running": store.count(JobState.RUNNING),
                "queued": store.count(JobState.QUEUED),
                "max_queued": services.max_queue,
            },
        }

    @app.get("/v1/models")
    def models(rescan: bool = True) -> dict[str, Any]:
        listing = services.models(rescan=rescan).to_json()
        listing["engines"] = engines()
        return listing

    def validated(body: JobCreate) -> tuple[Pipeline, JobSpec]:
        """The body's pipeline and job, params cleaned; HTTPException when it cannot be one."""
        pipeline = pipeline_for(body.kind)
        frames = tuple(body.frames)
        keyframes = tuple(body.keyframes)
        for name, values in (("frames", frames), ("keyframes", keyframes)):
            if list(values) != sorted(set(values)):
                raise HTTPException(422, f"{name} must be ascending without repeats")
        try:
            params = pipeline.params_model().model_validate(body.params)
        except ValidationError as exc:
            raise HTTPException(422, "params: " + validation_text(exc)) from exc
        clean = params.model_dump(mode="json")
        spec = JobSpec("0" * 32, body.kind, body.width, body.height, frames, keyframes, clean)
        try:
            pipeline.check_job(spec)
        except InputError as exc:
            raise HTTPException(422, str(exc)) from exc
        return pipeline, spec

    @app.post("/v1/jobs/check", response_model=JobCheck)
    def check_job(body: JobCreate) -> JobCheck:
        """What POST /v1/jobs and its start would refuse for this body (the models installed
        now included), before anything is rendered or uploaded. Creates nothing."""
        try:
            pipeline, spec = validated(body)
        except HTTPException as exc:
            return JobCheck(ok=False, problems=[str(exc.detail)])
        missing = pipeline.missing_models(spec, services.models())
        if missing:  # maybe installed since the last scan: the user was just told to
            missing = pipeline.missing_models(spec, services.models(rescan=True))
        problems = ["models missing: " + " ".join(missing)] if missing else []
        return JobCheck(ok=not problems, problems=problems)

    @app.post("/v1/jobs", status_code=201, response_model=JobOut)
    def create_job(
        body: JobCreate,
        response: Response,
        idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
    ) -> JobOut:
        _, spec = validated(body)
        request_hash = hashlib.sha256(
            json.dumps(body.model_dump(mode="json"), sort_keys=True).encode()
        ).hexdigest()
        try:
            job, created = store.create_job(
                kind=body.kind,
                width=body.width,
                height=body.height,
                frames=spec.frames,
                keyframes=spec.keyframes,
                params=dict(spec.params),
                idempotency_key=idempotency_key,
                request_hash=request_hash,
            )
        except IdempotencyConflict as exc:
            raise HTTPException(
                409, "this Idempotency-Key was already used for a different request"
            ) from exc
        if not created:
            response.status_code = 200
        return job_out(job)

    @app.put("/v1/jobs/{job_id}/inputs/{pass_name}/{frame}")
    async def upload_input(job_id: str, pass_name: Pass, frame: int, request: Request) -> dict:
        job = job_or_404(job_id)
        if job.state is not JobState.AWAITING_INPUTS:
            raise HTTPException(409, f"job {job_id} is {job.state.value}; inputs are closed")
        pipeline = pipeline_for(job.kind)
        accepted = pipeline.accepted_inputs(job.spec())
        if pass_name not in accepted:
            names = ", ".join(p.value for p in accepted) or "none"
            raise HTTPException(
                422, f"a {job.kind} job takes no {pass_name.value} pass (it takes: {names})"
            )
        if frame not in accepted[pass_name]:
            raise HTTPException(
                422, f"frame {frame} is not one this job takes a {pass_name.value} pass for"
            )
        data = bytearray()
        async for chunk in request.stream():
            data.extend(chunk)
        if not data:
            raise HTTPException(400, "empty body: send the PNG or EXR file's bytes")

        def validate_and_save() -> dict:
            from .vision.imageio import decode, probe

            raw = bytes(data)
            try:
                info = probe(raw)
                decode(
                    raw,
                    max_pixels=MAX_PIXELS,
                    expect_size=None if pass_name in ANY_SIZE_PASSES else (job.width, job.height),
                    pass_=pass_name,
                )
            except InputError as exc:
                raise HTTPException(400, f"{pass_name.value} frame {frame}: {exc}") from exc
            try:
                store.save_input(job_id, pass_name, frame, info.format, raw)
            except UnsafePath as exc:
                raise HTTPException(409, str(exc)) from exc
            return {
                "pass": pass_name.value,
                "frame": frame,
                "format": info.format,
                "width": info.width,
                "height": info.height,
                "bytes": len(raw),
            }

        return await run_in_threadpool(validate_and_save)

    @app.post("/v1/jobs/{job_id}/start", response_model=JobOut)
    def start_job(job_id: str, response: Response) -> JobOut:
        job = job_or_404(job_id)
        if job.state in (JobState.QUEUED, JobState.RUNNING):
            return job_out(job)
        if job.state.terminal:
            raise HTTPException(409, f"job {job_id} is {job.state.value}; create a new job")
        pipeline = pipeline_for(job.kind)
        missing = missing_inputs(job, pipeline)
        if missing:
            listed = "; ".join(f"{p} for frame(s) {_frames(fs)}" for p, fs in missing.items())
            raise HTTPException(400, f"inputs missing: {listed}")
        models = services.models()
        missing_models = pipeline.missing_models(job.spec(), models)
        if missing_models:
            raise HTTPException(400, "models missing: " + " ".join(missing_models))
        pinned = pipeline.pin_models(job.spec(), models)
        if pinned != job.params:
            store.set_params(job_id, pinned)
        if store.count(JobState.QUEUED) >= services.max_queue:
            raise HTTPException(
                429, f"the queue is full ({services.max_queue} jobs); try again when one finishes"
            )
        started = store.transition(
            job_id, JobState.QUEUED, allowed_from=(JobState.AWAITING_INPUTS,)
        )
        services.worker.notify()
        response.status_code = 202
        return job_out(started or job_or_404(job_id))

    @app.get("/v1/jobs/{job_id}", response_model=JobOut)
    def get_job(job_id: str) -> JobOut:
        return job_out(job_or_404(job_id))

    @app.get(
        "/v1/jobs/{job_id}/outputs/{frame}",
        responses={200: {"content": {"image/png": {}}}},
        response_class=Response,
    )
    def get_output(job_id: str, frame: int) -> Response:
        job = job_or_404(job_id)
        if frame not in job.frames:
            raise HTTPException(404, f"frame {frame} is not part of job {job_id}")
        data = store.read_output(job_id, frame)
        if data is None:
            raise HTTPException(
                404, f"frame {frame} is not finished yet (job is {job.state.value})"
            )
        return Response(content=data, media_type="image/png")

    @app.post("/v1/jobs/{job_id}/cancel", response_model=JobOut)
    def cancel_job(job_id: str) -> JobOut:
        job = job_or_404(job_id)
        if job.state.terminal:
            raise HTTPException(
                409, f"job {job_id} is {job.state.value}; a finished job cannot be canceled"
            )
        services.worker.cancel(job_id)
        store.transition(
            job_id, JobState.CANCELED, allowed_from=(JobState.AWAITING_INPUTS, JobState.QUEUED)
        )
        return job_out(job_or_404(job_id))

    @app.get("/v1/jobs", response_model=list[JobOut])
    def list_jobs(
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        state: JobState | None = None,
    ) -> list[JobOut]:
        return [job_out(j) for j in store.list(limit=limit, state=state)]

    @app.delete("/v1/jobs/{job_id}")
    def delete_job(job_id: str) -> dict[str, str]:
        job = job_or_404(job_id)
        if (
            job.state in (JobState.RUNNING, JobState.QUEUED)
            or services.worker.current_job == job_id
        ):
            raise HTTPException(409, f"job {job_id} is {job.state.value}; cancel it first")
        store.delete(job_id)
        return {"deleted": job_id}

    return app


def _frames(frames: list[int]) -> str:
    shown = ", ".join(str(f) for f in frames[:12])
    return shown + (f" and {len(frames) - 12} more" if len(frames) > 12 else "")


def _readable(errors: Any) -> str:
    parts = []
    for e in errors:
        where = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
        parts.append(f"{where}: {e.get('msg')}" if where else str(e.get("msg")))
    return "; ".join(parts)
