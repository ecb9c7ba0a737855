"""The model catalogue and its downloads: GET /v1/catalogue, POST /v1/downloads,
GET /v1/downloads[/{id}], POST /v1/downloads/{id}/cancel."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from ..downloads import Download, Downloads, UnknownModel
from .errors import ApiError, NotFound
from .services import Services, ServicesDep

router = APIRouter()


class DownloadCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, description="a catalogue entry's name")


class DownloadOut(BaseModel):
    id: str
    name: str
    state: str = Field(description="queued, running, done, failed or canceled")
    done_bytes: int
    total_bytes: int | None
    error: str | None


class Unavailable(ApiError):
    status = 503


def downloads_of(services: Services) -> Downloads:
    downloads = services.downloads
    if downloads is None:
        raise Unavailable("this backend was started without downloads")
    return downloads


def existing(downloads: Downloads, download_id: str) -> Download:
    try:
        return downloads.get(download_id)
    except KeyError:
        raise NotFound(
            f"no download {download_id!r} (downloads are forgotten at restart)"
        ) from None


@router.get("/v1/catalogue")
def catalogue(services: ServicesDep) -> dict[str, Any]:
    """Every model the backend can download, whether it is installed, and which pipelines
    need it (no model of its kind is installed)."""
    downloads = downloads_of(services)
    kinds = {e.kind for e in services.models().entries}
    return {"models": downloads.catalogue_json(kinds)}


@router.post("/v1/downloads", response_model=DownloadOut, status_code=202)
def start_download(body: DownloadCreate, services: ServicesDep, response: Response) -> Any:
    """Download a catalogue entry into the models folder (202); an installed one answers 200
    with state done, one already downloading answers its download."""
    downloads = downloads_of(services)
    try:
        download, _ = downloads.start(body.name)
    except UnknownModel:
        names = ", ".join(sorted(downloads.catalogue))
        raise NotFound(f"no model called {body.name!r} in the catalogue (known: {names})") from None
    if download.finished:
        response.status_code = 200
    return download.to_json()


@router.get("/v1/downloads", response_model=list[DownloadOut])
def list_downloads(services: ServicesDep) -> Any:
    return [d.to_json() for d in downloads_of(services).list()]


@router.get("/v1/downloads/{download_id}", response_model=DownloadOut)
def get_download(download_id: str, services: ServicesDep) -> Any:
    return existing(downloads_of(services), download_id).to_json()


@router.post("/v1/downloads/{download_id}/cancel", response_model=DownloadOut)
def cancel_download(download_id: str, services: ServicesDep) -> Any:
    """Stop a queued or running download and remove what it staged; nothing of it stays in
    the models folder. A finished download is answered as it is."""
    downloads = downloads_of(services)
    existing(downloads, download_id)
    return downloads.cancel(download_id).to_json()
