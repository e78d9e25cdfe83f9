"""What every benchmark under bench/ shares; each daemon's benchmark is a short file on top.

- ``env``: prerequisites, a temporary root, free ports, chatmail.ini, pre-created accounts.
- ``procs``: starting and stopping daemons, readiness, process trees, RSS and CPU of them.
- ``probes``: what is measured over a window: CPU of others, all CPUs busy, a daemon's usage.
- ``clients``: load-generating client processes that all run over one measurement window.
- ``dictload``: a Dovecot dict-protocol client for those processes (closed loop or paced).
- ``imap``: IMAP LOGIN+LOGOUT sessions, in client processes or all at once.
- ``relays``: the relay as production starts it, and the passwd-file "limit" Dovecot.
- ``stats``: percentiles and timing of a function call.
- ``report``: tables, units, goals and warnings printed the same way by every benchmark.

The benchmarks run as scripts (``python bench/<daemon>_bench.py``), so ``bench/`` is on
``sys.path`` and this package imports as ``harness``, in client processes too.
"""
