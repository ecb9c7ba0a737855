"""`python -m backend bench memory` runs end to end at its quick sizes and prints its table and
one RESULT line per method. Memory and seconds are printed, never asserted: only that they were
measured, per case, in a process of its own."""

from __future__ import annotations

import math
from pathlib import Path

from backend.bench.memory import Case, cases, job_body
from backend.bench.stylize_report import parse_results
from tests.backend.server import run_bench


def test_the_default_cases_are_the_issues() -> None:
    render = [c for c in cases(False, ("render",))]
    assert [(c.width, c.height, c.length) for c in render] == [
        (640, 360, 8),
        (640, 360, 32),
        (640, 360, 64),
        (1920, 1080, 16),
    ]
    assert {c.method for c in cases(False, ("render", "flow", "stylize", "diffusion"))} == {
        "render",
        "flow",
        "stylize",
        "diffusion",
    }
    body = job_body(Case("render", 640, 360, 8))
    assert body["keyframes"] == [0, 8] and body["frames"] == list(range(9))
    assert job_body(Case("stylize", 64, 64, 16))["frames"] == list(range(16))


def test_quick_memory_bench_measures_each_case_in_its_own_process(tmp_path: Path) -> None:
    out = run_bench(
        *("memory", "--quick"),
        *("--method", "render", "--method", "flow", "--threads", "1"),
        *("--workdir", str(tmp_path)),
    )
    assert "peak memory of a fresh backend process running one job" in out
    assert "largest case / smallest, per method" in out
    results = parse_results(out)
    assert set(results) == {"render_160x96", "flow_160x96"}
    for figures in results.values():
        values = {k: float(v) for k, v in figures.items()}
        assert values["peak_mb"] > 50, out  # a whole Python process with numpy and OpenCV
        for key in ("memory_ratio", "time_ratio", "s_per_frame"):
            assert math.isfinite(values[key]) and values[key] > 0, (key, out)
    # every case's data folder goes when the case is measured
    assert sorted(p.name for p in tmp_path.iterdir()) == ["no-models"]
