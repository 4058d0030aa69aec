"""Errors the user can fix: train.py prints their message as one line and exits non-zero."""

from __future__ import annotations

from typing import Any


class VAEUserError(Exception):
    """A problem with the config or the data that the user can fix; the message says how."""


class DataError(VAEUserError):
    """Data missing, corrupt, or of the wrong kind."""


class ConfigError(VAEUserError):
    """A bad argument of one part: ``key=value rule.``

    A part names its own argument (``hidden_dims``); whoever builds it from the config
    adds where the part sits (:meth:`at`), so the user reads the full config key
    (``model.encoder.hidden_dims=64 must be ...``).
    """

    def __init__(self, key: str, value: Any, rule: str):
        self.key, self.value, self.rule = key, value, rule
        super().__init__(f"{key}={value!r} {rule}.")

    def at(self, prefix: str) -> "ConfigError":
        """The same error with the part's place in the config before the key."""
        return ConfigError(f"{prefix}.{self.key}" if prefix else self.key, self.value, self.rule)
