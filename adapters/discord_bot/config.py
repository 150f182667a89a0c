"""The ``[discord]`` configuration section, validated at the boundary.

The token never comes from the TOML file: ``SWITCHBOARD_DISCORD__TOKEN`` in the environment, or a
``token_file`` (e.g. a Docker/Kubernetes secret) holding it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from router.channel import ConfigError, config_error, read_secret


def _snowflake(value: Any) -> int:
    text = str(value).strip()
    if not text.isdigit():
        raise ValueError(f"{value!r} is not a Discord id (a snowflake: digits only)")
    return int(text)


def _id_list(value: Any) -> list[int]:
    # Lists arrive as TOML arrays, or as "1,2,3" strings from SWITCHBOARD_DISCORD__GUILDS__<id>.
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise ValueError("expected a list of channel ids")
    return [_snowflake(item) for item in items if str(item).strip()]


class DiscordConfig(BaseModel):
    """One Discord bot. Unknown keys are errors, so a typo does not silently disable a feature."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    #: The account name in Switchboard (conversations are keyed by channel + account).
    name: str = Field("default", min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    token: SecretStr | None = None
    token_file: Path | None = None
    #: guild id -> the support channel ids in it (messages there and in their threads are taken in).
    guilds: dict[int, list[int]] = {}
    #: Open a private thread per user for messages posted directly in a support channel (the public
    #: message is then deleted: the bot needs Manage Messages there).
    private_threads: bool = False
    #: A channel for moderators: told when a message holding a secret stays public (see docs/discord.md).
    alert_channel: int | None = None
    #: The privileged Server Members intent (switch it on in the developer portal too, or the gateway
    #: closes with 4014): members are then checked for lookalike staff names when they join and when
    #: they change names, not only when they post (docs/impostors.md).
    members_intent: bool = False
    #: Register the ``/verify user:`` slash command on every configured guild at start.
    verify_command: bool = True
    #: Other bots' messages are ignored by default: two bots answering each other would loop.
    ignore_bots: bool = True
    #: How long ``start()`` waits for the first READY before carrying on (the client keeps trying).
    ready_timeout_s: float = Field(30.0, gt=0)
    #: discord.py waits this long after the last GUILD_CREATE before it reports ready.
    guild_ready_timeout_s: float = Field(2.0, ge=0)
    #: discord.py's pause before re-IDENTIFYing after a session was lost (Discord: 1 per 5 s).
    identify_delay_s: float = Field(5.0, ge=0)
    #: After a session that could not be resumed, DM channels active within this window are backfilled.
    backfill_dm_window_s: int = Field(14 * 86400, ge=0)
    #: At most this many messages are backfilled per channel, thread or DM after one disconnect.
    backfill_limit: int = Field(1000, ge=1)
    #: History requests one backfill pass (a new session, or a later pass continuing it) may make.
    backfill_requests_per_pass: int = Field(100, ge=1)
    #: History requests all passes together may make in any 10 minutes (see docs/discord.md).
    backfill_requests_per_10min: int = Field(600, ge=1)
    #: The first wait before a pass that left channels behind (a failure, or no budget left) is
    #: continued; it doubles with each such pass, up to 300 s (and waits for the window's room).
    backfill_retry_s: float = Field(15.0, gt=0, le=300)
    #: discord.py waits out a 429 up to this long inside the request (30 s is its minimum); a longer
    #: wait fails the send at once and the outbox retries it after ``retry_after``.
    max_ratelimit_wait_s: float = Field(30.0, ge=30)
    #: A fatal gateway close after start-up (token reset, intent revoked) stops the whole process;
    #: ``false`` leaves the others running with this adapter dead (``switchboard check`` fails).
    stop_on_fatal: bool = True
    #: On shutdown, replies still being sent (or waiting to retry) get this long before they are
    #: cancelled; they stay in the outbox and are sent after the restart.
    close_grace_s: float = Field(10.0, ge=0)
    #: Redis outage tolerance for one inbound message before it is left to the next backfill.
    append_retry_s: float = Field(30.0, ge=0)

    @field_validator("alert_channel", mode="before")
    @classmethod
    def _alert_channel(cls, value: Any) -> int | None:
        return None if value in (None, "") else _snowflake(value)

    @field_validator("guilds", mode="before")
    @classmethod
    def _guilds(cls, value: Any) -> dict[int, list[int]]:
        if not isinstance(value, Mapping):
            raise ValueError("expected a table: guild id = [support channel ids]")
        return {_snowflake(guild): _id_list(channels) for guild, channels in value.items()}

    @property
    def support_channels(self) -> dict[int, int]:
        """support channel id -> its guild id."""
        return {channel: guild for guild, channels in self.guilds.items() for channel in channels}

    def read_token(self) -> str:
        """The bot token from the environment or the token file; ConfigError when neither."""
        token = read_secret(self.token, self.token_file, f"[discord] {self.name}: bot token").strip()
        # A token pasted as "Bot xxx" would be sent as "Bot Bot xxx".
        token = token.removeprefix("Bot ")
        if any(ch.isspace() for ch in token):
            raise ConfigError(f"[discord] {self.name}: the bot token contains whitespace; check the secret")
        return token


def parse_config(section: Mapping[str, Any]) -> DiscordConfig:
    """Validate the raw ``[discord]`` table; ConfigError names every bad setting."""
    try:
        return DiscordConfig.model_validate(dict(section))
    except ValidationError as exc:
        raise config_error(exc, "[discord] configuration", loc_prefix="discord.") from None
