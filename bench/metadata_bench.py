"""Benchmark chatmail-metadata: IMAP METADATA through Dovecot, its dict socket, push latency,
notifications/s, and its memory with a full queue.

Why: chatmail-metadata is Dovecot's IMAP METADATA dictionary (a chat app stores its push device
token with SETMETADATA) and the push notifier behind it (each delivery to a user with tokens
queues one notification per token, which it POSTs to the push gateway). It must cost Dovecot
little compared with Dovecot's own attribute dict, wake a phone soon after a message arrives,
empty its queue quickly after a burst, and stay small while the gateway is down.

How (the shared parts are in ``harness``): the relay as production starts it, with
``notification_url`` pointed at a stand-in push gateway (``harness.gateway``: its own process on
loopback, HTTPS with a certificate of its own that the relay trusts through
``SSL_CERT_FILE``, every POST recorded with its time, 200 or 500 on demand). Dict keys
carry a made-up mailbox GUID, which chatmail-metadata ignores.

1. Delivery to gateway, on the otherwise idle relay, one message at a time to an account with
   one token: from MAIL FROM on an open connection to Dovecot's LMTP socket (the hop that runs
   the push hook), and from the end of an SMTP submission (the 250 after the data, AUTH on
   submissions, through Postfix, filtermail and LMTP), until the gateway has the POST. The LMTP
   row also with a plain-HTTP gateway, on a relay of its own started first.
2. IMAP SETMETADATA+GETMETADATA of /private/devicetoken in logged-in sessions from several
   client processes: the relay's Dovecot against the limit Dovecot from the same rendered
   dovecot.conf with ``mail_attribute_dict = file:%h/dovecot-attributes`` (Dovecot's own),
   alternating ABBA.
3. chatmail-metadata's socket alone: a token set (one transaction, B/S/C) and a lookup, as
   Dovecot sends them: each on a new connection (Dovecot opens one per IMAP command), and for
   reference on kept connections; then sets alone and lookups alone.
4. Two tokens for each of 1,000 accounts; then ``messagenew`` for all of them, as the push hook
   sends it (a transaction on a new connection per delivery), until the gateway has all 2,000.
5. chatmail-metadata's RSS: fresh, idle after the first notifications, the peak during 1-4, and
   with 10,000 notifications queued (5,000 accounts x 2 tokens) while the gateway answers 500;
   then the gateway answers 200 again and the queue must drain completely.

Run as root with the venv that has this checkout installed (see README.md)::

    python bench/metadata_bench.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path

from harness import env, report
from harness.clients import LoadResult, combine, merge, run_clients, run_in_client
from harness.dictload import METADATA_HELLO, DictJob, prepare_dict_job, send_each
from harness.gateway import GatewayClient, running_gateway
from harness.imap import MetadataJob, prepare_metadata_job
from harness.limits import running_limit_dovecot
from harness.mail import encrypted_body, gpg_in
from harness.probes import MachineBusy, OtherLoad, TreeCpu
from harness.procs import RssSampler
from harness.relays import Relay, program_pids, running_relay
from harness.report import error_note, mib, ms, pct, say, table
from harness.session import bench_setup
from harness.smtpload import Client, SmtpJob, connect
from harness.stats import percentile_ms

IMAP_PROCS, IMAP_SESSIONS = 4, 4  # client processes, logged-in sessions in each
DICT_PROCS = 2
DICT_USERS = 50  # accounts figure 3 sets and looks up
SEND_CONCURRENCY = 8  # token sets and deliveries at once, as several imap and lmtp processes
TOKENS = 2  # per account, figures 4 and 5
GUID = "5e1f0c2a9b7d4e3f8a6c1d2b3e4f5a6b"  # chatmail-metadata ignores the mailbox GUID
LIMIT_DICT = "file:%h/dovecot-attributes"
NO_LIMITS = "max_user_send_per_minute = 100000000\nmax_user_send_burst_size = 100000000\n"
MESSAGE_SIZE = 4096
DRAIN_TIMEOUT = 180.0  # seconds the queue may take to empty once the gateway answers 200

GOAL_RATIO = 0.8
GOAL_DICT_OPS = 3 * 947  # the former Python service's set+lookup ops/s, three times
GOAL_P99_MS = 100.0
GOAL_RSS_MIB = 40


@dataclass(frozen=True)
class Counts:
    latency: int  # messages per path (figure 1)
    imap_round: float  # seconds one arm is measured per round (figure 2)
    imap_rounds: int
    dict_seconds: float  # per measurement (figure 3)
    notify_users: int  # figure 4
    queue_users: int  # figure 5: queue_users x TOKENS notifications queued
    hold: float  # seconds the gateway keeps failing once all are queued
    warmup: float
    settle: float


FULL = Counts(200, 5, 4, 5, 1000, 5000, hold=5, warmup=1, settle=3)
QUICK = Counts(20, 1.5, 2, 1, 200, 500, hold=2, warmup=0.5, settle=1)


# -- dict requests, as Dovecot sends them --------------------------------------------------------


def set_token(addr: str, token: str, tid: int = 1) -> bytes:
    """SETMETADATA INBOX (/private/devicetoken "<token>"): one transaction."""
    return f"B{tid}\t{addr}\nS{tid}\tpriv/{GUID}/devicetoken\t{token}\nC{tid}\n".encode()


def new_message(addr: str) -> bytes:
    """What the push hook sets when LMTP delivered a message to ``addr``."""
    return f"B1\t{addr}\nS1\tpriv/{GUID}/messagenew\t\nC1\n".encode()


def lookup(addr: str) -> bytes:
    """GETMETADATA INBOX /private/devicetoken."""
    return f"Lpriv/{GUID}/devicetoken\t{addr}\n".encode()


def token(addr: str, n: int) -> str:
    return f"tok-{addr.partition('@')[0]}-{n}"


SET_LOOKUP, SET, LOOKUP = ("set", "lookup"), ("set",), ("lookup",)


@dataclass(frozen=True)
class DictOps:
    """For ``DictJob``: for one account after the other, one request of each of ``kinds``
    ("set": a token set, "lookup"): one op."""

    users: tuple[str, ...]
    offset: int
    kinds: tuple[str, ...] = SET_LOOKUP

    def __call__(self) -> Callable[[], bytes]:
        position, tids, per = count(self.offset * len(self.kinds)), count(1), len(self.kinds)

        def next_request() -> bytes:
            n = next(position)
            addr = self.users[(n // per) % len(self.users)]
            if self.kinds[n % per] == "lookup":
                return lookup(addr)
            return set_token(addr, "tok", next(tids))

        return next_request


# -- figure 1: delivery to gateway latency -------------------------------------------------------


@dataclass(frozen=True)
class LatencyJob:
    lmtp: str  # Dovecot's LMTP socket
    submissions: int
    sender: tuple[str, str]
    rcpt: str  # has one token
    body: bytes
    gateway: GatewayClient
    count: int
    smtp: bool  # also through Postfix, after the LMTP series
    pause: float = 0.05  # between messages: one at a time on an idle relay


@dataclass(frozen=True)
class Latencies:
    path: str
    first: float  # the first message's to the gateway, seconds (NaN if it failed)
    to_gateway: list[float]  # the others', seconds, sorted
    reply: list[float]  # from MAIL FROM to the 250 after the data, all, sorted
    errors: int
    first_error: str


async def lmtp_client(path: str) -> Client:
    reader, writer = await asyncio.open_unix_connection(path)
    client = Client(reader, writer)
    await client.expect(None, 220)
    await client.expect("LHLO bench-client", 250)
    return client


async def _series(job: LatencyJob, path: str, client: Client, from_reply: bool) -> Latencies:
    """``job.count`` messages through ``client``, each once the former one's POST arrived."""
    to_gateway, reply, errors, first_error = [], [], 0, ""
    first = float("nan")
    for n in range(job.count):
        seen, ok = job.gateway.counts()  # blocking: nothing else runs in this process
        began = time.monotonic()
        problem = await client.send(job.sender[0], job.rcpt, job.body)
        replied = time.monotonic()
        posts = job.gateway.posts(seen, ok + 1, wait=10)
        if problem or not posts:
            errors += 1
            first_error = first_error or problem or "no POST within 10 s"
            continue
        latency = posts[0][0] - (replied if from_reply else began)
        if n == 0:
            first = latency
        else:
            to_gateway.append(latency)
        reply.append(replied - began)
        await asyncio.sleep(job.pause)
    return Latencies(path, first, sorted(to_gateway), sorted(reply), errors, first_error)


