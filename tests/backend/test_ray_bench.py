"""`python -m backend bench scale --quick` runs end to end on real local Ray clusters and prints
figures that parse. Timings are printed, never asserted: only that each was measured."""

from __future__ import annotations

import math
from pathlib import Path

from backend.bench.stylize_report import parse_results
from tests.backend.server import run_bench


def test_quick_scale_bench_prints_jobs_per_minute_and_the_heads_bounds(tmp_path: Path) -> None:
    out = run_bench("scale", "--quick", "--workdir", str(tmp_path))
    results = parse_results(out)
    scale = {k: float(v) for k, v in results["scale"].items()}
    for key in ("jpm_1", "jpm_2", "ratio", "per_core_ratio", "worker_cores_1", "worker_cores_2"):
        assert math.isfinite(scale[key]) and scale[key] > 0, (key, out)
    head = {k: float(v) for k, v in results["head"].items()}
    for key in ("png_mb", "write_fps", "receive_fps", "receive_write_fps", "sqlite_tx_s"):
        assert math.isfinite(head[key]) and head[key] > 0, (key, out)
