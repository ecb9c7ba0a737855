"""The value of `serve --ray`: a local cluster of N workers, or the address of a running one."""

from __future__ import annotations

import re
from dataclasses import dataclass

LOCAL_PREFIX = "local:"
MAX_LOCAL_WORKERS = 64
_ADDRESS_RE = re.compile(r"^[A-Za-z0-9.\-_\[\]:]+:\d{1,5}$|^auto$")


class BadClusterOption(ValueError):
    """The --ray value (or a neighbouring option) cannot be used; the message says why."""


@dataclass(frozen=True)
class ClusterSpec:
    """local_workers: start a local cluster of that many workers on 127.0.0.1; address: join
    the running cluster there. threads: the CPU threads each worker may use."""

    local_workers: int | None
    address: str | None
    threads: int = 1

    @property
    def is_local(self) -> bool:
        return self.local_workers is not None


def parse_cluster(value: str, threads: int = 1) -> ClusterSpec:
    """`local:N`, or `HOST:PORT` of a cluster's head (`auto`: the cluster this machine's
    `ray start` joined). Not Ray Client (`ray://`): the head must be a node of the cluster, the
    one its InputReader runs on, beside the uploaded inputs."""
    if threads < 1:
        raise BadClusterOption("--ray-threads must be at least 1")
    value = value.strip()
    if value.startswith(LOCAL_PREFIX):
        count = value[len(LOCAL_PREFIX) :]
        if not count.isdigit() or not 1 <= int(count) <= MAX_LOCAL_WORKERS:
            raise BadClusterOption(
                f"--ray {value}: local:N takes a number of workers from 1 to {MAX_LOCAL_WORKERS}"
            )
        return ClusterSpec(local_workers=int(count), address=None, threads=threads)
    if value.startswith("ray://"):
        raise BadClusterOption(
            f"--ray {value}: Ray Client addresses are not supported; run `ray start --address"
            " HEAD:PORT` on this machine so that it joins the cluster, then pass HEAD:PORT"
        )
    if not _ADDRESS_RE.match(value):
        raise BadClusterOption(
            f"--ray {value!r}: give local:N (a cluster of N workers on this machine) or the"
            " address of a running cluster's head, HOST:PORT (`ray start --head` prints it)"
        )
    return ClusterSpec(local_workers=None, address=value, threads=threads)
