"""The project's exception hierarchy: one base, specific subclasses."""

from __future__ import annotations


class SwitchboardError(Exception):
    """Base of every error Switchboard raises on purpose."""


class ConfigError(SwitchboardError):
    """The configuration is invalid; the message says which setting and why."""


class RedisUnavailable(SwitchboardError):
    """No Redis server could be reached or started."""


class NotFound(SwitchboardError):
    """A conversation, group or entry does not exist."""


class Conflict(SwitchboardError):
    """The operation does not fit the current state (e.g. replying to a closed conversation)."""
