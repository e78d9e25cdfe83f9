"""doveauth: Dovecot passdb/userdb (create-on-login) and lastlogin, over the dict protocol."""
