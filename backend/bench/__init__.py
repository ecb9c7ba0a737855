"""Benchmarks: `python -m backend bench <name> [options]` prints figures and ratios.

Each benchmark is a module here with `add_arguments(parser)` and `run(args) -> int`.
"""

from __future__ import annotations

import argparse
import importlib

BENCHMARKS = {
    "stylize": "ControlNet video diffusion: service overhead, real-size speed, temporal consistency",
    "inbetween": "keyframe in-betweening: quality on rendered shots and 1080p speed",
    "ui": "the add-on's longest main-thread stall while an interactive take renders",
    "scale": "jobs per minute on a local Ray cluster of 1 and 2 workers; what bounds the head",
    "memory": "peak memory and time of one job as the shot grows (in-betweens, stylize)",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench", required=True)
    for name, text in BENCHMARKS.items():
        module = importlib.import_module(f"{__name__}.{name}")
        module.add_arguments(sub.add_parser(name, help=text, description=text))


def run(args: argparse.Namespace) -> int:
    module = importlib.import_module(f"{__name__}.{args.bench}")
    return module.run(args)
