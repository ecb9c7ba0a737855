"""The HTTP API (v1): FastAPI routers per area, thin over the store and the worker.

`app.create_app` assembles them; `services` holds what the routes share, `errors` turns the
API's refusals into status codes, `schemas` the request and answer bodies.
"""
