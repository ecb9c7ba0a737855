"""How the cluster cuts a job's plan into pieces and which piece waits for which (no Ray), and
the `--ray` option's values. The real pipelines plan the jobs."""

from __future__ import annotations

import pytest

from backend.cluster.options import BadClusterOption, parse_cluster
from backend.cluster.pieces import Dependence, dependence, plan_pieces
from backend.jobs import JobSpec
from backend.pipelines.base import Chunk
from backend.pipelines.inbetween import InbetweenPipeline
from backend.pipelines.stylize import StylizePipeline


def stylize(params: dict, frames: range) -> JobSpec:
    return JobSpec("j", "stylize", 64, 64, tuple(frames), (), {"prompt": "x", **params})


def pieces_of(job: JobSpec, pipeline) -> list[tuple[tuple[int, ...], int | None]]:
    return [(p.chunk.frames, p.after) for p in plan_pieces(job, pipeline.plan(job))]


def test_inbetween_key_intervals_are_independent() -> None:
    job = JobSpec("j", "inbetween", 64, 48, tuple(range(0, 25)), (0, 8, 16, 24), {})
    pieces = pieces_of(job, InbetweenPipeline())
    assert [after for _, after in pieces] == [None, None, None]
    assert sum((frames for frames, _ in pieces), ()) == tuple(range(0, 25))


def test_per_frame_stylize_is_cut_into_frames() -> None:
    job = stylize({"mode": "per_frame", "chunk_size": 3}, range(10, 17))
    assert dependence(job) is Dependence.SINGLE_FRAMES
    assert pieces_of(job, StylizePipeline()) == [((f,), None) for f in range(10, 17)]


def test_video_chunks_holding_a_seam_wait_for_their_predecessor() -> None:
    seamed = stylize({"chunk_size": 8, "overlap": 2}, range(20))
    assert [after for _, after in pieces_of(seamed, StylizePipeline())] == [None, 0, 1]
    apart = stylize({"chunk_size": 8, "overlap": 0}, range(20))
    assert [after for _, after in pieces_of(apart, StylizePipeline())] == [None, None, None]
    wan = stylize({"engine": "wan_vace", "vace": {"window": 9, "overlap": 2}}, range(20))
    assert [after for _, after in pieces_of(wan, StylizePipeline())] == [None, 0, 1]


def test_an_unknown_kind_runs_its_chunks_in_order() -> None:
    job = JobSpec("j", "future-kind", 8, 8, (0, 1, 2), (), {})
    chunks = [Chunk(i, (i,), (i,)) for i in range(3)]
    assert [p.after for p in plan_pieces(job, chunks)] == [None, 0, 1]


def test_the_ray_option() -> None:
    local = parse_cluster("local:3", threads=2)
    assert (local.local_workers, local.address, local.threads, local.is_local) == (3, None, 2, True)
    joined = parse_cluster("10.0.0.5:6379")
    assert (joined.local_workers, joined.address, joined.is_local) == (None, "10.0.0.5:6379", False)
    for bad in ("local:0", "local:x", "local:65", "10.0.0.5", "http://x:1", "ray://h:10001", ""):
        with pytest.raises(BadClusterOption):
            parse_cluster(bad)
    with pytest.raises(BadClusterOption, match="--ray-threads"):
        parse_cluster("local:1", threads=0)
