"""What to read back after a session that could not be resumed, in which order, and how much.

Each history request costs one request against Discord's rate limits, and a 429 counts toward its
invalid-request limit (10,000 per 10 minutes, then the IP is banned for a while). A bot with
thousands of DM users must therefore not read every DM back after every reconnect: ``targets``
keeps what is worth reading, most recent first, and ``Budget`` caps the requests per pass and per
10 minutes; what a pass could not afford is read by later passes, its cursors held meanwhile.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping

from adapters.discord_bot.convert import Place

#: Discord's window for the invalid-request limit, used for the backfill's own budget too.
WINDOW_S = 600.0


def targets(
    support: Mapping[int, int],
    threads: Iterable[tuple[int, int, int]],
    since: int,
    last: Mapping[int, int],
    places: Mapping[int, Place],
    horizon: int,
    forums: Collection[int] = (),
) -> list[tuple[Place, int]]:
    """The channels to backfill, each with the message id to read after: the support channels
    first, then threads and DMs most recently active first.

    - every support channel (``support``: channel id -> guild id), from its cursor, else ``since``,
      except ``forums``: a forum channel has no messages of its own (reading it is refused), its
      posts are threads;
    - the active threads under them (``threads``: (thread id, parent id, guild id) from the guild
      cache), likewise — a thread opened during the outage has no cursor and is read from ``since``;
    - the DMs and threads (archived ones too) with a cursor newer than ``horizon``: discord.py has
      no list of a bot's DM channels, so the recorded ones are all there is.

    Recency is the newest of the cursor and the channel's own id (a thread opened during the
    outage is recent although it has no cursor).
    """
    channels = [(Place("channel", cid, gid), last.get(cid, since)) for cid, gid in support.items() if cid not in forums]
    others: dict[int, tuple[Place, int]] = {}
    for thread_id, parent_id, guild_id in threads:
        if parent_id in support:
            others[thread_id] = (Place("thread", parent_id, guild_id, thread_id), last.get(thread_id, since))
    for channel_id, place in places.items():
        position = last.get(channel_id)
        if channel_id in others or channel_id in support or position is None or position < horizon:
            continue
        if place.kind == "dm" or (place.kind == "thread" and place.channel_id in support):
            others[channel_id] = (place, position)
    ranked = sorted(others.items(), key=lambda item: max(item[0], item[1][1]), reverse=True)
    return channels + [target for _, target in ranked]


def worth_reading(found: list[tuple[Place, int]], states: Mapping[str, str]) -> list[tuple[Place, int]]:
    """The targets minus the threads and DMs whose conversation is closed (``states``: the status
    of each conversation key that has a conversation). Without a conversation a DM or thread is
    read: its messages may still be on their way through the inbox, or it was opened during the
    outage. A user of a closed conversation who writes exactly while the bot has no session is
    the cost of not reading every DM back (their next message is taken in as usual)."""
    return [(place, after) for place, after in found if states.get(str(place.target)) != "closed"]


class Budget:
    """History requests allowed: ``per_pass`` in one pass, ``per_window`` in any ``WINDOW_S``."""

    def __init__(self, per_pass: int, per_window: int, clock: Callable[[], float] = time.time) -> None:
        self.per_pass = per_pass
        self.per_window = per_window
        self._clock = clock
        self._left = per_pass
        self._spent: deque[float] = deque()
        self.requests = 0  # made in total, for health

    def new_pass(self) -> None:
        self._left = self.per_pass

    def _expire(self, now: float) -> None:
        while self._spent and self._spent[0] <= now - WINDOW_S:
            self._spent.popleft()

    def take(self) -> bool:
        """Spend one request; False (nothing spent) when the pass or the window has none left."""
        now = self._clock()
        self._expire(now)
        if self._left <= 0 or len(self._spent) >= self.per_window:
            return False
        self._left -= 1
        self._spent.append(now)
        self.requests += 1
        return True

    def window_free_in(self) -> float:
        """Seconds until the window has a request to spend again (0 when it has one now)."""
        now = self._clock()
        self._expire(now)
        if len(self._spent) < self.per_window:
            return 0.0
        return self._spent[0] + WINDOW_S - now
