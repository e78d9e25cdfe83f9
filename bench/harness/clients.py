"""Load-generating client processes that all run over one measurement window.

Each job runs in its own process (spawned, so the load generator does not share our GIL). A job
is a picklable description plus a ``prepare`` function that runs in the client process: it
connects, then returns the function that drives the load over the window and returns a
``WorkerResult``. All clients get the same window, in ``time.monotonic()`` seconds (one clock
for every process): a short warm-up that is not counted, then the counted seconds.
"""

from __future__ import annotations

import math
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .env import MP
from .probes import Probe
from .stats import percentile_ms


@dataclass(frozen=True)
class Window:
    """When a measurement runs, in time.monotonic() seconds (the same clock in every process)."""

    start: float
    record_from: float
    end: float


@dataclass
class WorkerResult:
    ok: int = 0
    errors: int = 0
    first_error: str = ""
    latencies: array = field(default_factory=lambda: array("d"))  # seconds
    service: array = field(default_factory=lambda: array("d"))  # from the actual send, if later
    cpu: float = 0.0  # CPU seconds of the client process
    ok_total: int = 0  # successes at any time, also in the warm-up and after the window

    def record(
        self,
        when: float,
        window: Window,
        ok: bool,
        latency: float,
        error: str,
        service: float | None = None,
    ) -> None:
        if ok:
            self.ok_total += 1
        if not window.record_from <= when < window.end:
            return
        if ok:
            self.ok += 1
            self.latencies.append(latency)
            if service is not None:
                self.service.append(service)
        else:
            self.errors += 1
            self.first_error = self.first_error or error


@dataclass(frozen=True)
class LoadResult:
    """Merged results of the client processes of one kind of job over one window."""

    ok: int
    errors: int
    first_error: str
    latencies: list[float]  # sorted, seconds
    seconds: float
    client_cpu: float  # share of one core
    service: list[float] = field(default_factory=list)  # sorted; paced jobs only
    ok_total: int = 0  # successes at any time, also in the warm-up and after the window
    began: float = math.nan  # time.monotonic() when the counted part of the window began

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else math.nan

    def percentile_ms(self, q: float) -> float:
        return percentile_ms(self.latencies, q)


def merge(results: Sequence[WorkerResult], window: Window) -> LoadResult:
    return LoadResult(
        ok=sum(r.ok for r in results),
        errors=sum(r.errors for r in results),
        first_error=next((r.first_error for r in results if r.first_error), ""),
        latencies=sorted(x for r in results for x in r.latencies),
        seconds=window.end - window.record_from,
        client_cpu=sum(r.cpu for r in results) / (window.end - window.start),
        service=sorted(x for r in results for x in r.service),
        ok_total=sum(r.ok_total for r in results),
        began=window.record_from,
    )


def combine(loads: Sequence[LoadResult]) -> LoadResult:
    """Several windows' results (e.g. the rounds of one arm) as one, over all their seconds."""
    return LoadResult(
        ok=sum(r.ok for r in loads),
        errors=sum(r.errors for r in loads),
        first_error=next((r.first_error for r in loads if r.first_error), ""),
        latencies=sorted(x for r in loads for x in r.latencies),
        seconds=sum(r.seconds for r in loads),
        client_cpu=sum(r.client_cpu for r in loads) / len(loads),
        service=sorted(x for r in loads for x in r.service),
        ok_total=sum(r.ok_total for r in loads),
        began=min((r.began for r in loads), default=math.nan),
    )


def finished(result: WorkerResult, start: float, cpu0: float) -> LoadResult:
    """One in-process run's ``result``, counted from ``start`` (time.monotonic()) until now;
    ``cpu0`` is time.process_time() at the start."""
    result.cpu = time.process_time() - cpu0
    return merge([result], Window(start, start, time.monotonic()))


def _worker_main(prepare: Callable, job: object, conn) -> None:
    """Run in a client process: prepare, say ready, wait for the window, run, send results."""
    try:
        run = prepare(job)  # e.g. connects; returns the function that runs the window
        conn.send("ready")
        window = conn.recv()
        cpu0 = time.process_time()
        result = run(window)
        result.cpu = time.process_time() - cpu0
        conn.send(result)
    except Exception as exc:
        conn.send(f"{type(exc).__name__}: {exc}")


def run_clients(
    groups: Sequence[tuple[Callable, Sequence[object]]],
    warmup: float,
    seconds: float,
    probes: Sequence[Probe] = (),
) -> tuple[list[list[WorkerResult]], Window]:
    """Start one client process per job, run them all over one window, return their results.

    ``groups`` pairs a prepare function with its jobs; results come back grouped the same way.
    ``probes`` measure over the counted part of the window, from this process.
    """
    procs = []
    try:
        for prepare, jobs in groups:
            for job in jobs:
                parent, child = MP.Pipe()
                proc = MP.Process(target=_worker_main, args=(prepare, job, child), daemon=True)
                proc.start()
                procs.append((proc, parent))
        for _, parent in procs:
            _receive(parent, 60, expect="ready")
        start = time.monotonic() + 0.2
        window = Window(start, start + warmup, start + warmup + seconds)
        for _, parent in procs:
            parent.send(window)
        _probe_window(window, probes)
        flat = [_receive(parent, warmup + seconds + 60) for _, parent in procs]
    finally:
        for proc, _ in procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join()
    grouped, i = [], 0
    for _, jobs in groups:
        grouped.append(flat[i : i + len(jobs)])
        i += len(jobs)
    return grouped, window


def run_in_client(function: Callable[[Any], Any], job: object, timeout: float) -> Any:
    """``function(job)`` run in a client process; its (picklable) result.

    Our own process only waits meanwhile, so SIGTERM or Ctrl-C interrupt it at a clean point
    (never inside an event loop) and the client process is stopped on the way out.
    """
    parent, child = MP.Pipe()
    proc = MP.Process(target=_call_main, args=(function, job, child), daemon=True)
    proc.start()
    try:
        return _receive(parent, timeout)
    finally:
        proc.join(5)
        if proc.is_alive():
            proc.kill()
            proc.join()


def _call_main(function: Callable[[Any], Any], job: object, conn) -> None:
    try:
        conn.send(function(job))
    except Exception as exc:
        conn.send(f"{type(exc).__name__}: {exc}")


def _probe_window(window: Window, probes: Sequence[Probe]) -> None:
    sleep_until(window.record_from)
    for probe in probes:
        probe.begin()
    sleep_until(window.end)
    for probe in probes:
        probe.end(window.end - window.record_from)


def _receive(conn, timeout: float, expect: str | None = None):
    if not conn.poll(timeout):
        raise RuntimeError("a client process did not answer in time")
    got = conn.recv()
    if isinstance(got, str) and got != expect:
        raise RuntimeError(f"client process failed: {got}")
    return got


def split_evenly(total: int, parts: int) -> list[int]:
    """``total`` split into at most ``parts`` near-equal positive shares."""
    parts = max(1, min(parts, total))
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def sleep_until(when: float) -> None:
    delay = when - time.monotonic()
    if delay > 0:
        time.sleep(delay)
