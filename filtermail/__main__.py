"""filtermail CONFIG outgoing|incoming: placeholder until the server lands (issue 12)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print("filtermail: not built yet", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
