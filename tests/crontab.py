"""Reading a cron.d file as Debian's cron reads it, for the tests of the rendered expiry job."""

from __future__ import annotations

import re
from pathlib import Path


def cron_entries(path: Path) -> tuple[dict[str, str], list[list[str]]]:
    """A cron.d file's variables (values as written) and each job as 5 times, user, command."""
    variables, jobs = {}, []
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if re.match(r"[A-Za-z_]+=", line):
            name, _, value = line.partition("=")
            variables[name] = value
        else:
            jobs.append(line.split(None, 6))
    return variables, jobs