async def _latencies(job: LatencyJob) -> list[Latencies]:
    scheme = "HTTPS" if job.gateway.ca_file else "plain HTTP"
    lmtp = await lmtp_client(job.lmtp)
    try:
        rows = [await _series(job, f"LMTP, {scheme} gateway", lmtp, from_reply=False)]
    finally:
        lmtp.close()
    if job.smtp:
        smtp_job = SmtpJob(job.submissions, 1, (job.sender,), (job.rcpt,), job.body, tls=True)
        smtp = await connect(smtp_job, job.sender)
        try:
            rows.append(await _series(job, f"SMTP, {scheme} gateway", smtp, from_reply=True))
        finally:
            smtp.close()
    return rows


def run_latencies(job: LatencyJob) -> list[Latencies]:
    return asyncio.run(_latencies(job))


def figure_latency(
    relay: Relay, gateway: GatewayClient, accounts: Accounts, body: bytes, c: Counts, smtp: bool
) -> list[Latencies]:
    """The recipient gets one token, then ``c.latency`` messages go each way."""
    rcpt = accounts.rcpt
    load = send_each(str(relay.layout.metadata_socket), [set_token(rcpt, token(rcpt, 0))], 1)
    error_note(load, "token sets")
    lmtp, port = str(relay.layout.lmtp_socket), relay.ports.submissions
    job = LatencyJob(lmtp, port, accounts.sender, rcpt, body, gateway, c.latency, smtp)
    return run_in_client(run_latencies, job, timeout=60 + c.latency * 30)


