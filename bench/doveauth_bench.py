"""Benchmark doveauth: dict lookups, account creation, and IMAP logins through real Dovecot.

Why: doveauth answers the passdb/userdb lookups of every login on a chatmail relay, and creates
the account on an address's first login. It must answer existing accounts fast, keep answering
them while a burst of sign-ups is being hashed, and cost Dovecot little compared with a static
passwd-file passdb, which is the limit of what Dovecot can do on this machine.

How (the shared parts are in ``harness``): everything runs on loopback in one temporary
directory (removed at the end), with chatmail.ini's resource limits relaxed so that creation is
never refused.

1. A ``doveauth`` from this venv, started as the vmail user like production, on a temporary
   socket; its log goes through a pipe, as under supervisord. 1000 accounts are pre-created.
   Client processes speak Dovecot's dict protocol, one request outstanding per connection like
   a blocking Dovecot auth-worker. Existing accounts are looked up by ``passdb/<addr>``, the
   key Dovecot asks first; new ones by ``passdb/<password>"<addr>``, the key that creates.
   Figures: lookups/s of existing accounts and creations/s of new accounts over 1, 8 and 64
   connections, with latency percentiles, doveauth's CPU (its first process, and its
   descendants: hashing workers if any) and peak RSS (all its processes together).
2. Lookups at a fixed rate on a few connections, alone and next to sign-ups at full speed on
   other connections, latency counted from each request's scheduled send time.
3. The relay as production starts it, next to the passwd-file "limit" Dovecot from the same
   rendered dovecot.conf and with the same hashes. IMAP LOGIN+LOGOUT sessions from several
   client processes; the two arms alternate (ABBA...) so drift of the machine hits both alike.

Run as root with the project's venv::

    /usr/local/lib/chatmaild/venv-test/bin/python bench/doveauth_bench.py [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import count

from harness import env, report
from harness.clients import LoadResult, combine, merge, run_clients, split_evenly
from harness.dictload import DictJob, prepare_dict_job
from harness.env import DOMAIN, VMAIL, Setup
from harness.imap import imap_jobs, prepare_imap_job
from harness.limits import running_limit_dovecot
from harness.probes import MachineBusy, TreeUsage, Usage
from harness.procs import Daemon, RssSampler, running, unix_socket_accepts
from harness.relays import running_relay
from harness.report import error_note, ms, pct, say, table
from harness.session import bench_setup
from harness.stats import percentile_ms

ACCOUNTS = 1000
CONCURRENCIES = (1, 8, 64)
CLIENT_PROCS = 4  # client processes driving one measurement (fewer if fewer connections)
BURST_LOOKUP_CONNS = 4
BURST_LOOKUP_RATE = 1000.0  # lookups/s, all lookup connections together
BURST_SIGNUP_CONNS = 16
IMAP_SESSIONS_PER_PROC = 8

GOAL_RATIO = 0.9
GOAL_BURST_P99_MS = 5.0
GOAL_LOOKUPS = 20_000


@dataclass(frozen=True)
class Durations:
    """Seconds of each measurement window (after ``warmup`` seconds that are not counted)."""

    lookup: float
    create: float
    burst: float
    imap_round: float  # one arm's share of one IMAP round
    imap_rounds: int
    warmup: float


FULL = Durations(lookup=10, create=8, burst=10, imap_round=5, imap_rounds=4, warmup=1.0)
QUICK = Durations(lookup=2, create=2, burst=3, imap_round=1.5, imap_rounds=2, warmup=0.5)


# -- requests: what a Dovecot auth-worker asks doveauth ------------------------------------------


@dataclass(frozen=True)
class Lookups:
    """Existing accounts by the key Dovecot asks first, passdb/%Eu (without the password)."""

    accounts: tuple[tuple[str, str], ...]
    offset: int = 0  # where in ``accounts`` to start

    def __call__(self) -> Callable[[], bytes]:
        requests = [f"Lshared/passdb/{a}\t{a}\n".encode() for a, _password in self.accounts]
        position = count(self.offset)
        return lambda: requests[next(position) % len(requests)]


@dataclass(frozen=True)
class Creations:
    """New accounts <prefix><counter>@DOMAIN by the creating key, passdb/%Ew"%Eu."""

    prefix: str

    def __call__(self) -> Callable[[], bytes]:
        counter = count()

        def create() -> bytes:
            n = next(counter)
            addr, password = f"{self.prefix}{n:06x}@{DOMAIN}", f"pw-{n:06x}-bench"
            return f'Lshared/passdb/{password}"{addr}\t{addr}\n'.encode()

        return create


