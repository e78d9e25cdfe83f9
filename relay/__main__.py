"""``python -m relay``: the same as the chatmail-relay command."""

from .cli import main

raise SystemExit(main())
