"""What is measured over the counted part of a window, from the benchmark's own process."""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass

import psutil

from .procs import RssSampler, tree, tree_cpu_seconds


class Probe:
    """Measures something over the counted part of a window: ``begin`` then ``end``."""

    def begin(self) -> None:
        pass

    def end(self, seconds: float) -> None:
        pass


class OtherLoad(Probe):
    """CPU used by processes this benchmark did not start (other jobs on a shared machine).

    A process is ours if one of its ancestors is a registered root (this process, a relay's
    supervisord, a limit Dovecot); kernel threads are not counted. Processes that start and
    exit within a window are missed, so this is a lower bound.
    """

    def __init__(self) -> None:
        self.roots = {os.getpid()}
        self.shares: list[float] = []  # share of one core, per window
        self._before: dict[int, float] = {}

    def _cpu_of_others(self) -> dict[int, float]:
        procs = {p.pid: p.info for p in psutil.process_iter(["ppid", "cpu_times"])}
        others = {}
        for pid, info in procs.items():
            ancestor, hops = pid, 0
            while ancestor not in self.roots and ancestor > 2 and hops < 100:
                ancestor = procs.get(ancestor, {}).get("ppid", 0)
                hops += 1
            if ancestor in self.roots or ancestor == 2 or info["cpu_times"] is None:
                continue
            others[pid] = info["cpu_times"].user + info["cpu_times"].system
        return others

    def begin(self) -> None:
        self._before = self._cpu_of_others()

    def end(self, seconds: float) -> None:
        after = self._cpu_of_others()
        used = sum(cpu - self._before.get(pid, 0.0) for pid, cpu in after.items())
        self.shares.append(max(0.0, used) / seconds)

    def since(self, mark: int) -> float:
        """The largest share of a window since ``mark`` (a former ``len(self.shares)``)."""
        return max(self.shares[mark:], default=0.0)


class MachineBusy(Probe):
    """Share of all CPUs busy over the window (1.0 = every core busy all the time)."""

    def __init__(self) -> None:
        self.share = math.nan
        self._idle = 0.0

    def begin(self) -> None:
        self._idle = psutil.cpu_times().idle

    def end(self, seconds: float) -> None:
        idle = psutil.cpu_times().idle - self._idle
        self.share = 1 - idle / (seconds * (os.cpu_count() or 1))


@dataclass(frozen=True)
class Usage:
    """A daemon's resources over one window."""

    main_cpu: float  # share of one core used by its first process (all its threads)
    children_cpu: float  # share of one core used by its descendants (worker processes)
    peak_rss: int  # bytes, all its processes together


class TreeUsage(Probe):
    """CPU and peak RSS of the process tree ``sampler`` knows as ``name``, over the window."""

    def __init__(self, sampler: RssSampler, name: str) -> None:
        self.sampler = sampler
        self.name = name
        self.pid = sampler.roots[name]
        self.usage = Usage(math.nan, math.nan, 0)
        self._cpu = (0.0, 0.0)

    def begin(self) -> None:
        self.sampler.reset_peaks()
        self._cpu = tree_cpu_seconds(self.pid)

    def end(self, seconds: float) -> None:
        main, children = tree_cpu_seconds(self.pid)
        self.usage = Usage(
            (main - self._cpu[0]) / seconds,
            (children - self._cpu[1]) / seconds,
            self.sampler.peak(self.name),
        )


class TreeCpu(Probe):
    """Share of one core used by a process tree (all its processes and threads) over the window.

    Without sampling: each process's CPU at the start and at the end. A process that exits
    within the window is missed, so this is a lower bound for a tree whose processes come and go.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.share = math.nan
        self._before: dict[int, float] = {}

    def _cpu(self) -> dict[int, float]:
        seconds = {}
        for proc in tree(self.pid):
            with contextlib.suppress(psutil.Error):
                seconds[proc.pid] = sum(proc.cpu_times()[:2])
        return seconds

    def begin(self) -> None:
        self._before = self._cpu()

    def end(self, seconds: float) -> None:
        after = self._cpu()
        used = sum(cpu - self._before.get(pid, 0.0) for pid, cpu in after.items())
        self.share = used / seconds
