"""filtermail: Postfix's before-queue filter that passes only OpenPGP-encrypted mail.

Built step by step (issue 12): so far the pure OpenPGP check, ``filtermail.openpgp``.
"""
