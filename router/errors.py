"""The project's exception hierarchy: one base, specific subclasses."""

from __future__ import annotations


class SwitchboardError(Exception):
    """Base of every error Switchboard raises on purpose."""


class ConfigError(SwitchboardError):
    """The configuration is invalid; the message says which setting and why."""


class RedisUnavailable(SwitchboardError):
    """No Redis server could be reached or started."""


class BadRequest(SwitchboardError, ValueError):
    """The caller's input is wrong (a name, a password, a value): 400 in the console and API. A
    ValueError too, for callers that catch bad input as one (the CLI); a ValueError that is not a
    BadRequest is a bug, and the console answers it 500."""


class NotFound(SwitchboardError):
    """A conversation, group or entry does not exist."""


class Conflict(SwitchboardError):
    """The operation does not fit the current state (e.g. replying to a closed conversation)."""


class AppendRefused(SwitchboardError):
    """An inbox append was refused or not confirmed: the adapter must not confirm the message to
    its platform, and tries again later (the append is idempotent)."""


class InboxFull(AppendRefused):
    """The inbox is at ``inbox.maxlen`` and its oldest entry is not routed yet (workers behind or
    stopped): nothing unrouted is ever trimmed to make room."""


class RedisFull(AppendRefused):
    """Redis is out of memory (``maxmemory`` with the ``noeviction`` policy) and refuses writes."""


class NotDurable(AppendRefused):
    """The append was written but not confirmed on disk or on ``inbox.replicas`` replicas in time."""


class LeaseLost(SwitchboardError):
    """A script refused a worker's write: the shard's lease is no longer held under the fence the
    worker passed (it expired, or a later holder took it; router/shardlease.py)."""
