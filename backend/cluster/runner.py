"""ClusterWorker: what the head runs instead of the single-process Worker under `serve --ray`.

It connects to Ray (starting a local cluster bound to 127.0.0.1 for `local:N`), starts one
worker slot per GPU (or per CPU worker) and the InputReader on its own node, and answers the
API as Worker does: notify, cancel, start, stop, plus the `cluster` field of GET /v1/health.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from ..store import Store
from . import faults
from .actor import InputReader
from .messages import WorkerSetup
from .options import ClusterSpec
from .scheduler import Scheduler
from .slots import MAX_FAILURES, SlotPlan, SlotState, WorkerSlot

log = logging.getLogger("framesmith.cluster")

LOOPBACK = "127.0.0.1"
# The folder holding the `backend` package: Ray workers import it from there (the same path on
# every machine of a cluster).
CODE_ROOT = Path(__file__).resolve().parents[2]
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


class ClusterUnavailable(Exception):
    """Ray is missing, or the cluster cannot be started or joined; the message says why."""


def import_ray(local: bool) -> Any:
    """ray, imported here and only under --ray: it is optional (requirements/ray.txt) and
    heavy, so a backend without --ray never loads it."""
    if local:
        # Ray's single-machine mode: every Ray process binds to 127.0.0.1, none to the network
        # (the variable is named for the platforms where this mode is Ray's default). It is
        # read when ray is imported, so it is set first.
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report leaves the studio
    # Ray starts a cluster of its own when it is used unconnected: never, here (a late call
    # while stopping would start one in a process on its way out).
    os.environ["RAY_ENABLE_AUTO_CONNECT"] = "0"
    try:
        import ray
    except ImportError:
        raise ClusterUnavailable(
            "--ray needs Ray, which is not installed in this environment: install it with"
            " `pip install -r requirements/ray.txt`"
        ) from None
    return ray


class ClusterWorker:
    """The head's stand-in for Worker. Several jobs run at once, so current_job is None: the
    store's states keep a running job from being deleted."""

    current_job: str | None = None

    def __init__(
        self,
        store: Store,
        spec: ClusterSpec,
        models_dir: Path,
        device: str,
        extra_models: tuple[Path, ...] = (),
    ) -> None:
        self.store = store
        self.spec = spec
        # Set by warm_up as for Worker (the head's own device); nothing here reads them.
        self.device = device
        self.ready = threading.Event()
        self._worker_device = device  # what the workers resolve on their machines ("auto", ...)
        self.address: str | None = None
        self._models = (models_dir, extra_models)
        self._scheduler = Scheduler(store, self._cancel_on_worker)
        self._slots: list[WorkerSlot] = []
        self._connected = False

    # --- the Worker interface --------------------------------------------------------------

    def connect(self) -> None:
        """Start or join the cluster (ClusterUnavailable when it cannot)."""
        ray = import_ray(self.spec.is_local)
        env = {
            "PYTHONPATH": str(CODE_ROOT),
            **{name: str(self.spec.threads) for name in THREAD_VARIABLES},
            **faults.fault_environment(),
        }
        started = time.monotonic()
        try:
            context = ray.init(**self._init_arguments(), runtime_env={"env_vars": env})
        except Exception as exc:
            where = (
                "start a local Ray cluster"
                if self.spec.is_local
                else "join " + str(self.spec.address)
            )
            raise ClusterUnavailable(f"--ray: cannot {where}: {exc}") from None
        self._connected = True
        info = context.address_info
        if self.spec.is_local and info.get("node_ip_address") != LOOPBACK:
            self.stop()
            raise ClusterUnavailable(
                f"the local Ray cluster bound to {info.get('node_ip_address')}, not {LOOPBACK}:"
                " refusing to expose it to the network"
            )
        self.address = str(info.get("gcs_address") or info.get("address"))
        plans = self._plan_workers(ray)
        self._slots = [WorkerSlot(p, self.store, self._scheduler, self._slot_out) for p in plans]
        log.info(
            "Ray cluster at %s (%.1f s): %d worker(s), %d thread(s) each",
            self.address,
            time.monotonic() - started,
            len(self._slots),
            self.spec.threads,
        )

    def start(self) -> None:
        resumed = self.store.requeue_interrupted()
        if resumed:
            log.info("resuming %d interrupted job(s)", len(resumed))
        for slot in self._slots:
            slot.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._scheduler.stop()  # running jobs back to the queue, workers told to stop
        for slot in self._slots:
            slot.stop()
        deadline = time.monotonic() + timeout
        for slot in self._slots:
            slot.join(max(0.0, deadline - time.monotonic()))
        if self._connected:
            import ray

            ray.shutdown()  # a local cluster's processes end with it
            self._connected = False

    def notify(self) -> None:
        self._scheduler.notify()

    def cancel(self, job_id: str) -> None:
        self.store.request_cancel(job_id)
        self._scheduler.cancel(job_id)

    def health(self) -> dict[str, Any]:
        return {"address": self.address, "workers": [s.describe() for s in self._slots]}

    # --- inside ----------------------------------------------------------------------------

    def _init_arguments(self) -> dict[str, Any]:
        common: dict[str, Any] = {"configure_logging": False, "log_to_driver": True}
        if not self.spec.is_local:
            return {"address": self.spec.address, **common}
        count = self.spec.local_workers or 1
        return {
            "address": "local",  # always a new cluster, never one found on this machine
            "num_cpus": count * self.spec.threads,
            "num_gpus": 0 if self._worker_device == "cpu" else None,  # None: Ray counts them
            "include_dashboard": False,
            **common,
        }

    def _plan_workers(self, ray: Any) -> list[SlotPlan]:
        """One worker per GPU (up to local:N's N); CPU workers where there is none, each held
        to the given threads."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = ray.get_runtime_context().get_node_id()
        reader = (
            ray.remote(InputReader)
            .options(
                num_cpus=0,
                max_concurrency=8,
                max_restarts=-1,
                max_task_retries=-1,
                scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False),
            )
            .remote(str(self.store.jobs_dir))
        )
        resources = ray.cluster_resources()
        gpus = 0 if self._worker_device == "cpu" else int(resources.get("GPU", 0))
        threads = self.spec.threads
        if gpus:  # Ray shows each GPU worker its own GPU only, as cuda:0 ("auto" finds it)
            count, device = min(gpus, self.spec.local_workers or gpus), "auto"
            options = {"num_gpus": 1, "num_cpus": 0}
        else:  # never "auto" here: a CPU worker on a GPU machine must leave its GPUs alone
            count = self.spec.local_workers or max(1, int(resources.get("CPU", 1)) // threads)
            options, device = {"num_gpus": 0, "num_cpus": threads}, "cpu"
        options |= {"max_concurrency": 2, "max_restarts": 0}
        return [
            SlotPlan(WorkerSetup(f"w{i}", device, threads, *self._models, reader), options)
            for i in range(count)
        ]

    def _cancel_on_worker(self, slot_name: str, job_id: str) -> None:
        for slot in self._slots:
            if slot.name == slot_name:
                slot.cancel(job_id)

    def _slot_out(self, slot: WorkerSlot) -> None:
        if all(s.state is SlotState.OUT for s in self._slots):
            named = "; ".join(f"{s.name}: {s.error}" for s in self._slots)
            self._scheduler.no_workers_left(
                f"no cluster worker is left to run jobs: each failed {MAX_FAILURES} times in a"
                f" row and was taken out ({named}); see GET /v1/health and the backend log"
            )
