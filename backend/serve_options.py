"""The command line of `python -m backend serve`."""

from __future__ import annotations

import argparse
from pathlib import Path

from .store import DEFAULT_MAX_AWAITING

TOKEN_ENV = "FRAMESMITH_TOKEN"
DEFAULT_DECODE_BUDGET_MB = 2048


def add_arguments(p: argparse.ArgumentParser) -> None:
    _add_network_arguments(p)
    _add_folder_arguments(p)
    _add_limit_arguments(p)
    _add_tls_arguments(p)
    _add_cluster_arguments(p)


def _add_cluster_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--ray",
        default=None,
        metavar="local:N|HOST:PORT",
        help="run jobs on a Ray cluster (needs requirements/ray.txt): local:N starts one of N"
        " workers on this machine, bound to 127.0.0.1; HOST:PORT joins a running cluster (this"
        " machine must be one of its nodes). This process stays the API, queue and store",
    )
    p.add_argument(
        "--ray-threads",
        type=int,
        default=1,
        metavar="N",
        help="CPU threads each Ray worker may use (default 1)",
    )


def _add_network_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port; 0 picks a free one (default)")
    p.add_argument(
        "--token",
        default=None,
        help=f"bearer token clients must send (default: ${TOKEN_ENV}, else a random one written"
        " to the ready file); required for a non-loopback --host",
    )
    p.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="an extra Host name clients use to reach this server (repeatable)",
    )


def _add_folder_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, default=None, help="jobs, database and logs folder")
    p.add_argument("--models", type=Path, default=None, help="models folder (default DATA/models)")
    p.add_argument("--ready-file", type=Path, default=None, help="default DATA/backend.json")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    p.add_argument(
        "--extra-models",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="another models folder the registry scans too, read-only (a ComfyUI or A1111"
        " models tree, so its models need no copy); repeatable",
    )
    p.add_argument(
        "--catalogue",
        type=Path,
        default=None,
        metavar="FILE",
        help="a JSON list of catalogue entries that add to the built-in ones or replace them by"
        " name (the models GET /v1/catalogue offers and POST /v1/downloads fetches)",
    )


def _add_limit_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-upload-mb", type=int, default=512, help="largest single upload")
    p.add_argument("--max-queue", type=int, default=64, help="queued jobs before 429")
    p.add_argument(
        "--max-awaiting",
        type=int,
        default=DEFAULT_MAX_AWAITING,
        help="jobs that may wait for their inputs at once; past it the one idle longest"
        f" expires (default {DEFAULT_MAX_AWAITING})",
    )
    p.add_argument(
        "--decode-budget-mb",
        type=int,
        default=DEFAULT_DECODE_BUDGET_MB,
        help="memory all image decodes in flight may take together; one image may take half"
        f" (default {DEFAULT_DECODE_BUDGET_MB})",
    )
    p.add_argument(
        "--idle-exit",
        type=float,
        default=0,
        metavar="SECONDS",
        help="exit after this long with no request and no queued or running job (0: never);"
        " the add-on's local backend uses it so a closed Blender leaves no server behind",
    )


def _add_tls_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--tls-cert",
        type=Path,
        default=None,
        metavar="FILE",
        help="serve HTTPS with this PEM certificate (or chain, the server's first); needs --tls-key",
    )
    p.add_argument(
        "--tls-key",
        type=Path,
        default=None,
        metavar="FILE",
        help="the unencrypted PEM private key of --tls-cert",
    )
    p.add_argument(
        "--tls-self-signed",
        action="store_true",
        help="serve HTTPS with a self-signed certificate for 127.0.0.1, localhost, --host and"
        " every --allow-host name, made once and kept in DATA/tls; its SHA-256 fingerprint,"
        " printed at start and written in the ready file, goes into the add-on's preferences",
    )
    p.add_argument(
        "--insecure-http",
        action="store_true",
        help="serve plain HTTP on a non-loopback --host: the token and every frame cross the"
        " network readable by anyone on it (only behind a TLS proxy or on a network you trust)",
    )