def gateway_ini(gateway: GatewayClient) -> str:
    return NO_LIMITS + f"notification_url = {gateway.url}\n"


def plain_http_latency(setup: env.Setup, accounts: Accounts, body: bytes, c: Counts):
    """Figure 1's LMTP row with a plain-HTTP gateway, on a relay of its own."""
    with running_gateway(setup.root, env.free_port(), tls=False) as (gateway, pid):
        setup.other.roots.add(pid)
        with running_relay(setup, gateway_ini(gateway)) as relay:
            return figure_latency(relay, gateway, accounts, body, c, smtp=False)


# -- figure 2: IMAP SETMETADATA+GETMETADATA, chatmail-metadata against Dovecot's file dict ------


@dataclass
class ImapArm:
    name: str
    port: int
    rounds: list[LoadResult] = field(default_factory=list)
    busy: list[float] = field(default_factory=list)  # share of all CPUs busy, per round
    metadata_cpu: list[float] = field(default_factory=list)  # share of a core, per round

    @property
    def rate(self) -> float:
        return sum(r.ok for r in self.rounds) / sum(r.seconds for r in self.rounds)

    def jobs(self, accounts: Sequence[tuple[str, str]]) -> list[MetadataJob]:
        return [MetadataJob(self.port, tuple(accounts[i::IMAP_PROCS])) for i in range(IMAP_PROCS)]

    def measure(self, setup: env.Setup, accounts: Accounts, c: Counts, pid: int) -> None:
        busy, cpu = MachineBusy(), TreeCpu(pid)
        groups = [(prepare_metadata_job, self.jobs(accounts.imap))]
        results, window = run_clients(groups, c.warmup, c.imap_round, [busy, cpu, setup.other])
        self.rounds.append(merge(results[0], window))
        self.busy.append(busy.share)
        self.metadata_cpu.append(cpu.share)


def figure_imap(setup: env.Setup, relay: Relay, accounts: Accounts, c: Counts) -> list[ImapArm]:
    """Both Dovecots run side by side; the arms alternate ABBA..."""
    limit_port = env.free_port()
    metadata = program_pids(relay.layout)["metadata"]
    with running_limit_dovecot(setup, relay, limit_port, attribute_dict=LIMIT_DICT):
        arms = [
            ImapArm("chatmail-metadata (proxy dict)", relay.ports.imap),
            ImapArm(f"Dovecot's {LIMIT_DICT}", limit_port),
        ]
        for arm in arms:  # warm up: start imap processes, create INBOXes
            run_clients([(prepare_metadata_job, arm.jobs(accounts.imap))], 0.0, c.warmup)
        for n in range(c.imap_rounds):
            for arm in arms if n % 2 == 0 else arms[::-1]:
                arm.measure(setup, accounts, c, metadata)
    return arms


# -- figure 3: chatmail-metadata's socket alone -------------------------------------------------


# (kinds, a new connection per request, connections): what figure 3 measures, in turn
DICT_ROWS = [(SET_LOOKUP, fresh, conns) for fresh in (True, False) for conns in (1, 8)]
DICT_ROWS += [(SET, True, 8), (LOOKUP, True, 8)]


