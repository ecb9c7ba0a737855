"""`python -m backend bench stylize --engine wan_vace` runs end to end at its quick sizes: the
real-size Wan2.1-VACE 1.3B (random weights) beside AnimateDiff's real-size speed part, and both
engines side by side. Timings are printed, never asserted: only that they exist and parse."""

from __future__ import annotations

import math
from pathlib import Path

from backend.bench.stylize_report import parse_results
from tests.backend.server import run_bench


def test_quick_engine_bench_times_wan_beside_animatediff(tmp_path: Path) -> None:
    out = run_bench(
        *("stylize", "--engine", "wan_vace"),
        *("--quick", "--device", "cpu", "--workdir", str(tmp_path)),
        timeout=900,
    )
    assert "engine wan_vace: Wan2.1-VACE 1.3B speed" in out and "engines side by side" in out
    assert "transformer 2154 M" in out  # the published 1.3B VACE architecture, full size
    results = parse_results(out)
    assert set(results) == {"speed", "wan_5", "engines"}
    wan = results["wan_5"]
    assert (wan["engine"], wan["width"], wan["height"], wan["frames"]) == ("wan_vace", "32",
                                                                         "32", "5")  # fmt: skip
    for key in ("wall_s", "fps", "step_s", "peak_mb", "tflops"):
        assert math.isfinite(float(wan[key])) and float(wan[key]) > 0, (key, out)
    engines = {k: float(v) for k, v in results["engines"].items()}
    assert set(engines) == {"animatediff_step_s", "animatediff_fps", "animatediff_peak_mb",
                            "wan_5_step_s", "wan_5_fps"}  # fmt: skip
    assert all(math.isfinite(v) and v > 0 for v in engines.values()), engines
