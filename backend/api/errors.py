"""The API's refusals and the one handler per error type that turns each into its answer:
a status code and {"detail": "<a sentence for the user>"}."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from ..store import IdempotencyConflict, InputsClosed
from ..store_files import UnsafePath


class ApiError(Exception):
    """A request the API refuses; `detail` is the sentence the client shows."""

    status: ClassVar[int] = 400

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BadRequest(ApiError):
    status = 400


class NotFound(ApiError):
    status = 404


class Conflict(ApiError):
    """The job's state does not allow this request (now, or ever)."""

    status = 409


class Unprocessable(ApiError):
    """A well-formed request whose values cannot make a job."""

    status = 422


class TooBusy(ApiError):
    """Refused for now (a full queue, the decode budget in use): try again later."""

    status = 429


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(IdempotencyConflict, _idempotency_conflict)
    app.add_exception_handler(InputsClosed, _inputs_closed)
    app.add_exception_handler(UnsafePath, _unsafe_path)


def _answer(status: int, detail: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": detail})


async def _validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return _answer(422, readable(exc.errors()))


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return _answer(exc.status, exc.detail)


async def _idempotency_conflict(_: Request, exc: Exception) -> JSONResponse:
    return _answer(409, "this Idempotency-Key was already used for a different request")


async def _inputs_closed(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InputsClosed)
    return _answer(404 if exc.state is None else 409, str(exc))


async def _unsafe_path(_: Request, exc: Exception) -> JSONResponse:
    return _answer(409, str(exc))


def readable(errors: Sequence[Any]) -> str:
    """FastAPI's validation errors as one line: 'frames: List should have ...; width: ...'."""
    parts = []
    for e in errors:
        where = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
        parts.append(f"{where}: {e.get('msg')}" if where else str(e.get("msg")))
    return "; ".join(parts)