@dataclass(frozen=True)
class DictRow:
    kinds: tuple[str, ...]
    fresh: bool
    conns: int
    load: LoadResult  # each request: a set or a lookup
    cpu: float  # chatmail-metadata, share of a core

    @property
    def ops(self) -> float:
        return self.load.rate / len(self.kinds)


def figure_dict(setup: env.Setup, relay: Relay, pid: int, users: tuple[str, ...], c: Counts):
    """Closed loop: set+lookup over 1 and 8 connections, new per request (as Dovecot) or
    kept; then sets alone and lookups alone."""
    sock = str(relay.layout.metadata_socket)
    rows = []
    for kinds, fresh, conns in DICT_ROWS:
        procs = min(conns, DICT_PROCS)
        ops = [DictOps(users, i * 1000, kinds) for i in range(procs)]
        jobs = [DictJob(sock, conns // procs, o, hello=METADATA_HELLO, fresh=fresh) for o in ops]
        cpu = TreeCpu(pid)  # not TreeUsage: that resets the sampler's peak of figures 1-4
        results, window = run_clients(
            [(prepare_dict_job, jobs)], c.warmup, c.dict_seconds, [cpu, setup.other]
        )
        rows.append(DictRow(kinds, fresh, conns, merge(results[0], window), cpu.share))
    return rows


# -- figure 4: notifications/s -------------------------------------------------------------------


@dataclass(frozen=True)
class Burst:
    users: int
    sets: LoadResult
    triggers: LoadResult
    all_in: float  # seconds from the first trigger until the gateway had every token; NaN if not
    first_post: float  # seconds from the first trigger to the first POST
    missing: int  # tokens the gateway did not get


def set_tokens(sock: str, users: Sequence[str]) -> LoadResult:
    requests = [set_token(u, token(u, n)) for u in users for n in range(TOKENS)]
    return send_each(sock, requests, SEND_CONCURRENCY)


def when_all_in(posts: Sequence, expected: set[str], since: float) -> tuple[float, int]:
    """Seconds after ``since`` when every expected token had a 200 POST, and how many did not."""
    missing = set(expected)
    for when, body, status in posts:
        if status == 200:
            missing.discard(body)
            if not missing:
                return when - since, 0
    return float("nan"), len(missing)


def figure_notify(relay: Relay, gateway: GatewayClient, users: Sequence[str]) -> Burst:
    sock = str(relay.layout.metadata_socket)
    sets = set_tokens(sock, users)
    expected = {token(u, n) for u in users for n in range(TOKENS)}
    seen, ok = gateway.counts()
    triggers = send_each(sock, [new_message(u) for u in users], SEND_CONCURRENCY)
    posts = gateway.posts(seen, ok + len(expected), wait=120)
    all_in, missing = when_all_in(posts, expected, triggers.began)
    first = posts[0][0] - triggers.began if posts else float("nan")
    return Burst(len(users), sets, triggers, all_in, first, missing)


# -- figure 5: memory with a full queue ---------------------------------------------------------


@dataclass(frozen=True)
class Queue:
    queued: int  # notification files once every trigger was answered
    triggers: LoadResult
    rss_queued: int  # bytes, then
    peak_held: int  # the largest while the gateway kept failing
    failed_posts: int  # POSTs answered 500
    drained: float  # seconds until every token had a 200, once the gateway answered 200
    missing: int
    left: int  # files left in the queue after the drain


def queued_files(directory: Path) -> int:
    return sum(1 for _ in directory.glob("*.json"))


def figure_queue(
    relay: Relay, gateway: GatewayClient, sampler: RssSampler, accounts: Accounts, c: Counts
) -> Queue:
    """The gateway fails; every push account gets its tokens (figure 4's have them already)
    and a delivery; memory while queued; then the gateway answers 200 until all arrived."""
    users = accounts.push
    sock, queue_dir = str(relay.layout.metadata_socket), relay.config.notification_queue_dir
    gateway.answer_with(500)
    seen, ok = gateway.counts()
    set_tokens(sock, users[c.notify_users :])
    sampler.reset_peaks()
    triggers = send_each(sock, [new_message(u) for u in users], SEND_CONCURRENCY)
    queued, (rss, _) = queued_files(queue_dir), sampler.sample()["metadata"]
    time.sleep(c.hold)
    peak = sampler.peak("metadata")
    gateway.answer_with(200)
    began = time.monotonic()
    expected = {token(u, n) for u in users for n in range(TOKENS)}
    posts = gateway.posts(seen, ok + len(expected), wait=DRAIN_TIMEOUT)
    drained, missing = when_all_in(posts, expected, began)
    while missing == 0 and queued_files(queue_dir) and time.monotonic() < began + DRAIN_TIMEOUT:
        time.sleep(0.1)  # the notifier removes a file once the gateway answered
    failed = sum(1 for _, _, status in gateway.posts(seen) if status == 500)
    return Queue(queued, triggers, rss, peak, failed, drained, missing, queued_files(queue_dir))


# -- accounts ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Accounts:
    push: tuple[str, ...]  # figure 5's; the first notify_users are figure 4's
    imap: tuple[tuple[str, str], ...]  # figure 2: one session each
    dict_users: tuple[str, ...]  # figure 3
    sender: tuple[str, str]  # figure 1
    rcpt: str  # figure 1: one token


def accounts_needed(c: Counts) -> int:
    return c.queue_users + IMAP_PROCS * IMAP_SESSIONS + DICT_USERS + 2


def split_accounts(setup: env.Setup, c: Counts) -> Accounts:
    creds = setup.credentials()
    push, rest = creds[: c.queue_users], creds[c.queue_users :]
    imap, rest = rest[: IMAP_PROCS * IMAP_SESSIONS], rest[IMAP_PROCS * IMAP_SESSIONS :]
    dict_users = tuple(addr for addr, _ in rest[:DICT_USERS])
    return Accounts(tuple(addr for addr, _ in push), imap, dict_users, rest[-2], rest[-1][0])


# -- report --------------------------------------------------------------------------------------


def print_latency(rows: list[Latencies], c: Counts) -> None:
    say()
    say(
        f"Figure 1: delivery to gateway, {c.latency} messages one at a time per path "
        "(idle relay, one token)"
    )
    headers = ["path", "first ms", "then: ok", "to gateway p50 ms", "p99 ms", "max ms"]
    table(
        [*headers, "reply p50 ms", "p99 ms", "errors"],
        [
            [
                r.path,
                ms(r.first * 1000),
                str(len(r.to_gateway)),
                *(ms(percentile_ms(r.to_gateway, q)) for q in (0.5, 0.99, 1.0)),
                *(ms(percentile_ms(r.reply, q)) for q in (0.5, 0.99)),
                str(r.errors),
            ]
            for r in rows
        ],
        left=1,
    )
    say(
        "  to gateway: until the stand-in gateway on loopback had the POST. LMTP: from MAIL FROM\n"
        "  on an open connection to Dovecot's LMTP socket; SMTP: from the 250 after the data\n"
        "  (submissions, AUTH; Postfix, filtermail, LMTP). reply: from MAIL FROM to the 250 after\n"
        "  the data. first: the row's first message (in an LMTP row, the relay's first push: the\n"
        "  notifier loads its HTTP client and connects to the gateway); the percentiles are of\n"
        "  the others. Everything else in this benchmark runs with the HTTPS gateway (verified\n"
        "  against its own certificate: SSL_CERT_FILE); the plain-HTTP row ran first, on a\n"
        "  relay of its own. The goal is checked on the LMTP row with HTTPS."
    )
    for r in rows:
        if r.errors:
            say(f"  ! {r.errors} {r.path} messages failed; first: {r.first_error!r}")


def print_imap(arms: list[ImapArm], c: Counts) -> None:
    say()
    say(
        f"Figure 2: IMAP SETMETADATA+GETMETADATA INBOX /private/devicetoken, {IMAP_PROCS}x"
        f"{IMAP_SESSIONS} logged-in sessions, {c.imap_rounds} alternating rounds of "
        f"{c.imap_round:g}s per arm"
    )
    rows = []
    for arm in arms:
        load = combine(arm.rounds)
        rows.append(
            [
                arm.name,
                f"{arm.rate:,.0f}",
                ms(load.percentile_ms(0.5)),
                ms(load.percentile_ms(0.99)),
                str(load.errors),
                pct(sum(arm.busy) / len(arm.busy)),
                pct(sum(arm.metadata_cpu) / len(arm.metadata_cpu)),
                pct(load.client_cpu),
                " ".join(f"{r.rate:.0f}" for r in arm.rounds),
            ]
        )
    headers = ["arm", "ops/s", "p50 ms", "p99 ms", "errors", "all CPUs busy"]
    table([*headers, "metadata CPU", "client CPU", "ops/s per round"], rows, left=1)
    say('  one op = SETMETADATA (/private/devicetoken "tok") + GETMETADATA, each answered OK')
    for arm in arms:
        error_note(combine(arm.rounds), f"{arm.name} ops")
    say(f"  ratio chatmail-metadata/file: {arms[0].rate / arms[1].rate:.3f}")


def print_dict(rows: list[DictRow], c: Counts) -> None:
    say()
    say(
        "Figure 3: chatmail-metadata's socket alone, closed loop "
        f"({c.dict_seconds:g}s each); an op: a token set (B/S/C) and a lookup"
    )
    table(
        ["op", "connections", "conns", "ops/s", "p50 ms", "p99 ms", "metadata CPU", "client CPU"],
        [
            [
                "+".join(r.kinds),
                "new per request (as Dovecot)" if r.fresh else "kept",
                str(r.conns),
                f"{r.ops:,.0f}",
                ms(r.load.percentile_ms(0.5)),
                ms(r.load.percentile_ms(0.99)),
                pct(r.cpu),
                pct(r.load.client_cpu),
            ]
            for r in rows
        ],
        left=2,
    )
    say("  p50/p99: of each request (a set or a lookup), from the connect for new connections")
    for r in rows:
        error_note(r.load, "requests")


def print_burst(b: Burst) -> None:
    n = b.users * TOKENS
    say()
    say(f"Figure 4: notifications/s, {b.users:,} accounts x {TOKENS} tokens")
    say(
        f"  tokens set: {b.sets.ok:,} in {b.sets.seconds:.1f}s ({b.sets.rate:,.0f}/s), "
        f"{SEND_CONCURRENCY} at a time, each a transaction on a new connection"
    )
    say(
        f"  messagenew: {b.triggers.ok:,} deliveries in {b.triggers.seconds:.2f}s "
        f"({b.triggers.rate:,.0f}/s, commit p50 {ms(b.triggers.percentile_ms(0.5))} ms, "
        f"p99 {ms(b.triggers.percentile_ms(0.99))} ms), {SEND_CONCURRENCY} at a time"
    )
    say(
        f"  gateway: first POST {b.first_post * 1000:.0f} ms after the first delivery, all {n:,} "
        f"after {b.all_in:.2f}s: {n / b.all_in:,.0f} notifications/s\n  (the last POST came "
        f"{(b.all_in - b.triggers.seconds) * 1000:+.0f} ms from the last delivery's answer)"
    )
    if b.missing:
        say(f"  ! {b.missing} tokens never reached the gateway")
    error_note(b.sets, "token sets")
    error_note(b.triggers, "deliveries")


def print_memory(memory: tuple[int, int, int], q: Queue, c: Counts) -> None:
    fresh, idle, peak = memory
    say()
    say("Figure 5: chatmail-metadata's RSS (its process tree, sampled every 50 ms)")
    rows = [
        ("fresh (started, no notification yet)", fresh),
        (f"idle ({c.settle:g}s after figure 1's notifications)", idle),
        ("peak during figures 1-4", peak),
        (f"{q.queued:,} notifications queued, gateway answering 500", q.rss_queued),
        (f"peak while queued ({c.hold:g}s of retries)", q.peak_held),
    ]
    table(["", "RSS MiB"], [[name, mib(rss)] for name, rss in rows], left=1)
    say(
        f"  queued by {q.triggers.ok:,} deliveries in {q.triggers.seconds:.1f}s "
        f"({q.triggers.rate:,.0f}/s); {q.failed_posts:,} POSTs answered 500 meanwhile"
    )
    say(
        f"  then the gateway answered 200: every token delivered after {q.drained:.1f}s, "
        f"{q.left} files left in the queue\n  (mostly back-off: a notification that failed "
        "at age a waits about a, at least 1 s, before its next try)"
    )
    if q.missing:
        say(f"  ! {q.missing} tokens did not reach the gateway within {DRAIN_TIMEOUT:.0f}s")
    error_note(q.triggers, "deliveries")


@dataclass(frozen=True)
class Figures:
    latency: list[Latencies]
    imap: list[ImapArm]
    dict_rows: list[DictRow]
    burst: Burst
    memory: tuple[int, int, int]  # fresh, idle, peak during figures 1-4
    queue: Queue


def print_goals(f: Figures) -> None:
    ratio = f.imap[0].rate / f.imap[1].rate
    best = max((r for r in f.dict_rows if r.fresh and r.kinds == SET_LOOKUP), key=lambda r: r.ops)
    lmtp = f.latency[0]
    p99 = percentile_ms(lmtp.to_gateway, 0.99)
    _, idle, peak = f.memory
    rss = max(idle, peak, f.queue.rss_queued, f.queue.peak_held)
    lost = sum(r.errors for r in f.latency) + f.burst.missing + f.queue.missing + f.queue.left
    report.goals(
        [
            (f"IMAP op ratio metadata/file >= {GOAL_RATIO}", f"{ratio:.3f}", ratio >= GOAL_RATIO),
            (
                f"dict set+lookup ops (as Dovecot) >= {GOAL_DICT_OPS:,}/s",
                f"{best.ops:,.0f}/s ({best.conns} conns)",
                best.ops >= GOAL_DICT_OPS,
            ),
            (
                f"LMTP delivery to gateway p99 < {GOAL_P99_MS:g} ms",
                f"{ms(p99)} ms (first {ms(lmtp.first * 1000)})",
                p99 < GOAL_P99_MS and not lmtp.errors,
            ),
            (
                f"RSS idle, peak, {f.queue.queued:,} queued < {GOAL_RSS_MIB} MiB",
                f"{mib(idle)}, {mib(peak)}, {mib(max(f.queue.rss_queued, f.queue.peak_held))} MiB",
                rss < GOAL_RSS_MIB * 2**20,
            ),
            ("every notification reached the gateway", f"{lost} lost or late", lost == 0),
        ]
    )


# -- main ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def probed(other: OtherLoad) -> Iterator[None]:
    """Other processes' CPU over a part that runs no client window (which would probe it)."""
    other.begin()
    start = time.monotonic()
    yield
    other.end(time.monotonic() - start)


def run_figures(setup: env.Setup, accounts: Accounts, body: bytes, c: Counts) -> Figures:
    """Every figure on one relay with an HTTPS gateway, printed as it is measured; before it,
    the plain-HTTP arm of figure 1 on a relay of its own."""
    noting, others = report.noting_other_load, setup.other
    with probed(others):  # its share shows in the summary at the end
        plain = plain_http_latency(setup, accounts, body, c)
    with running_gateway(setup.root, env.free_port(), tls=True) as (gateway, pid):
        others.roots.add(pid)
        with running_relay(setup, gateway_ini(gateway), gateway.environ) as relay:
            metadata = program_pids(relay.layout)["metadata"]
            with RssSampler({"metadata": metadata}) as sampler:
                time.sleep(c.settle)
                fresh = sampler.sample()["metadata"][0]
                with noting(others), probed(others):
                    latency = figure_latency(relay, gateway, accounts, body, c, smtp=True)
                    print_latency(latency + plain, c)
                time.sleep(c.settle)
                idle = sampler.sample()["metadata"][0]
                with noting(others):
                    imap = figure_imap(setup, relay, accounts, c)
                    print_imap(imap, c)
                with noting(others):
                    dict_rows = figure_dict(setup, relay, metadata, accounts.dict_users, c)
                    print_dict(dict_rows, c)
                with noting(others), probed(others):
                    burst = figure_notify(relay, gateway, accounts.push[: c.notify_users])
                    print_burst(burst)
                peak = sampler.peak("metadata")
                with noting(others), probed(others):
                    queue = figure_queue(relay, gateway, sampler, accounts, c)
                    print_memory((fresh, idle, peak), queue, c)
    return Figures(latency, imap, dict_rows, burst, (fresh, idle, peak), queue)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts, shorter rounds")
    args = parser.parse_args(argv)
    c = QUICK if args.quick else FULL
    title = "chatmail-metadata benchmark"
    with bench_setup("metadata_bench", title, args.quick, accounts_needed(c), ("gpg",)) as setup:
        with gpg_in(setup.root / "gnupg") as gpg:
            body = encrypted_body(gpg, MESSAGE_SIZE)
        figures = run_figures(setup, split_accounts(setup, c), body, c)
        print_goals(figures)
        report.other_load_summary(setup.other)
    return 0


if __name__ == "__main__":
    sys.exit(main())
