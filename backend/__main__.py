"""Command line: serve, make-tiny-models, doctor, bench.

Each command imports its own modules when it runs, so `serve` does not load torch for the
benchmarks and `doctor` does not load the web server.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .serve_options import add_arguments as add_serve_arguments


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backend", description="Framesmith backend")
    sub = parser.add_subparsers(dest="command", required=True)
    add_serve_arguments(sub.add_parser("serve", help="run the job server"))
    tiny = sub.add_parser("make-tiny-models", help="write tiny random models for tests and demos")
    tiny.add_argument("dest", type=Path)
    doctor = sub.add_parser("doctor", help="check this environment and a models folder")
    doctor.add_argument("--models", type=Path, default=None)
    from .bench import add_arguments as add_bench_arguments

    add_bench_arguments(sub.add_parser("bench", help="run a benchmark and print its figures"))

    args = parser.parse_args(argv)
    if args.command == "serve":
        from .server import serve

        return serve(args)
    if args.command == "make-tiny-models":
        from .models.tiny import make_tiny_models

        for path in make_tiny_models(args.dest, video_models=True):
            print(path)
        return 0
    if args.command == "doctor":
        from .doctor import run

        return run(args.models)
    if args.command == "bench":
        from .bench import run as run_bench

        return run_bench(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
