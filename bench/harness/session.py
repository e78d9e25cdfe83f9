"""What every benchmark does first: check the machine, stop cleanly on SIGTERM, make a temporary
root with pre-created accounts, and print the header."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from . import env, report

TOOLS = ("dovecot", "doveadm", "supervisord", "supervisorctl")
DAEMONS = ("doveauth", "lastlogin")


@contextlib.contextmanager
def bench_setup(name: str, title: str, quick: bool, accounts: int) -> Iterator[env.Setup]:
    """The prepared ``env.Setup`` of benchmark ``name``; everything is removed afterwards."""
    env.check_prerequisites(name, TOOLS, DAEMONS)
    env.exit_on_sigterm()
    with env.temp_root(name.replace("_", "-") + "-") as root:
        setup = env.prepare(root, accounts)
        report.header(title, quick)
        report.say(f"  {len(setup.accounts)} accounts pre-created in {setup.mailboxes}")
        yield setup
