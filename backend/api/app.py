"""create_app: the FastAPI application, its routers and error handlers around one Services."""

from __future__ import annotations

from fastapi import FastAPI

from .. import __version__
from . import download_routes, health_routes, input_routes, job_routes, output_routes
from .errors import install_error_handlers
from .services import Services


def create_app(services: Services) -> FastAPI:
    app = FastAPI(
        title="Framesmith backend",
        version=__version__,
        redirect_slashes=False,  # a program's mistake gets a 404, not a redirect to guess from
        description="Stylize renders and in-between keyframes for the Framesmith Blender"
        " extension. Every route needs 'Authorization: Bearer <token>'.",
    )
    app.state.services = services
    install_error_handlers(app)
    for area in (health_routes, job_routes, input_routes, output_routes, download_routes):
        # The routes themselves, not include_router: this FastAPI nests an included router as
        # one lazily-resolved entry, and app.routes (which promise 4 walks to send every route
        # a request without the token) must list each route.
        app.router.routes.extend(area.router.routes)
    return app
