"""`serve --ray local:2`: the real backend process starts a real local Ray cluster on 127.0.0.1
and runs real in-between jobs on its two workers, over real HTTP.

Two jobs run at once on the two workers; a worker killed with SIGKILL mid-piece loses only that
piece (its finished frames stay, never rewritten) and both jobs end with frames byte-identical
to a single-process backend's; cancel reaches the workers within a step; a worker that dies at
start is reported, and jobs fail saying so instead of waiting for ever. One cluster serves the
module's tests (starting one costs seconds); the hold fault (backend/cluster/faults.py) catches
workers mid-piece, one armed hold per catch.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.backend.ray_cluster import (
    LOOPBACK_HEX,
    Holds,
    cluster_health,
    descendants,
    listening_addresses,
    poll,
    workers_ready,
)
from tests.backend.server import Backend, outputs, wait_for, wait_until
from tests.promises.support import TERMINAL, create_inbetween, file_facts, square_keys, start

W, H = 96, 64


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, tiny_models: Path
) -> Iterator[tuple[Backend, Holds]]:
    root = tmp_path_factory.mktemp("ray")
    holds = Holds(root / "holds")
    b = Backend(
        data=root / "data",
        models=tiny_models,  # read only, as every backend reads its models
        extra_args=["--ray", "local:2"],
        env={"FRAMESMITH_FAULT_RAY_HOLD_DIR": str(holds.folder)},
    ).start()
    try:
        with b.client() as c:
            workers_ready(c, 2)
        yield b, holds
    finally:
        b.stop()


def shot(seed: float, keys: tuple[int, ...]) -> dict:
    """Keyframes of a textured square moving right, from a position set by `seed`."""
    return square_keys({k: seed + 3.0 * i * (k - keys[0]) / 8 for i, k in enumerate(keys)}, W, H)


def test_the_local_cluster_listens_on_loopback_only(cluster) -> None:
    b, _ = cluster
    with b.client() as c:
        health = cluster_health(c)
    assert health["address"].startswith("127.0.0.1:"), health
    assert [w["node"] for w in health["workers"]] == ["127.0.0.1", "127.0.0.1"]
    assert len({w["pid"] for w in health["workers"]}) == 2
    assert all(w["device"] == "cpu" for w in health["workers"])
    processes = descendants(b.proc.pid)
    assert {w["pid"] for w in health["workers"]} <= processes
    listening = listening_addresses(processes)
    assert len(listening) >= 3, listening  # the API, Ray's control store, its node manager, ...
    assert set(listening) <= LOOPBACK_HEX, f"a Ray process listens beyond 127.0.0.1: {listening}"


def test_two_jobs_at_once_and_a_killed_worker_loses_only_its_piece(cluster, make_backend) -> None:
    b, holds = cluster
    key_sets = [shot(4.0, (0, 24)), shot(10.0, (0, 12, 24))]
    with b.client() as c:
        restarts = sum(w["restarts"] for w in cluster_health(c)["workers"])
        holds.arm("a")
        first = create_inbetween(c, key_sets[0], range(0, 25))["id"]
        start(c, first)
        caught = holds.wait_held("a")
        assert caught.job == first
        wait_until(c, first, lambda j: len(j["finished_frames"]) >= 1)
        holds.arm("b")
        second = create_inbetween(c, key_sets[1], range(0, 25))["id"]
        start(c, second)
        other = holds.wait_held("b")
        assert other.job == second and other.pid != caught.pid
        busy = {w["pid"]: w["job"] for w in cluster_health(c)["workers"] if w["busy"]}
        assert busy == {caught.pid: first, other.pid: second}, "two jobs, two workers, at once"
        outputs_dir = b.data / "jobs" / first / "outputs"
        before = file_facts(outputs_dir)
        assert before, "the held worker's first frame was written before the kill"

        os.kill(caught.pid, signal.SIGKILL)  # mid-piece: the worker holds its piece
        holds.release("b")
        jobs = [wait_for(c, j, TERMINAL) for j in (first, second)]
        assert [j["state"] for j in jobs] == ["done", "done"], jobs
        after = file_facts(outputs_dir)
        assert {n: after[n] for n in before} == before, "a frame written before the kill changed"
        workers = workers_ready(c, 2)  # the killed worker's slot has a new one
        assert caught.pid not in {w["pid"] for w in workers}
        assert sum(w["restarts"] for w in workers) == restarts + 1
        got = [outputs(c, j) for j in jobs]

    single = make_backend("single").start()
    with single.client() as c:
        for keys, frames in zip(key_sets, got, strict=True):
            job = create_inbetween(c, keys, range(0, 25))
            start(c, job["id"])
            done = wait_for(c, job["id"], TERMINAL)
            assert done["state"] == "done", done
            assert outputs(c, done) == frames, "frames differ from a single-process backend's"


def test_a_piece_that_kills_its_workers_twice_fails_its_job_not_the_cluster(cluster) -> None:
    b, holds = cluster
    with b.client() as c:
        holds.arm("e")
        holds.arm("f")  # the rerun takes this one
        job = create_inbetween(c, shot(6.0, (0, 16)), range(0, 17))["id"]
        start(c, job)
        first = holds.wait_held("e")
        os.kill(first.pid, signal.SIGKILL)
        second = holds.wait_held("f")
        assert second.job == job and second.pid != first.pid
        os.kill(second.pid, signal.SIGKILL)
        failed = wait_for(c, job, TERMINAL)
        assert failed["state"] == "failed" and "died 2 times" in failed["error"], failed
        workers = workers_ready(c, 2)
        assert not {first.pid, second.pid} & {w["pid"] for w in workers}
        after = create_inbetween(c, shot(6.0, (0, 8)), range(0, 9))["id"]
        start(c, after)
        assert wait_for(c, after, TERMINAL)["state"] == "done", "the cluster still runs jobs"


def test_cancel_reaches_every_worker_of_the_job_within_a_step(cluster) -> None:
    b, holds = cluster
    keys = shot(2.0, (0, 12, 24, 36))
    with b.client() as c:
        holds.arm("c")
        holds.arm("d")
        job = create_inbetween(c, keys, range(0, 37))["id"]
        start(c, job)
        held = [holds.wait_held("c"), holds.wait_held("d")]
        assert {h.job for h in held} == {job} and held[0].pid != held[1].pid, (
            "the pieces of one job run on both workers at once"
        )
        ack = c.post(f"/v1/jobs/{job}/cancel").raise_for_status().json()
        assert ack["cancel_requested"] is True and ack["state"] == "canceled", ack

        def idle() -> bool:
            return not any(w["busy"] for w in cluster_health(c)["workers"])

        poll(idle, "the workers still run pieces of the canceled job", timeout=10.0)
        final = c.get(f"/v1/jobs/{job}").raise_for_status().json()
        assert final["state"] == "canceled"
        assert final["finished_frames"] == ack["finished_frames"], "frames written after cancel"
        for frame in final["finished_frames"]:
            assert c.get(f"/v1/jobs/{job}/outputs/{frame}").status_code == 200
        # the workers are free for the next job
        again = create_inbetween(c, shot(5.0, (0, 8)), range(0, 9))["id"]
        start(c, again)
        assert wait_for(c, again, TERMINAL)["state"] == "done"


def test_a_worker_dying_at_start_is_reported_not_waited_for(make_backend) -> None:
    b = make_backend(
        "dying", extra_args=["--ray", "local:1"], env={"FRAMESMITH_FAULT_RAY_START": "die"}
    ).start()
    with b.client() as c:
        job = create_inbetween(c, shot(4.0, (0, 8)), range(0, 9))["id"]
        start(c, job)
        failed = wait_for(c, job, TERMINAL)
        assert failed["state"] == "failed", failed
        assert "no cluster worker is left" in failed["error"], failed["error"]
        [worker] = cluster_health(c)["workers"]
        assert worker["state"] == "out" and "did not start" in worker["error"], worker
        assert failed["error"].count("w0: the worker did not start") == 1
        late = create_inbetween(c, shot(4.0, (0, 8)), range(0, 9))["id"]
        start(c, late)
        assert wait_for(c, late, TERMINAL, timeout=10.0)["state"] == "failed"


def test_without_ray_there_is_no_cluster_and_ray_is_never_loaded(shared_backend) -> None:
    with shared_backend.client() as c:
        health = c.get("/v1/health").raise_for_status().json()
    assert "cluster" not in health
    maps = Path(f"/proc/{shared_backend.proc.pid}/maps").read_text()
    assert "_raylet" not in maps, "the backend loaded Ray without --ray"


def test_a_bad_ray_option_stops_serve_with_a_sentence(make_backend) -> None:
    b = make_backend("bad", extra_args=["--ray", "local:0"])
    with pytest.raises(RuntimeError, match="local:N takes a number of workers"):
        b.start()


def test_stylize_pieces_match_a_single_process_backend(cluster, make_backend, tiny_models) -> None:
    """per_frame frames spread over the workers one by one; video chunks that blend into their
    predecessor's frames wait for it. Both give the single-process backend's bytes."""
    from tests.backend.test_stylize import BASE, create, shot_frame, upload

    b, _ = cluster
    shot = {t: shot_frame(t) for t in range(12)}
    per_frame = {**BASE, "mode": "per_frame", "strength": 0.7, "chunk_size": 3}
    video = {**BASE, "chunk_size": 6, "overlap": 2}
    cases = ((per_frame, range(5)), (video, range(12)))

    def run_all(backend: Backend) -> tuple[list[dict[int, bytes]], list[int]]:
        got, pieces = [], []
        with backend.client() as c:
            for params, frames in cases:
                job = create(c, params, frames)
                upload(c, job, shot)
                start(c, job["id"])
                done = wait_for(c, job["id"], TERMINAL, timeout=300.0)
                assert done["state"] == "done", done
                got.append(outputs(c, done))
                pieces.append(done["progress"]["chunks"])
        return got, pieces

    clustered, pieces = run_all(b)
    assert pieces == [5, 3], "per_frame: a piece per frame; video: its three chunks"
    single = make_backend("single-stylize", models=tiny_models).start()
    assert run_all(single)[0] == clustered, "frames differ from a single-process backend's"
