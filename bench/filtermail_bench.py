"""Benchmark filtermail: the relay's mail path with and without it, and filtermail alone.

Why: filtermail is Postfix's before-queue filter (smtpd_proxy_filter): every message a client
sends waits for it during the SMTP dialogue, so whatever it costs limits the whole relay. It
must keep up with Postfix, check large messages without holding them all in memory, give the
memory back afterwards, and never let large messages stall small ones.

How (the shared parts are in ``harness``): everything runs on loopback in one temporary
directory (removed at the end), with 100 pre-created accounts. Messages are encrypted by GnuPG
(RFC 3156, as Delta Chat sends them) with a fresh header each: about 4 KiB, or 1 MiB.

1. The relay as production starts it (Postfix, both filtermails, Dovecot, doveauth, lastlogin
   under supervisord), next to the limit Postfix: a second Postfix from the very main.cf,
   master.cf and run-master the relay rendered, without the smtpd_proxy_filter lines, with its
   own queue, delivering over LMTP into the same Dovecot. 8 chat clients (8 accounts), each
   with one connection (implicit TLS on submissions, SMTP AUTH), send 4 KiB messages to the
   other accounts as fast as they are accepted; the arms are measured alternately (ABBA...),
   each round followed by the delivery of everything it accepted. Only messages answered 250
   count; at the end the maildirs must hold every message that was accepted (warm-ups
   included).
   1a, submission (the goal's figure): while an arm is measured its Postfix puts what it
   accepts on hold and delivers nothing; the mail is released and delivered after the round.
   This measures the path filtermail sits in, as the issue's figures for Postfix alone (855
   messages/s) do. A third arm, the null proxy, is the relay's Postfix with the submissions
   listener's smtpd_proxy_filter pointed at its own reinjection listener: Postfix's
   before-queue proxy with no filter at all, the ceiling of any such filter.
   1b, submission while delivering: the same without holding, Postfix delivering to Dovecot on
   the same two cores meanwhile. Postfix alone accepts faster than it delivers and leaves a
   backlog (the drain after each round); with the filters, delivery keeps up.
2. filtermail alone: the installed console script started as the vmail user (outgoing, DKIM
   signing off), handing mail to a fast SMTP sink (250 to everything, data dropped) instead of
   Postfix. Clients do what Postfix's proxy does: one message per connection (connect, EHLO,
   MAIL, RCPT, DATA, QUIT). 4 KiB and 1 MiB messages at 1, 16 and 64 concurrent clients; then
   the same with DKIM signing on (a second filtermail) at 16 and 64.
3. filtermail's RSS (its process tree, sampled every 50 ms) with 64 concurrent 1 MiB messages,
   and again a few seconds later, against its idle RSS.
4. One client sending 4 KiB messages while 16 others send 1 MiB messages: its latency.

The client processes and the sink run on the same machine and use CPU: the tables show how
much, and how busy all CPUs were.

Run as root with the project's venv::

    /usr/local/lib/chatmaild/venv-test/bin/python bench/filtermail_bench.py [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from harness import env, report
from harness.clients import LoadResult, merge, run_clients
from harness.env import VMAIL, Setup
from harness.limits import running_limit_postfix
from harness.mail import encrypted_body, gpg_in, head
from harness.probes import MachineBusy, TreeCpu
from harness.procs import Daemon, RssSampler, pss_by_tree, rss_by_tree, running, tcp_greets
from harness.relays import (
    WHOLE,
    delivered,
    deliveries_held,
    memory_roots,
    program_pids,
    proxy_filter_replaced,
    running_relay,
    wait_delivered,
)
from harness.report import error_note, mib, ms, pct, say, table
from harness.session import bench_setup
from harness.smtpload import SmtpJob, prepare_smtp_job, send_count, smtp_jobs
from harness.smtpsink import argv as sink_argv
from harness.smtpsink import received

from chatmaild import config as chatmail_config
from relay import supervise

ACCOUNTS = 100
SMALL, LARGE = 4 * 1024, 1024 * 1024
SIZE_NAMES = {SMALL: "4 KiB", LARGE: "1 MiB"}
CHAT_CLIENTS = 8  # figure 1: chat clients, one account and one connection each
CHAT_PROCS = 2
CONCURRENCIES = (1, 16, 64)  # figure 2
DKIM_CONCURRENCIES = (16, 64)
CLIENT_PROCS = 2  # client processes driving one measurement (fewer if fewer clients)
RSS_CONNS = 64  # figure 3
STALL_LARGE = 16  # figure 4
WARM_MESSAGES = 20
# rate limits that never refuse: this measures capacity, not what one account may send
NO_LIMITS = "max_user_send_per_minute = 100000000\nmax_user_send_burst_size = 100000000\n"

GOAL_RATIO = 0.5
GOAL_RATE = {SMALL: 870, LARGE: 40}
GOAL_PEAK_MIB = 60
GOAL_AFTER_MIB = 10


@dataclass(frozen=True)
class Durations:
    relay_round: float  # one arm's share of one round of figure 1
    relay_rounds: int
    cell: float  # each measurement of figures 2-4
    warmup: float
    settle: float  # quiet before an idle figure
    after: float  # seconds after figure 3's load before its "after" RSS


FULL = Durations(relay_round=8, relay_rounds=4, cell=8, warmup=1.0, settle=5, after=5)
QUICK = Durations(relay_round=3, relay_rounds=2, cell=3, warmup=0.5, settle=2, after=3)


# -- figure 1: Postfix with the filters, against the same Postfix without them ------------------


@dataclass
class RelayArm:
    name: str
    port: int  # submissions
    conf_dir: Path  # its Postfix's configuration
    held: bool  # deliveries held while it is measured (relays.deliveries_held)
    trees: dict[str, int]  # column -> pid of the tree whose CPU it shows
    proxy: str | None = None  # host:port replacing the port's smtpd_proxy_filter meanwhile
    results: list[LoadResult] = field(default_factory=list)
    busy: list[float] = field(default_factory=list)  # share of all CPUs busy, per round
    others: list[float] = field(default_factory=list)  # share of a core other jobs used
    cpu: dict[str, list[float]] = field(default_factory=dict)  # share of a core, per round
    accepted: int = 0  # 250s at any time, warm-ups included
    drain: list[float] = field(default_factory=list)  # s from the end until all delivered

    def jobs(self, setup: Setup, body: bytes) -> list[SmtpJob]:
        creds = setup.credentials()
        senders, rcpts = creds[:CHAT_CLIENTS], tuple(a for a, _ in creds[CHAT_CLIENTS:])
        return smtp_jobs(
            CHAT_CLIENTS,
            CHAT_PROCS,
            port=self.port,
            senders=senders,
            rcpts=rcpts,
            body=body,
            tls=True,
        )

    def run(self, setup: Setup, body: bytes, seconds: float, warmup: float) -> None:
        busy = MachineBusy()
        trees = {name: TreeCpu(pid) for name, pid in self.trees.items()}
        probes = [busy, *trees.values(), setup.other] if seconds else []
        with contextlib.ExitStack() as stack:
            if self.proxy:
                stack.enter_context(proxy_filter_replaced(self.conf_dir, self.port, self.proxy))
            if self.held:
                stack.enter_context(deliveries_held(self.conf_dir))
            results, window = run_clients(
                [(prepare_smtp_job, self.jobs(setup, body))], warmup, seconds, probes
            )
        load = merge(results[0], window)
        self.accepted += load.ok_total
        if seconds:  # not a warm-up
            self.results.append(load)
            self.busy.append(busy.share)
            self.others.append(setup.other.shares[-1])
            for name, probe in trees.items():
                self.cpu.setdefault(name, []).append(probe.share)

    @property
    def rate(self) -> float:
        return sum(r.ok for r in self.results) / sum(r.seconds for r in self.results)

    @property
    def delivered_rate(self) -> float:
        """Accepted messages per second counting the wait until they were delivered too."""
        seconds = sum(r.seconds for r in self.results) + sum(self.drain)
        return sum(r.ok for r in self.results) / seconds

    def merged(self) -> LoadResult:
        return LoadResult(
            ok=sum(r.ok for r in self.results),
            errors=sum(r.errors for r in self.results),
            first_error=next((r.first_error for r in self.results if r.first_error), ""),
            latencies=sorted(x for r in self.results for x in r.latencies),
            seconds=sum(r.seconds for r in self.results),
            client_cpu=sum(r.client_cpu for r in self.results) / len(self.results),
        )


@dataclass(frozen=True)
class RelayFigure:
    held: tuple[RelayArm, ...]  # figure 1a: filtermail, null proxy, alone; deliveries held
    delivering: tuple[RelayArm, ...]  # figure 1b: filtermail, alone; Postfix delivering
    idle_rss: dict[str, tuple[int, int]]
    idle_pss: dict[str, tuple[int, int]]
    accepted: int
    delivered: int
    dkim: bool


def figure_relay(setup: Setup, body: bytes, d: Durations, dkim: bool) -> RelayFigure:
    before = delivered(setup.mailboxes)
    extra = NO_LIMITS + f"dkim_sign = {str(dkim).lower()}\n"
    with running_relay(setup, extra) as relay, running_limit_postfix(setup, relay) as limit:
        programs = program_pids(relay.layout)
        shared = {"filtermail": programs["filtermail-outgoing"], "Dovecot": programs["dovecot"]}
        ours = {"Postfix": programs["postfix"], **shared}
        port, conf_dir = relay.ports.submissions, relay.layout.postfix_dir
        reinject = f"127.0.0.1:{relay.config.postfix_reinject_port}"

        def arms(held: bool) -> list[RelayArm]:
            return [
                RelayArm("Postfix + filtermail", port, conf_dir, held, ours),
                RelayArm("Postfix + null proxy", port, conf_dir, held, ours, proxy=reinject),
                RelayArm(
                    "Postfix alone",
                    limit.ports.submissions,
                    limit.conf_dir,
                    held,
                    {"Postfix": limit.pid, **shared},
                ),
            ]

        held, delivering = arms(True), arms(False)
        del delivering[1]
        everyone = (*held, *delivering)

        def run(arm: RelayArm, seconds: float) -> int:
            """Measure ``arm``, then wait until the queues are empty: no arm delivers the
            other's backlog. The number of messages delivered so far."""
            arm.run(setup, body, seconds, d.warmup)
            began = time.monotonic()
            count = wait_delivered(setup.mailboxes, before + sum(a.accepted for a in everyone))
            if seconds:
                arm.drain.append(time.monotonic() - began)
            return count - before

        for arm in delivering:  # warm up: start processes, fill caches
            run(arm, 0.0)
        time.sleep(d.settle)
        roots, alone = memory_roots(relay.layout)
        idle_rss, idle_pss = rss_by_tree(roots, alone), pss_by_tree(roots, alone)
        for n in range(d.relay_rounds):  # ABBA...: what runs first in one round, last in the next
            for arm in held if n % 2 == 0 else held[::-1]:
                arrived = run(arm, d.relay_round)
            for arm in delivering if n % 2 == 0 else delivering[::-1]:
                arrived = run(arm, d.relay_round)
    accepted = sum(arm.accepted for arm in everyone)
    return RelayFigure(tuple(held), tuple(delivering), idle_rss, idle_pss, accepted, arrived, dkim)


