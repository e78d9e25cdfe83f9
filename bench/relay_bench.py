"""Benchmark the relay's memory: RSS of each daemon and of the whole relay, idle and after sign-ups.

Why: a chatmail relay runs on small machines; every daemon's resident memory counts, and
doveauth's must not grow with a burst of new accounts.

How (the shared parts are in ``harness``): the relay is brought up as production does it
(``relay.render`` + ``relay.supervise.up``: supervisord with Dovecot, Postfix, doveauth,
lastlogin and the outgoing and incoming filtermail) in a temporary directory, every port on
loopback and free, with 100 pre-created accounts.

1. Idle: after a few IMAP logins of existing accounts and a few encrypted messages sent
   between them (SMTP AUTH on submissions, through Postfix, filtermail and Dovecot's LMTP),
   and a pause for things to settle.
2. A burst of 1,000 sign-ups: IMAP LOGIN+LOGOUT of 1,000 new addresses through Dovecot, 16 at a
   time, each creating its account in doveauth (the whole path a new user takes). RSS is
   sampled every 50 ms meanwhile (the peak), and again after a pause (after the burst).

3. At rest (not with --quick): once Postfix's max_idle and Dovecot's idle_kill have ended the
   processes the traffic started (about two minutes), as a relay sits between messages. The
   whole relay's goal is on this figure.

Memory is summed over process trees found at the moment of sampling: supervisord itself;
Dovecot's master and all its children; Postfix's master and all its children; each daemon with
whatever processes or threads it has; the whole relay (supervisord and all its descendants).
RSS counts shared pages once per process; PSS splits them among the processes sharing them, so
PSS sums to what the processes use together.

Run as root with the project's venv::

    /usr/local/lib/chatmaild/venv-test/bin/python bench/relay_bench.py [--quick]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass

from harness import env, report
from harness.clients import LoadResult
from harness.imap import login_each
from harness.mail import encrypted_body, gpg_in
from harness.procs import RssSampler, names_by_tree, pss_by_tree
from harness.relays import SUPERVISORD, WHOLE, memory_roots, running_relay
from harness.report import error_note, mib, say, table
from harness.session import bench_setup
from harness.smtpload import SmtpJob, send_count

from filtermail.reinject import IDLE_TIMEOUT as REINJECT_IDLE

ACCOUNTS = 100
IDLE_LOGINS = 50  # existing accounts logged in to before the idle figures
IDLE_MESSAGES = 20  # encrypted messages sent through the relay before the idle figures
MESSAGE_SIZE = 4096
WARMUP_SENDERS = 4
SIGNUPS = 1000
SIGNUP_CONCURRENCY = 16

GOAL_DOVEAUTH_IDLE_MIB = 35
GOAL_DOVEAUTH_BURST_MIB = 40
GOAL_WHOLE_IDLE_MIB = 150

LABELS = {
    SUPERVISORD: "supervisord (itself)",
    "dovecot": "Dovecot (all its processes)",
    "postfix": "Postfix (master and all its children)",
    "filtermail-outgoing": "filtermail-outgoing (its tree)",
    "filtermail-incoming": "filtermail-incoming (its tree)",
    "doveauth": "doveauth (its process tree)",
    "lastlogin": "lastlogin (its process tree)",
    WHOLE: "whole relay (supervisord and all descendants)",
}


@dataclass(frozen=True)
class Snapshot:
    """(bytes, process count) of each group at one moment, and its processes by name."""

    rss: dict[str, tuple[int, int]]
    pss: dict[str, tuple[int, int]]
    names: dict[str, Counter]


@dataclass(frozen=True)
class Figures:
    fresh: Snapshot  # after up and a pause, before any login or message
    idle: Snapshot
    peak: dict[str, int]  # RSS bytes, largest during the burst
    after: Snapshot
    rest: Snapshot | None  # once Postfix and Dovecot ended their idle processes (not --quick)
    signups: LoadResult
    idle_logins: LoadResult
    idle_messages: LoadResult


def settled(sampler: RssSampler, seconds: float) -> Snapshot:
    """RSS and PSS of each group after ``seconds`` of quiet."""
    time.sleep(seconds)
    rss = sampler.sample()
    pss = pss_by_tree(sampler.roots, sampler.alone)
    return Snapshot(rss, pss, names_by_tree(sampler.roots, sampler.alone))


def rest_seconds(layout) -> float:
    """How long after the last connection Postfix and Dovecot keep idle processes: Postfix's
    max_idle (smtpd, cleanup, lmtp, trivial-rewrite...) after filtermail's idle reinjection
    connections ended, and Dovecot's idle_kill, plus a margin."""

    def output(*argv: str) -> str:
        return subprocess.run(argv, capture_output=True, text=True, check=True).stdout

    postfix = output("postconf", "-c", str(layout.postfix_dir), "-h", "max_idle")
    dovecot = output("doveconf", "-c", str(layout.dovecot_conf), "-h", "default_idle_kill")
    # a reinjection smtpd waits for filtermail to QUIT its kept connection first
    return max(seconds(postfix) + REINJECT_IDLE, seconds(dovecot)) + 10


