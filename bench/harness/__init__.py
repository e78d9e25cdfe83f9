"""What every benchmark under bench/ shares; each daemon's benchmark is a short file on top.

- ``env``: prerequisites, a temporary root, free ports, chatmail.ini, pre-created accounts.
- ``procs``: starting and stopping daemons, readiness, process trees, RSS and CPU of them.
- ``probes``: what is measured over a window: CPU of others, all CPUs busy, a daemon's usage.
- ``clients``: load-generating client processes that all run over one measurement window.
- ``dictload``: a Dovecot dict-protocol client for those processes (closed loop or paced).
- ``imap``: IMAP LOGIN+LOGOUT sessions, in client processes or all at once.
- ``relays``: the relay as production starts it (every port free), and what it delivered.
- ``limits``: the same servers without the daemon measured: the passwd-file Dovecot, and
  Postfix without its before-queue filters.
- ``mail``: GnuPG-encrypted RFC 3156 messages of a chosen size, as chat clients send them.
- ``smtpload``: SMTP clients for client processes: chat clients (TLS, AUTH, one connection
  for many messages) or Postfix's filter proxy (one message per connection).
- ``smtpsink``: a fast SMTP sink process that plays Postfix's reinjection listener.
- ``stats``: percentiles and timing of a function call.
- ``report``: tables, units, goals and warnings printed the same way by every benchmark.

The benchmarks run as scripts (``python bench/<daemon>_bench.py``), so ``bench/`` is on
``sys.path`` and this package imports as ``harness``, in client processes too.
"""
