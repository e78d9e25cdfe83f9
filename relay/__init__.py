"""relay: the wiring of stock Dovecot (and later Postfix) around the chatmaild daemons.

``render`` turns chatmail.ini into Dovecot and supervisor configuration in any directory with
any ports; ``supervise`` brings such a rendered relay up and down; ``cli`` is chatmail-relay.
Tests, the README's first command and production all use this one renderer.
"""