# -- figures 2-4: filtermail alone, between clients and a sink ----------------------------------


@dataclass
class Sink:
    port: int
    daemon: Daemon
    accepted: int = 0  # messages filtermail accepted (so handed to the sink), all measurements

    def received(self) -> int | None:
        """What the sink counted, once it has stopped."""
        return received(self.daemon.log_path.read_text(errors="replace"))


@contextlib.contextmanager
def running_sink(setup: Setup) -> Iterator[Sink]:
    port = env.free_port()
    daemon = Daemon(sink_argv(port), setup.root / "sink.log", cwd=setup.root)
    with running(daemon, tcp_greets(port, b"220")):
        yield Sink(port, daemon)


@dataclass(frozen=True)
class Filtermail:
    port: int
    pid: int
    dkim: bool


def filtermail_ini(setup: Setup, dkim: bool) -> Path:
    """The benchmark's chatmail.ini without rate limits, DKIM signing on or off."""
    ini = setup.root / ("filtermail-dkim.ini" if dkim else "filtermail.ini")
    ini.write_text(
        setup.ini.read_text()
        + NO_LIMITS
        + f"dkim_sign = {str(dkim).lower()}\n"
        + f"dkim_key_path = {setup.root / 'dkim' / 'opendkim.private'}\n"
    )
    ini.chmod(0o644)
    if dkim:
        supervise.ensure_dkim_key(chatmail_config.load(ini))
    return ini


