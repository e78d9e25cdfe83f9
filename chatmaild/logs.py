"""Logging set-up shared by the daemons: one line per event on stderr.

The supervisor (supervisord or systemd) collects stderr; nothing here writes files or syslog.
"""

from __future__ import annotations

import logging
import sys


def setup_logging(name: str, level: int = logging.INFO) -> None:
    """Log ``<time> <name> <LEVEL> <message>`` lines to stderr, replacing any earlier set-up."""
    logging.basicConfig(
        format=f"%(asctime)s {name} %(levelname)s %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
        level=level,
        stream=sys.stderr,
        force=True,
    )
