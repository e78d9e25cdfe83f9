"""Expiry: the relay forgets old mail and unused accounts, and makes room in full mailboxes.

``chatmail-expire`` (daily), ``chatmail-quota-expire`` (Dovecot's quota warning) and
``chatmail-fsreport`` (a report for admins). Decisions are in ``rules``, the Maildir walk in
``maildir``, the removal in ``sweep``, the report's counting in ``tally``.
"""
