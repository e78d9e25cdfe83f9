"""chatmaild: the shared core of the chatmail relay daemons.

chatmail.ini (``config``), Dovecot's dict protocol (``dictproto``, ``dictserver``), the mailbox
store (``mailbox``) and logging set-up (``logs``, ``daemon``). Daemons import this package; it
imports no daemon.
"""