@contextlib.contextmanager
def running_filtermail(setup: Setup, sink: Sink, dkim: bool) -> Iterator[Filtermail]:
    """filtermail (outgoing) from this venv, as the vmail user, reinjecting into the sink."""
    port = env.free_port([sink.port])
    argv = [str(setup.bin_dir / "filtermail"), str(filtermail_ini(setup, dkim)), "outgoing"]
    argv += ["--port", str(port), "--reinject-port", str(sink.port)]
    log = setup.root / ("filtermail-dkim.log" if dkim else "filtermail.log")
    daemon = Daemon(argv, log, user=VMAIL, cwd=setup.root)
    with running(daemon, tcp_greets(port, b"220")):
        yield Filtermail(port, daemon.pid, dkim)


@dataclass(frozen=True)
class Cell:
    size: int
    conns: int
    dkim: bool
    load: LoadResult
    filtermail_cpu: float
    sink_cpu: float
    busy: float
    others: float  # share of a core used by processes this benchmark did not start


@dataclass(frozen=True)
class Memory:
    idle_start: int  # RSS bytes, before the first message
    idle: int  # after a few messages and a pause
    peak: int  # largest sample with RSS_CONNS concurrent large messages
    after: list[int]  # every second after the load, the last d.after seconds later
    load: LoadResult