def lookup_jobs(socket: str, setup: Setup, conns: int) -> list[DictJob]:
    accounts = setup.credentials()
    return [
        DictJob(socket, n, Lookups(accounts, offset=i * 7919))
        for i, n in enumerate(split_evenly(conns, CLIENT_PROCS))
    ]


_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"
_prefixes = count()


def create_jobs(socket: str, conns: int, procs: int = CLIENT_PROCS) -> list[DictJob]:
    """Jobs creating new accounts; every job gets a prefix no other job of this run has."""
    jobs = []
    for n in split_evenly(conns, procs):
        number = next(_prefixes)
        prefix = "c" + _BASE36[number // 36] + _BASE36[number % 36]
        jobs.append(DictJob(socket, n, Creations(prefix)))
    return jobs


# -- figures 1-3: dict lookups and account creations against a standalone doveauth ---------------


@dataclass(frozen=True)
class Doveauth:
    socket: str
    sampler: RssSampler  # knows its tree as "doveauth"


@contextlib.contextmanager
def running_doveauth(setup: Setup) -> Iterator[Doveauth]:
    """doveauth started by us as the vmail user, on a socket in the temporary root."""
    socket = env.vmail_dir(setup.root / "sockets") / "doveauth.socket"
    argv = [str(setup.bin_dir / "doveauth"), str(socket), str(setup.ini)]
    daemon = Daemon(argv, setup.root / "doveauth.log", user=VMAIL, cwd=setup.root)
    with (
        running(daemon, unix_socket_accepts(socket)),
        RssSampler({"doveauth": daemon.pid}) as sampler,
    ):
        yield Doveauth(str(socket), sampler)


@dataclass(frozen=True)
class DictRow:
    conns: int
    load: LoadResult
    usage: Usage


def measure_dict(
    daemon: Doveauth,
    setup: Setup,
    jobs: list[DictJob],
    seconds: float,
    warmup: float,
    side_jobs: Sequence[DictJob] = (),
) -> tuple[LoadResult, LoadResult | None, Usage]:
    """Run ``jobs`` (and ``side_jobs`` next to them); doveauth's usage over the window."""
    usage = TreeUsage(daemon.sampler, "doveauth")
    groups = [(prepare_dict_job, jobs)]
    if side_jobs:
        groups.append((prepare_dict_job, side_jobs))
    results, window = run_clients(groups, warmup, seconds, [usage, setup.other])
    time.sleep(0.5)  # let creations still in flight finish before the next measurement
    side = merge(results[1], window) if side_jobs else None
    return merge(results[0], window), side, usage.usage


def figure_dict(
    daemon: Doveauth,
    setup: Setup,
    jobs: Callable[[int], list[DictJob]],
    seconds: float,
    warmup: float,
) -> list[DictRow]:
    """One row per concurrency: ``jobs(conns)`` run closed loop for ``seconds``."""
    rows = []
    for conns in CONCURRENCIES:
        load, _, usage = measure_dict(daemon, setup, jobs(conns), seconds, warmup)
        rows.append(DictRow(conns, load, usage))
    return rows


@dataclass(frozen=True)
class BurstResult:
    quiet: LoadResult
    quiet_usage: Usage
    busy: LoadResult
    busy_usage: Usage
    signups: LoadResult


def figure_burst(daemon: Doveauth, setup: Setup, d: Durations) -> BurstResult:
    """Fixed-rate lookups alone, then next to sign-ups at full speed on other connections."""
    lookups = [
        DictJob(daemon.socket, BURST_LOOKUP_CONNS, Lookups(setup.credentials()), BURST_LOOKUP_RATE)
    ]
    quiet, _, quiet_usage = measure_dict(daemon, setup, lookups, d.burst, d.warmup)
    signups = create_jobs(daemon.socket, BURST_SIGNUP_CONNS, procs=2)
    busy, signed_up, busy_usage = measure_dict(
        daemon, setup, lookups, d.burst, d.warmup, side_jobs=signups
    )
    assert signed_up is not None
    return BurstResult(quiet, quiet_usage, busy, busy_usage, signed_up)


# -- figure 4: IMAP logins through Dovecot, doveauth versus the passwd-file limit ----------------


@dataclass
class ImapArm:
    name: str
    port: int
    results: list[LoadResult] = field(default_factory=list)
    busy: list[float] = field(default_factory=list)  # share of all CPUs busy, per round

    @property
    def rate(self) -> float:
        return sum(r.ok for r in self.results) / sum(r.seconds for r in self.results)

    def merged(self) -> LoadResult:
        return combine(self.results)

    def jobs(self, setup: Setup) -> list:
        creds = setup.credentials()
        return imap_jobs(self.port, creds, CLIENT_PROCS, IMAP_SESSIONS_PER_PROC)

    def measure(self, setup: Setup, seconds: float, warmup: float) -> None:
        busy = MachineBusy()
        groups = [(prepare_imap_job, self.jobs(setup))]
        results, window = run_clients(groups, warmup, seconds, [busy, setup.other])
        self.results.append(merge(results[0], window))
        self.busy.append(busy.share)


def figure_imap(setup: Setup, d: Durations) -> tuple[ImapArm, ImapArm]:
    """Both arms run side by side; measurements alternate ABBA... between them."""
    with running_relay(setup) as relay:
        limit_port = env.free_port()
        with running_limit_dovecot(setup, relay, limit_port):
            doveauth = ImapArm("doveauth (dict passdb/userdb)", relay.ports.imap)
            static = ImapArm("static passwd-file passdb/userdb", limit_port)
            for arm in (doveauth, static):  # warm up: start processes, fill caches
                run_clients([(prepare_imap_job, arm.jobs(setup))], 0.0, d.warmup)
            for n in range(d.imap_rounds):
                for arm in (doveauth, static) if n % 2 == 0 else (static, doveauth):
                    arm.measure(setup, d.imap_round, d.warmup)
    return doveauth, static


# -- report --------------------------------------------------------------------------------------


def print_dict_rows(title: str, unit: str, rows: list[DictRow], what: str) -> None:
    say()
    say(title)
    headers = ["conns", unit, "p50 ms", "p99 ms", "doveauth CPU", "hash workers CPU"]
    table(
        [*headers, "client CPU", "peak RSS MiB"],
        [
            [
                str(r.conns),
                f"{r.load.rate:,.0f}",
                ms(r.load.percentile_ms(0.50)),
                ms(r.load.percentile_ms(0.99)),
                pct(r.usage.main_cpu),
                pct(r.usage.children_cpu),
                pct(r.load.client_cpu),
                report.mib(r.usage.peak_rss),
            ]
            for r in rows
        ],
    )
    for r in rows:
        error_note(r.load, what)


def print_lookups(rows: list[DictRow], d: Durations) -> None:
    title = f"Figure 1: existing-account passdb lookups, closed loop ({d.lookup:g}s each)"
    print_dict_rows(title, "lookups/s", rows, "lookups")


def print_creations(rows: list[DictRow], d: Durations) -> None:
    title = f"Figure 2: account creations, closed loop ({d.create:g}s each)"
    print_dict_rows(title, "creations/s", rows, "creations")


def print_burst(b: BurstResult, d: Durations) -> None:
    say()
    say(
        f"Figure 3: existing-account lookups at {BURST_LOOKUP_RATE:,.0f}/s on "
        f"{BURST_LOOKUP_CONNS} connections, alone and next to sign-ups at full speed "
        f"({d.burst:g}s each)"
    )
    scenarios = (
        ("lookups alone", b.quiet, b.quiet_usage, None),
        (f"+ sign-ups on {BURST_SIGNUP_CONNS} conns", b.busy, b.busy_usage, b.signups),
    )
    headers = ["scenario", "lookups/s", "p50 ms", "p99 ms", "p99.9 ms", "max ms"]
    table(
        [*headers, "p99 from send ms", "sign-ups/s", "doveauth CPU", "hash workers CPU"],
        [
            [
                name,
                f"{load.rate:,.0f}",
                *(ms(load.percentile_ms(q)) for q in (0.50, 0.99, 0.999, 1.0)),
                ms(percentile_ms(load.service, 0.99)),
                f"{signups.rate:,.0f}" if signups else "-",
                pct(usage.main_cpu),
                pct(usage.children_cpu),
            ]
            for name, load, usage, signups in scenarios
        ],
    )
    say(
        "  latency counts from each lookup's scheduled send time; 'from send' counts from when\n"
        "  the client process actually sent it (the difference is the client's own delay)"
    )
    error_note(b.quiet, "lookups")
    error_note(b.busy, "lookups")
    error_note(b.signups, "sign-ups")


def print_imap(doveauth: ImapArm, static: ImapArm, d: Durations) -> None:
    say()
    say(
        f"Figure 4: IMAP LOGIN+LOGOUT through Dovecot, {CLIENT_PROCS}x{IMAP_SESSIONS_PER_PROC} "
        f"concurrent sessions, {d.imap_rounds} alternating rounds of {d.imap_round:g}s per arm"
    )
    rows = []
    for arm in (doveauth, static):
        load = arm.merged()
        rows.append(
            [
                arm.name,
                f"{arm.rate:,.0f}",
                ms(load.percentile_ms(0.5)),
                ms(load.percentile_ms(0.99)),
                str(load.errors),
                pct(sum(arm.busy) / len(arm.busy)),
                pct(load.client_cpu),
                " ".join(f"{r.rate:.0f}" for r in arm.results),
            ]
        )
    headers = ["arm", "logins/s", "p50 ms", "p99 ms", "errors", "all CPUs busy", "client CPU"]
    table([*headers, "logins/s per round"], rows)
    for arm in (doveauth, static):
        error_note(arm.merged(), f"{arm.name} logins")
    say(f"  ratio doveauth/static: {doveauth.rate / static.rate:.3f}")


def print_goals(lookups: list[DictRow], burst: BurstResult, imap: tuple[ImapArm, ImapArm]):
    ratio = imap[0].rate / imap[1].rate
    p99 = burst.busy.percentile_ms(0.99)
    best = max(lookups, key=lambda r: r.load.rate)
    report.goals(
        [
            (
                f"IMAP login ratio doveauth/static >= {GOAL_RATIO}",
                f"{ratio:.3f}",
                ratio >= GOAL_RATIO,
            ),
            (
                f"lookup p99 during sign-up burst < {GOAL_BURST_P99_MS:g} ms",
                f"{p99:.2f} ms ({percentile_ms(burst.busy.service, 0.99):.2f} from send)",
                p99 < GOAL_BURST_P99_MS and not burst.busy.errors,
            ),
            (
                f"existing-account lookups >= {GOAL_LOOKUPS:,}/s",
                f"{best.load.rate:,.0f}/s ({best.conns} conns)",
                best.load.rate >= GOAL_LOOKUPS,
            ),
        ]
    )


# -- main ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds per figure")
    args = parser.parse_args(argv)
    d = QUICK if args.quick else FULL
    with bench_setup("doveauth_bench", "doveauth benchmark", args.quick, ACCOUNTS) as setup:
        noting = report.noting_other_load
        with running_doveauth(setup) as daemon:
            with noting(setup.other):
                jobs = functools.partial(lookup_jobs, daemon.socket, setup)
                lookups = figure_dict(daemon, setup, jobs, d.lookup, d.warmup)
                print_lookups(lookups, d)
            with noting(setup.other):
                jobs = functools.partial(create_jobs, daemon.socket)
                print_creations(figure_dict(daemon, setup, jobs, d.create, d.warmup), d)
            with noting(setup.other):
                burst = figure_burst(daemon, setup, d)
                print_burst(burst, d)
        with noting(setup.other):
            imap = figure_imap(setup, d)
            print_imap(*imap, d)
        print_goals(lookups, burst, imap)
        report.other_load_summary(setup.other)
    return 0


if __name__ == "__main__":
    sys.exit(main())
