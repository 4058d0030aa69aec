"""Errors the user can fix: train.py prints their message as one line and exits non-zero."""


class VAEUserError(Exception):
    """A problem with the config or the data that the user can fix; the message says how."""


class DataError(VAEUserError):
    """Data missing, corrupt, or of the wrong kind."""
