"""What to read back after a session that could not be resumed, and from where."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from adapters.discord_bot.convert import Place


def targets(
    support: Mapping[int, int],
    threads: Iterable[tuple[int, int, int]],
    since: int,
    last: Mapping[int, int],
    places: Mapping[int, Place],
    horizon: int,
) -> list[tuple[Place, int]]:
    """The channels to backfill, each with the message id to read after.

    - every support channel (``support``: channel id -> guild id), from its cursor, else ``since``;
    - the active threads under them (``threads``: (thread id, parent id, guild id) from the guild
      cache), likewise — a thread opened during the outage has no cursor and is read from ``since``;
    - the DMs and threads with a cursor newer than ``horizon``: discord.py has no list of a bot's
      DM channels, so the recorded ones are all there is, and each costs one request.
    """
    found: dict[int, tuple[Place, int]] = {}
    for channel_id, guild_id in support.items():
        found[channel_id] = (Place("channel", channel_id, guild_id), last.get(channel_id, since))
    for thread_id, parent_id, guild_id in threads:
        if parent_id in support:
            found[thread_id] = (Place("thread", parent_id, guild_id, thread_id), last.get(thread_id, since))
    for channel_id, place in places.items():
        position = last.get(channel_id)
        if channel_id in found or position is None or position < horizon:
            continue
        if place.kind == "dm" or (place.kind == "thread" and place.channel_id in support):
            found[channel_id] = (place, position)
    return list(found.values())
