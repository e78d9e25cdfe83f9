"""The one error ``chatmail-relay`` reports to the operator instead of a traceback."""


class RelayError(RuntimeError):
    """The relay could not be brought up or down; the message says what to look at."""
