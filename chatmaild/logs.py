"""Logging set-up shared by the daemons: one line per event on stderr.

The supervisor (supervisord or systemd) collects stderr; nothing here writes files or syslog.
"""

from __future__ import annotations

import logging
import sys


def setup_logging(name: str, level: int = logging.INFO) -> None:
    """Log ``<time> <name> <LEVEL> <message>`` lines to stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s {name} %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
