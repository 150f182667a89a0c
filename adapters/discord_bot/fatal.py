"""Why the gateway or the login refused the bot for good, and what the operator must do about it.

discord.py reconnects by itself after every close it can recover from; the ones below end its
``connect()`` with an exception: retrying would only be refused again.
"""

from __future__ import annotations

import discord

PORTAL = "https://discord.com/developers/applications > your application > Bot"

#: Gateway close codes that end the session for good, with what to do.
CLOSE_CODES = {
    4004: f"authentication failed (the token was reset or revoked): put the new token ({PORTAL} > Reset Token) "
    "in SWITCHBOARD_DISCORD__TOKEN or the token_file, then restart Switchboard",
    4010: "invalid shard: Switchboard runs one unsharded connection per bot; check that no sharding is forced",
    4011: "sharding required (the bot is in too many servers for one connection): not supported by this adapter",
    4012: "invalid gateway API version: upgrade discord.py (pip install -U discord.py) and restart",
    4013: "invalid intents: a bug in this version of Switchboard's adapter (adapters.discord_bot.intents); report it",
    4014: f"the Message Content intent is not enabled for this bot (or was revoked): {PORTAL} > Privileged Gateway "
    "Intents > Message Content, save, then restart Switchboard",
}


def reason_of(exc: BaseException) -> str | None:
    """The operator's explanation of an exception from ``login``/``connect``; None when it is not fatal."""
    if isinstance(exc, discord.LoginFailure):
        return f"Discord refused the bot token (401 Unauthorized): {CLOSE_CODES[4004].split(': ', 1)[1]}"
    if isinstance(exc, discord.PrivilegedIntentsRequired):
        return f"the gateway closed the session (4014): {CLOSE_CODES[4014]}"
    if isinstance(exc, discord.ConnectionClosed):
        what = CLOSE_CODES.get(exc.code or 0, exc.reason or "no reason given")
        return f"the gateway closed the session ({exc.code}): {what}"
    return None
