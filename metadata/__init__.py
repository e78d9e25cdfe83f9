"""chatmail-metadata: Dovecot's IMAP METADATA dictionary and the push notifier."""
