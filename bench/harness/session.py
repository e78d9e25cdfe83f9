"""What every benchmark does first: check the machine, stop cleanly on SIGTERM, make a temporary
root with pre-created accounts, and print the header."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from . import env, report

# what the relay runs (running_relay); doveauth_bench also starts Dovecot alone
TOOLS = ("dovecot", "doveadm", "supervisord", "supervisorctl", "postfix")
DAEMONS = ("doveauth", "lastlogin", "filtermail", "chatmail-metadata")


@contextlib.contextmanager
def bench_setup(
    name: str, title: str, quick: bool, accounts: int, tools: Sequence[str] = ()
) -> Iterator[env.Setup]:
    """The prepared ``env.Setup`` of benchmark ``name``; everything is removed afterwards.

    ``tools`` are needed besides the relay's (e.g. ``gpg``).
    """
    env.check_prerequisites(name, (*TOOLS, *tools), DAEMONS)
    env.exit_on_sigterm()
    with env.temp_root(name.replace("_", "-") + "-") as root:
        setup = env.prepare(root, accounts)
        report.header(title, quick)
        report.say(f"  {len(setup.accounts)} accounts pre-created in {setup.mailboxes}")
        yield setup