@dataclass(frozen=True)
class Stall:
    small: LoadResult
    large: LoadResult
    filtermail_cpu: float


@dataclass
class FilterBench:
    """Clients -> filtermail -> sink, for each measurement of figures 2-4."""

    setup: Setup
    sink: Sink
    bodies: dict[int, bytes]  # by size
    d: Durations

    def jobs(self, fm: Filtermail, size: int, conns: int, procs: int = 0) -> list[SmtpJob]:
        """``conns`` clients as Postfix's proxy: one message per connection, no AUTH, no TLS.

        Half the accounts send, each client as its own; the other half receive.
        """
        creds = self.setup.credentials()
        half = len(creds) // 2
        return smtp_jobs(
            conns,
            procs or CLIENT_PROCS,
            port=fm.port,
            senders=tuple((addr, "") for addr, _ in creds[:half]),
            rcpts=tuple(addr for addr, _ in creds[half:]),
            body=self.bodies[size],
            reuse=False,
        )

    def measure(
        self, fm: Filtermail, groups: Sequence[list[SmtpJob]]
    ) -> tuple[list[LoadResult], TreeCpu, TreeCpu, MachineBusy]:
        """Run the groups of jobs over one window; their results, and CPU meanwhile."""
        fm_cpu, sink_cpu, busy = TreeCpu(fm.pid), TreeCpu(self.sink.daemon.pid), MachineBusy()
        probes = [fm_cpu, sink_cpu, busy, self.setup.other]
        jobs = [(prepare_smtp_job, group) for group in groups]
        results, window = run_clients(jobs, self.d.warmup, self.d.cell, probes)
        loads = [merge(r, window) for r in results]
        self.sink.accepted += sum(load.ok_total for load in loads)
        return loads, fm_cpu, sink_cpu, busy

    def cell(self, fm: Filtermail, size: int, conns: int) -> Cell:
        (load,), fm_cpu, sink_cpu, busy = self.measure(fm, [self.jobs(fm, size, conns)])
        others = self.setup.other.shares[-1]
        return Cell(size, conns, fm.dkim, load, fm_cpu.share, sink_cpu.share, busy.share, others)

    def warm(self, fm: Filtermail) -> None:
        """A few messages of each size, so that idle means after the first messages."""
        for size in self.bodies:
            load = send_count(self.jobs(fm, size, 1)[0], WARM_MESSAGES // len(self.bodies))
            self.sink.accepted += load.ok_total
            error_note(load, "warm-up messages")

    def memory(self, fm: Filtermail, idle_start: int, idle: int) -> Memory:
        """Peak RSS with RSS_CONNS concurrent large messages, then every second after."""
        with RssSampler({"filtermail": fm.pid}) as sampler:
            sampler.reset_peaks()
            (load,), *_ = self.measure(fm, [self.jobs(fm, LARGE, RSS_CONNS)])
            peak = sampler.peak("filtermail")
            after = []
            for _ in range(round(self.d.after)):
                time.sleep(1.0)
                after.append(sampler.current("filtermail")[0])
        return Memory(idle_start, idle, peak, after, load)

    def stall(self, fm: Filtermail) -> Stall:
        """One client of small messages next to STALL_LARGE clients of large ones."""
        large = self.jobs(fm, LARGE, STALL_LARGE, procs=2)
        small = [replace(job, offset=STALL_LARGE) for job in self.jobs(fm, SMALL, 1)]
        (large_load, small_load), fm_cpu, _, _ = self.measure(fm, [large, small])
        return Stall(small_load, large_load, fm_cpu.share)


def rss_now(pid: int) -> int:
    return rss_by_tree({"filtermail": pid})["filtermail"][0]


@dataclass(frozen=True)
class FilterFigures:
    cells: list[Cell]
    memory: Memory
    stall: Stall
    accepted: int
    received: int | None


def figures_filtermail(setup: Setup, bodies: dict[int, bytes], d: Durations) -> FilterFigures:
    cells = []
    with running_sink(setup) as sink:
        bench = FilterBench(setup, sink, bodies, d)
        with running_filtermail(setup, sink, dkim=False) as fm:
            time.sleep(d.settle)
            idle_start = rss_now(fm.pid)
            bench.warm(fm)
            time.sleep(d.settle)
            idle = rss_now(fm.pid)
            for size in (SMALL, LARGE):
                cells += [bench.cell(fm, size, n) for n in CONCURRENCIES]
            memory = bench.memory(fm, idle_start, idle)
            stall = bench.stall(fm)
        with running_filtermail(setup, sink, dkim=True) as fm:
            bench.warm(fm)
            for size in (SMALL, LARGE):
                cells += [bench.cell(fm, size, n) for n in DKIM_CONCURRENCIES]
    return FilterFigures(cells, memory, stall, sink.accepted, sink.received())


# -- report --------------------------------------------------------------------------------------


def ratio(arms: Sequence[RelayArm], arm: int = 0) -> float:
    """Messages a second of ``arms[arm]`` (with the filters) over those without them (last)."""
    return arms[arm].rate / arms[-1].rate


def arm_table(arms: Sequence[RelayArm], drain: bool) -> None:
    rows = []
    for arm in arms:
        load = arm.merged()
        rows.append(
            [
                arm.name,
                f"{arm.rate:,.0f}",
                *([f"{arm.delivered_rate:,.0f}"] if drain else []),
                ms(load.percentile_ms(0.5)),
                ms(load.percentile_ms(0.99)),
                str(load.errors),
                *(pct(sum(v) / len(v)) for v in arm.cpu.values()),
                pct(sum(arm.busy) / len(arm.busy)),
                pct(sum(arm.others) / len(arm.others)),
                pct(load.client_cpu),
                *([f"{max(arm.drain):.1f}"] if drain else []),
                " ".join(f"{r.rate:.0f}" for r in arm.results),
            ]
        )
    cpu = [f"{name} CPU" for name in arms[0].cpu]
    headers = ["arm", "msgs/s", *(["incl. drain"] if drain else []), "p50 ms", "p99 ms"]
    headers += ["errors", *cpu, "all CPUs busy", "others CPU", "client CPU"]
    table([*headers, *(["drain s"] if drain else []), "msgs/s per round"], rows, left=1)
    for arm in arms:
        error_note(arm.merged(), f"{arm.name} messages")


def print_relay(f: RelayFigure, d: Durations) -> None:
    say()
    say(
        f"Figure 1: {CHAT_CLIENTS} chat clients (SMTP AUTH, implicit TLS on submissions, one "
        f"connection each) sending {SIZE_NAMES[SMALL]} encrypted messages to local accounts, "
        f"{d.relay_rounds} alternating rounds of {d.relay_round:g}s per arm and way; DKIM "
        f"signing {'on (a domain relay)' if f.dkim else 'off (as on an IP-only relay)'}"
    )
    say(
        "\n1a, submission: while an arm is measured its Postfix puts the mail it accepts on hold "
        "(cleanup's\n  header_checks = static:HOLD), so neither delivers meanwhile; the mail "
        "is released and\n  delivered after the round"
    )
    arm_table(f.held, drain=False)
    say(
        f"  ratio with/without filters: {ratio(f.held):.3f} (msgs/s); null proxy/without: "
        f"{ratio(f.held, 1):.3f} (the null proxy: the same Postfix handing mail\n  straight "
        "to its own reinjection listener, no filter between them: what smtpd_proxy_filter "
        "costs\n  by itself, the ceiling of any before-queue filter)"
    )
    say(
        "\n1b, submission while delivering: Postfix delivers to Dovecot (LMTP) meanwhile, on "
        "the same\n  two cores. Without the filters it accepts faster than it delivers and "
        "leaves a backlog\n  (drain s); with them, delivery keeps up."
    )
    arm_table(f.delivering, drain=True)
    say(
        "  CPU: each tree's processes (100% = one core; filtermail-outgoing, and the Dovecot "
        "both\n  arms deliver into); others: processes this benchmark did not start; drain s: "
        "the longest\n  wait after a round until every accepted message was in its maildir "
        "(the next round starts\n  only then)"
    )
    say(
        f"  ratio with/without filters: {ratio(f.delivering):.3f} (msgs/s); "
        f"{f.delivering[0].delivered_rate / f.delivering[1].delivered_rate:.3f} counting the "
        "drain (incl. drain: the\n  messages accepted in the rounds over the rounds' time "
        "plus their drain time)"
    )
    lost = f.accepted - f.delivered
    say(
        f"  delivered: {f.delivered:,} messages in the maildirs, {f.accepted:,} accepted (250, "
        "warm-ups included)" + (f"  ! {lost:,} missing" if lost else "")
    )
    whole_rss, procs = f.idle_rss[WHOLE]
    parts = ", ".join(
        f"{name} {mib(f.idle_rss[name][0])}"
        for name in ("filtermail-outgoing", "filtermail-incoming", "postfix", "dovecot")
    )
    say(
        f"  whole relay idle after the warm-ups ({d.settle:g}s quiet): RSS {mib(whole_rss)} MiB "
        f"summed over {procs} processes, PSS {mib(f.idle_pss[WHOLE][0])} MiB; RSS MiB of "
        f"{parts}"
    )


def print_cells(f: FilterFigures, d: Durations) -> None:
    say()
    say(
        f"Figure 2: filtermail alone (outgoing) into an SMTP sink, one message per connection "
        f"as Postfix's proxy sends them, closed loop ({d.cell:g}s each)"
    )
    rows = [
        [
            "on" if c.dkim else "off",
            SIZE_NAMES[c.size],
            str(c.conns),
            f"{c.load.rate:,.1f}",
            f"{c.load.rate * c.size / 2**20:,.1f}",
            ms(c.load.percentile_ms(0.5)),
            ms(c.load.percentile_ms(0.99)),
            str(c.load.errors),
            pct(c.filtermail_cpu),
            pct(c.sink_cpu),
            pct(c.load.client_cpu),
            pct(c.busy),
            pct(c.others),
        ]
        for c in f.cells
    ]
    headers = ["DKIM", "size", "clients", "msgs/s", "MiB/s", "p50 ms", "p99 ms", "errors"]
    cpu = ["filtermail CPU", "sink CPU", "client CPU", "all CPUs busy", "others CPU"]
    table([*headers, *cpu], rows)
    say(
        "  filtermail CPU: its process, all threads (100% = one core); others CPU: processes\n"
        "  this benchmark did not start (other jobs on the machine), a lower bound"
    )
    for c in f.cells:
        error_note(c.load, f"{SIZE_NAMES[c.size]} x {c.conns} messages")
    say(f"  the sink received {f.received} messages, filtermail accepted {f.accepted}")


def print_memory(m: Memory, d: Durations) -> None:
    say()
    say(
        f"Figure 3: filtermail's RSS (its process tree, sampled every 50 ms) with {RSS_CONNS} "
        f"concurrent {SIZE_NAMES[LARGE]} messages ({d.cell:g}s, {m.load.rate:.1f} msgs/s)"
    )
    rows = [
        ["idle, before the first message", mib(m.idle_start)],
        [f"idle, after {WARM_MESSAGES} messages and {d.settle:g}s quiet", mib(m.idle)],
        [f"peak with {RSS_CONNS} concurrent {SIZE_NAMES[LARGE]} messages", mib(m.peak)],
        *([f"{n}s after", mib(rss)] for n, rss in enumerate(m.after, 1)),
    ]
    table(["when", "RSS MiB"], rows, left=1)
    error_note(m.load, "messages")


def print_stall(s: Stall, small_alone: Cell, d: Durations) -> None:
    say()
    say(
        f"Figure 4: one client sending {SIZE_NAMES[SMALL]} messages while {STALL_LARGE} send "
        f"{SIZE_NAMES[LARGE]} messages ({d.cell:g}s)"
    )
    rows = [
        [
            f"{SIZE_NAMES[SMALL]}, alone (figure 2)",
            f"{small_alone.load.rate:,.1f}",
            *(ms(small_alone.load.percentile_ms(q)) for q in (0.5, 0.99, 1.0)),
        ],
        [
            f"{SIZE_NAMES[SMALL]}, next to the large ones",
            f"{s.small.rate:,.1f}",
            *(ms(s.small.percentile_ms(q)) for q in (0.5, 0.99, 1.0)),
        ],
        [
            f"{SIZE_NAMES[LARGE]} x {STALL_LARGE}",
            f"{s.large.rate:,.1f}",
            *(ms(s.large.percentile_ms(q)) for q in (0.5, 0.99, 1.0)),
        ],
    ]
    table(["client", "msgs/s", "p50 ms", "p99 ms", "max ms"], rows, left=1)
    say(f"  filtermail CPU meanwhile: {pct(s.filtermail_cpu)}")
    error_note(s.small, "small messages")
    error_note(s.large, "large messages")


def best(cells: list[Cell], size: int) -> Cell:
    return max((c for c in cells if c.size == size and not c.dkim), key=lambda c: c.load.rate)


def print_goals(relay: RelayFigure, f: FilterFigures, d: Durations) -> None:
    rows = [
        (
            f"submission msgs/s with filters / without >= {GOAL_RATIO} (1a)",
            f"{ratio(relay.held):.3f} (1b, delivering: {ratio(relay.delivering):.3f})",
            ratio(relay.held) >= GOAL_RATIO,
        )
    ]
    for size, goal in GOAL_RATE.items():
        top = best(f.cells, size)
        rows.append(
            (
                f"filtermail {SIZE_NAMES[size]} >= {goal}/s",
                f"{top.load.rate:,.1f}/s ({top.conns} clients)",
                top.load.rate >= goal,
            )
        )
    m = f.memory
    rows += [
        (
            f"filtermail RSS peak, {RSS_CONNS} x {SIZE_NAMES[LARGE]} < {GOAL_PEAK_MIB} MiB",
            f"{mib(m.peak)} MiB",
            m.peak < GOAL_PEAK_MIB * 2**20,
        ),
        (
            f"filtermail RSS {d.after:g}s after <= idle + {GOAL_AFTER_MIB} MiB",
            f"{mib(m.after[-1])} MiB {len(m.after)}s after (idle {mib(m.idle)})",
            m.after[-1] <= m.idle + GOAL_AFTER_MIB * 2**20,
        ),
        (
            "every accepted message arrived",
            f"{relay.delivered:,}/{relay.accepted:,} in maildirs, {f.received}/{f.accepted} sink",
            relay.delivered == relay.accepted and f.received == f.accepted,
        ),
    ]
    report.goals(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds per figure")
    parser.add_argument(
        "--relay-dkim",
        choices=("on", "off"),
        default="on",
        help="DKIM signing in figure 1's relay (default on, as a domain relay signs)",
    )
    args = parser.parse_args(argv)
    d = QUICK if args.quick else FULL
    title = "filtermail benchmark"
    with bench_setup("filtermail_bench", title, args.quick, ACCOUNTS, ("gpg",)) as setup:
        with gpg_in(setup.root / "gnupg") as gpg:
            bodies = {size: encrypted_body(gpg, size) for size in (SMALL, LARGE)}
        header = len(head(setup.accounts[0].addr, setup.accounts[1].addr))
        sizes = " and ".join(f"{header + len(b):,} bytes" for b in bodies.values())
        say(f"  messages: GnuPG-encrypted RFC 3156, about {sizes} with their header")
        noting = report.noting_other_load
        with noting(setup.other):
            relay = figure_relay(setup, bodies[SMALL], d, dkim=args.relay_dkim == "on")
            print_relay(relay, d)
        with noting(setup.other):
            filters = figures_filtermail(setup, bodies, d)
            print_cells(filters, d)
            print_memory(filters.memory, d)
            small_alone = next(c for c in filters.cells if c.size == SMALL and c.conns == 1)
            print_stall(filters.stall, small_alone, d)
        print_goals(relay, filters, d)
        report.other_load_summary(setup.other)
    return 0


if __name__ == "__main__":
    sys.exit(main())