def seconds(value: str) -> float:
    """A Postfix or Dovecot time setting ("100s", "1 mins") in seconds."""
    number, unit = re.fullmatch(r"\s*(\d+)\s*([a-z]*)\s*", value).groups()
    return int(number) * {"": 1, "s": 1, "secs": 1, "m": 60, "min": 60, "mins": 60}[unit]


def measure(setup: env.Setup, settle: float, body: bytes, rest: bool) -> Figures:
    with running_relay(setup) as relay:
        port = relay.ports.imap
        roots, alone = memory_roots(relay.layout)
        with RssSampler(roots, alone) as sampler:
            fresh = settled(sampler, settle)
            idle_logins = login_each(port, setup.credentials()[:IDLE_LOGINS], 4)
            idle_messages = send_count(
                warmup_job(setup, relay.ports.submissions, body), IDLE_MESSAGES
            )
            idle = settled(sampler, settle)
            sampler.reset_peaks()
            new = env.new_credentials("s", SIGNUPS)
            signups = login_each(port, new, SIGNUP_CONCURRENCY)
            peak = {name: sampler.peak(name) for name in roots}
            after = settled(sampler, settle)
            wait = rest_seconds(relay.layout) - settle
            at_rest = settled(sampler, wait) if rest else None
    return Figures(fresh, idle, peak, after, at_rest, signups, idle_logins, idle_messages)


def warmup_job(setup: env.Setup, port: int, body: bytes) -> SmtpJob:
    """Chat clients (SMTP AUTH on submissions) sending to the other accounts in turn.

    Enough senders that none goes over chatmail.ini's default burst of 10 messages.
    """
    creds = setup.credentials()
    senders, rcpts = creds[:WARMUP_SENDERS], tuple(a for a, _ in creds[WARMUP_SENDERS:])
    return SmtpJob(port, WARMUP_SENDERS, senders, rcpts, body, tls=True)


