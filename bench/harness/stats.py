"""Percentiles and timing, the same everywhere."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def percentile_ms(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` quantile of sorted seconds, in milliseconds (NaN if none)."""
    if not values:
        return math.nan
    return values[min(len(values), max(1, math.ceil(q * len(values)))) - 1] * 1000


def timings(call: Callable[[], object], repeat: int) -> list[float]:
    """Wall-clock seconds of each of ``repeat`` calls, sorted (the last is the worst)."""
    seconds = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return sorted(seconds)


def cpu_timed(call: Callable[[], T]) -> tuple[float, T]:
    """CPU seconds (user + system) of this process during one call, and what it returned."""
    start = time.process_time()
    result = call()
    return time.process_time() - start, result
