"""Latency and throughput measurement shared by every format the benchmark compares."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def time_calls(fn: Callable[[Any], Any], inputs: Sequence[Any], warmup: int,
               ) -> tuple[np.ndarray, list[Any]]:
    """Call ``fn`` once per input, after ``warmup`` untimed calls (caches, lazy init, JIT).

    Returns the per-call times in milliseconds and the outputs, both in input order.
    """
    for i in range(warmup):
        fn(inputs[i % len(inputs)])
    times, outputs = [], []
    for x in inputs:
        start = time.perf_counter()
        outputs.append(fn(x))
        times.append(time.perf_counter() - start)
    return np.asarray(times) * 1000.0, outputs


def latency_summary(ms: np.ndarray) -> dict[str, float]:
    return {
        "latency_p50_ms": float(np.percentile(ms, 50)),
        "latency_p95_ms": float(np.percentile(ms, 95)),
    }


def throughput(run_batch: Callable[[list[list[int]]], Any], sequences: list[list[int]],
               batch_size: int, warmup: int = 1) -> float:
    """Examples per second over length-sorted batches (each padded to its own longest row)."""
    order = sorted(sequences, key=len)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    for i in range(min(warmup, len(batches))):
        run_batch(batches[i])
    start = time.perf_counter()
    for batch in batches:
        run_batch(batch)
    return len(sequences) / max(time.perf_counter() - start, 1e-9)
