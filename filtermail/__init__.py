"""filtermail: Postfix's before-queue filter that passes only OpenPGP-encrypted mail.

``python -m filtermail CONFIG outgoing|incoming`` (``filtermail.server``); the decisions are
pure functions in ``filtermail.policy``, on top of ``filtermail.mime`` and ``filtermail.openpgp``.
"""
