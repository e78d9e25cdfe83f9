"""chatmail-metadata: Dovecot's IMAP METADATA dictionary and the push notifier.

``metadata.notifier`` tells the push gateway about new mail, from a queue on disk
(``metadata.pushqueue``) that survives restarts.
"""
