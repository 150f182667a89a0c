"""Impostor defence in the servers the bot sits in, and the ``/verify`` slash command (docs/impostors.md).

Members are checked against the staff names by ``ChannelContext.impostors`` when they post in any
guild channel the bot can read, and — with ``members_intent`` on (the privileged Server Members
intent, switched on in the developer portal too) — when they join and when their nickname or
names change (``GUILD_MEMBER_UPDATE``; discord.py reports it for members it holds in its cache:
those who joined or changed once while it ran; anyone else is checked on their next message). A
flagged member gets a case in the review queue; an ``impostor`` verdict also gets one warning:
in the channel they posted in, or for a join or rename in ``alert_channel`` (the moderators').
Nothing is banned or muted: moderators decide.

``/verify user:`` is a guild slash command registered on every configured guild at each start
(instant, unlike global commands); the answer (by id: staff or not) is ephemeral, seen by the asker.
"""

from __future__ import annotations

import logging
from typing import Any

import discord

from router.channel import TRANSIENT_ERRORS, ChannelContext, ImpostorGuard

log = logging.getLogger("switchboard.discord")

CHANNEL = "discord"
VERIFY = {
    "name": "verify",
    "type": 1,
    "description": "Is this account a member of our staff? (Staff never DM first.)",
    "options": [{"name": "user", "type": 6, "description": "The account to check", "required": True}],
}


def names_of(user: discord.User | discord.Member) -> list[str]:
    """Every name a member shows: server nickname, display name, username."""
    nick = user.nick if isinstance(user, discord.Member) else None
    return [n for n in (nick, user.global_name, user.name) if n]


class ServerGuard:
    """One bot's screening of its servers and its ``/verify`` answers."""

    def __init__(self, ctx: ChannelContext, account: str, alert_channel: int | None) -> None:
        self._guard: ImpostorGuard = ctx.impostors
        self._account = account
        self._alert = alert_channel

    async def register(self, client: discord.Client, guilds: list[int]) -> None:
        """Put ``/verify`` on every configured guild (a failure is logged: screening goes on)."""
        if client.application_id is None:
            return
        for guild in guilds:
            try:
                await client.http.bulk_upsert_guild_commands(client.application_id, guild, [VERIFY])
            except discord.HTTPException as exc:
                log.warning("discord %s: cannot register /verify on guild %s: %s", self._account, guild, exc)

    async def screen(
        self, client: discord.Client, user: discord.User | discord.Member, guild: int, channel: int | None
    ) -> None:
        """Check a member of ``guild`` seen posting in ``channel``, or joining or renamed (None)."""
        if user.bot:
            return
        where = f"guild {guild} channel {channel}" if channel else f"guild {guild}"
        try:
            flag = await self._guard.check(CHANNEL, self._account, str(user.id), names_of(user), where)
        except TRANSIENT_ERRORS as exc:
            # Not remembered as checked: the member's next message or update tries again; the
            # message itself must still reach the inbox.
            log.warning("discord %s: impostor check of %s failed: %s", self._account, user.id, exc)
            return
        target = channel or self._alert
        if flag is not None and flag.warning is not None and target is not None:
            try:
                await client.get_partial_messageable(target).send(
                    flag.warning, allowed_mentions=discord.AllowedMentions.none()
                )
            except discord.HTTPException as exc:
                # The case is in the review queue whatever happens here; a warning is best effort.
                log.warning("discord %s: cannot post a warning in %s: %s", self._account, target, exc)

    async def interaction(self, interaction: discord.Interaction[Any]) -> None:
        """Answer ``/verify``; other interactions are not this bot's business."""
        data: dict[str, Any] = dict(interaction.data or {})
        if interaction.type != discord.InteractionType.application_command or data.get("name") != "verify":
            return
        target = next((o.get("value") for o in data.get("options", []) if o.get("name") == "user"), None)
        if target is None:
            text = "Name an account: /verify user:@someone"
        else:
            users = data.get("resolved", {}).get("users", {})
            label = f"@{users[str(target)]['username']}" if str(target) in users else f"<@{target}>"
            text = self._guard.verify_text(CHANNEL, str(target), label)
        try:
            await interaction.response.send_message(text, ephemeral=True)
        except discord.HTTPException as exc:
            log.warning("discord %s: cannot answer /verify: %s", self._account, exc)