def print_figures(f: Figures, settle: float) -> None:
    say()
    say(
        f"Relay memory, idle ({IDLE_LOGINS} logins and {IDLE_MESSAGES} messages, then "
        f"{settle:g}s quiet) and around {SIGNUPS:,} sign-ups"
    )
    say(
        f"  sign-ups: IMAP LOGIN+LOGOUT of {SIGNUPS:,} new addresses through Dovecot, "
        f"{SIGNUP_CONCURRENCY} at a time: {f.signups.ok:,} ok in {f.signups.seconds:.1f}s "
        f"({f.signups.rate:,.0f}/s)"
    )
    say(
        f"  idle after: {f.idle_messages.ok} of {IDLE_MESSAGES} encrypted messages of "
        f"{MESSAGE_SIZE // 1024} KiB sent between accounts (submissions, SMTP AUTH) and "
        f"{f.idle_logins.ok} IMAP logins"
    )
    names = [n for n in LABELS if n in f.idle.rss and n != WHOLE]
    names += sorted(n for n in f.idle.rss if n not in LABELS)  # programs added since
    names.append(WHOLE)
    rows = []
    for name in names:
        rows.append(
            [
                LABELS.get(name, name),
                f"{f.idle.rss[name][1]}/{f.after.rss[name][1]}",
                mib(f.idle.rss[name][0]),
                mib(f.idle.pss[name][0]),
                mib(f.peak[name]),
                mib(f.after.rss[name][0]),
                mib(f.after.pss[name][0]),
            ]
        )
    headers = ["MiB", "procs idle/after", "idle RSS", "idle PSS"]
    table([*headers, "burst peak RSS", "after RSS", "after PSS"], rows, left=1)
    say(
        "  RSS counts pages shared between processes in each of them; PSS splits them, so the\n"
        f"  PSS of the whole relay is what it uses together. After = {settle:g}s after the burst."
    )
    rss, procs = f.fresh.rss[WHOLE]
    say(
        f"  fresh (after up and {settle:g}s quiet, before any login or message): whole relay "
        f"RSS {mib(rss)} MiB, PSS {mib(f.fresh.pss[WHOLE][0])} MiB, {procs} processes"
    )
    if f.rest is not None:
        rss, procs = f.rest.rss[WHOLE]
        say(
            "  at rest (once Postfix's max_idle and Dovecot's idle_kill ended the processes the "
            f"traffic\n  started): whole relay RSS {mib(rss)} MiB, PSS "
            f"{mib(f.rest.pss[WHOLE][0])} MiB, {procs} processes"
        )
    snapshots = (("idle", f.idle), ("after", f.after))
    if f.rest is not None:
        snapshots += (("at rest", f.rest),)
    for program in ("dovecot", "postfix"):
        for when, snapshot in snapshots:
            names = snapshot.names.get(program, Counter())
            listed = ", ".join(f"{name} {n}" for name, n in sorted(names.items()))
            say(f"  {LABELS[program].split()[0]}'s processes {when}: {listed}")
    error_note(f.idle_logins, "idle logins")
    error_note(f.idle_messages, "messages")
    error_note(f.signups, "sign-ups")


def print_goals(f: Figures) -> None:
    doveauth_idle = f.idle.rss.get("doveauth", (0, 0))[0]
    doveauth_after = f.after.rss.get("doveauth", (0, 0))[0]
    rest = f.rest or f.idle  # --quick: idle, a few seconds after the traffic
    whole_rss, whole_pss = rest.rss[WHOLE][0], rest.pss[WHOLE][0]
    report.goals(
        [
            (
                f"doveauth RSS idle <= {GOAL_DOVEAUTH_IDLE_MIB} MiB",
                f"{mib(doveauth_idle)} MiB",
                doveauth_idle <= GOAL_DOVEAUTH_IDLE_MIB * 2**20,
            ),
            (
                f"doveauth RSS after {SIGNUPS:,} sign-ups <= {GOAL_DOVEAUTH_BURST_MIB} MiB",
                f"{mib(doveauth_after)} MiB (peak {mib(f.peak.get('doveauth', 0))})",
                doveauth_after <= GOAL_DOVEAUTH_BURST_MIB * 2**20 and not f.signups.errors,
            ),
            (  # PSS: summed RSS counts each shared library once per process (Postfix has ~25)
                f"whole relay {'at rest' if f.rest else 'idle'} < {GOAL_WHOLE_IDLE_MIB} MiB (PSS)",
                f"{mib(whole_pss)} MiB PSS ({mib(whole_rss)} MiB RSS summed)",
                whole_pss < GOAL_WHOLE_IDLE_MIB * 2**20,
            ),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter pauses to settle")
    args = parser.parse_args(argv)
    settle = 2.0 if args.quick else 10.0
    title = "relay memory benchmark"
    with bench_setup("relay_bench", title, args.quick, ACCOUNTS, ("gpg",)) as setup:
        with gpg_in(setup.root / "gnupg") as gpg:
            body = encrypted_body(gpg, MESSAGE_SIZE)
        figures = measure(setup, settle, body, rest=not args.quick)
        print_figures(figures, settle)
        print_goals(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
