"""Exact percentiles of positive float32 samples streamed in batches, in bounded memory.

np.percentile needs every sample at once; a shot's depth samples grow with its length. Here
the samples come in batches, twice (`read` is called once per pass): the first pass counts them
by the top 16 bits of their bit patterns (for positive floats the patterns sort as the values
do), which says which bucket holds each rank np.percentile reads; the second counts the low 16
bits inside those few buckets only, which gives the values at those ranks exactly. np.percentile's
own interpolation ("linear") then runs on those values. Memory: a few arrays of 65,536 counts,
whatever the number of samples. A few samples (up to HELD_SAMPLES) are simply kept and read
once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np

_HALF = 16
_BUCKETS = 1 << _HALF
_LOW_MASK = np.uint32(_BUCKETS - 1)

Batches = Callable[[], Iterable[np.ndarray]]
# Up to this many samples (16 MiB) are simply kept, and read once.
HELD_SAMPLES = 1 << 22


def _bits(batch: np.ndarray) -> np.ndarray:
    values = np.ascontiguousarray(batch, dtype=np.float32).ravel()
    if values.size and not (values.min() > 0.0 and np.isfinite(values.max())):
        raise ValueError("streamed percentiles take positive finite values only")
    return values.view(np.uint32)


def _high_counts(read: Batches, held: int) -> tuple[np.ndarray, list[np.ndarray] | None]:
    """Counts by the top 16 bits, and the samples themselves while there are at most `held`
    of them (None past that)."""
    counts = np.zeros(_BUCKETS, np.int64)
    kept: list[np.ndarray] | None = []
    size = 0
    for batch in read():
        bits = _bits(batch)
        counts += np.bincount(bits >> _HALF, minlength=_BUCKETS)
        size += bits.size
        if size > held:
            kept = None
        elif kept is not None:
            kept.append(bits.view(np.float32))
    return counts, kept


def _ranks(n: int, q: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(previous, next, gamma) as np.percentile's "linear" method finds them for n samples."""
    quantiles = np.true_divide(np.asarray(q, dtype=np.float64), 100)
    virtual = (n - 1) * quantiles
    previous = np.floor(virtual)
    following = previous + 1
    above = virtual >= n - 1
    previous[above] = following[above] = n - 1
    below = virtual < 0
    previous[below] = following[below] = 0
    gamma = np.asarray(virtual - previous, dtype=np.float64)
    return previous.astype(np.int64), following.astype(np.int64), gamma


def _values_at(read: Batches, high: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """The float32 sample at each rank (0 = smallest) of the sorted samples."""
    before = np.concatenate([[0], np.cumsum(high)])
    buckets = np.searchsorted(before, ranks, side="right") - 1
    wanted = np.unique(buckets)
    low = {int(b): np.zeros(_BUCKETS, np.int64) for b in wanted}
    for batch in read():
        bits = _bits(batch)
        top = bits >> _HALF
        for b, counts in low.items():
            counts += np.bincount(bits[top == b] & _LOW_MASK, minlength=_BUCKETS)
    out = np.empty(len(ranks), np.uint32)
    for i, (rank, bucket) in enumerate(zip(ranks, buckets, strict=True)):
        inside = np.cumsum(low[int(bucket)])
        low_bits = int(np.searchsorted(inside, rank - before[bucket], side="right"))
        out[i] = (int(bucket) << _HALF) | low_bits
    return out.view(np.float32)


def streamed_percentiles(
    read: Batches, q: Sequence[float], held: int = HELD_SAMPLES
) -> np.ndarray | None:
    """np.percentile(all samples, q) bit for bit (float64), or None without samples.

    `read()` yields the samples in batches (any shape, positive finite float32). Up to `held`
    samples are kept and given to np.percentile itself; past that `read` is called a second
    time, and must then yield the same samples again.
    """
    high, kept = _high_counts(read, held)
    n = int(high.sum())
    if n == 0:
        return None
    if kept is not None:
        return np.asarray(np.percentile(np.concatenate(kept), list(q)), dtype=np.float64)
    previous, following, gamma = _ranks(n, q)
    values = _values_at(read, high, np.concatenate([previous, following]))
    a, b = values[: len(previous)], values[len(previous) :]
    # np.percentile's own interpolation (numpy's _lerp), step for step
    diff = b - a
    result = a + diff * gamma
    np.subtract(b, diff * (1 - gamma), out=result, where=gamma >= 0.5)
    return result
