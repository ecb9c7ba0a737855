"""`python -m backend bench stylize` runs end to end at its quick sizes and prints figures that
parse. Timings are printed, never asserted: only that they exist, and what must hold whatever
the machine (the service and the direct pipeline make the very same frames)."""

from __future__ import annotations

import math
from pathlib import Path

from backend.bench.stylize_report import Table, parse_results, result_line
from tests.backend.server import run_bench


def test_result_lines_round_trip_and_tables_align() -> None:
    line = result_line("overhead", {"ratio": 1.05, "frames": 16, "peak": None, "name": "x"})
    assert parse_results("noise\n" + line + "\n") == {
        "overhead": {"ratio": "1.05", "frames": "16", "peak": "nan", "name": "x"}
    }
    table = Table(["what", "seconds"])
    table.add("a longer label", "1.000")
    table.add("b", "12.500")
    lines = table.render().splitlines()
    assert len({len(x) for x in lines}) == 1  # every line as wide: the columns line up
    assert lines[2].startswith("a longer label") and lines[3].endswith("12.500")


def test_quick_stylize_bench_prints_overhead_and_consistency_figures(
    tiny_models: Path, tmp_path: Path
) -> None:
    out = run_bench(
        *("stylize", "--quick"),
        *("--part", "overhead", "--part", "consistency"),
        *("--models", str(tiny_models), "--workdir", str(tmp_path)),
    )
    assert "where the service's time goes" in out and "warping error" in out
    results = parse_results(out)
    assert set(results) == {"overhead", "consistency"}

    overhead = {k: float(v) for k, v in results["overhead"].items()}
    for key in ("service_s", "worker_s", "direct_s", "ratio", "worker_ratio", "upload_s"):
        assert math.isfinite(overhead[key]) and overhead[key] > 0, (key, out)
    # The same job through the service and called directly: identical frames.
    assert overhead["max_diff"] == 0.0

    consistency = {k: float(v) for k, v in results["consistency"].items()}
    for key in ("fusion_on", "fusion_off", "per_frame", "on_vs_off", "on_vs_per_frame"):
        assert math.isfinite(consistency[key]) and consistency[key] >= 0, (key, out)
    assert consistency["render"] < consistency["per_frame"]  # the input is steadier than noise
