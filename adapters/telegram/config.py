"""The ``[telegram]`` configuration section: one or more bots, validated into ``BotSettings``.

Layout (TOML; every key can also come from ``SWITCHBOARD_TELEGRAM__…`` environment variables)::

    [telegram]
    api_base = "https://api.telegram.org"     # or a self-hosted Bot API server
    chat_interval_s = 1.0                     # keys at this level are defaults for every bot

    [telegram.bots.supportbot]                # the account name: conversation keys live under it
    token_file = "/run/secrets/supportbot"    # or SWITCHBOARD_TELEGRAM__BOTS__SUPPORTBOT__TOKEN
    allowed_chats = [-1001234567890]          # groups the bot answers in (private chats always)

With no ``bots`` table the section itself describes one bot, named ``name`` (default ``default``),
so ``SWITCHBOARD_TELEGRAM__TOKEN=123:abc`` alone is a complete configuration.

Bot names are lower-cased: the environment delivers ``…__BOTS__SupportBot__TOKEN`` as
``supportbot``, and the TOML table must merge with it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from router.channel import ConfigError, config_error, read_secret

PRODUCTION_API = "https://api.telegram.org"
_NAME = re.compile(r"^[a-z0-9_]{1,64}$")
# Telegram's rule for setWebhook's secret_token.
_SECRET = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
_TOKEN = re.compile(r"^\d+:[A-Za-z0-9_-]+$")


class WebhookConfig(BaseModel):
    """Webhook mode: Telegram POSTs updates to ``url``; Switchboard listens on host:port/path.

    Telegram only calls HTTPS URLs on ports 443, 80, 88 or 8443: put a TLS-terminating reverse
    proxy in front of ``host:port`` (plain HTTP, loopback by default).
    """

    model_config = ConfigDict(extra="forbid")

    url: str
    host: str = "127.0.0.1"
    port: int = Field(8081, ge=1, le=65535)
    # The local path; defaults to the path of ``url`` (a proxy may rewrite it).
    path: str = ""
    # Fixed secret (env) or file; without either a random one is set with setWebhook at each start,
    # which is right for one process per bot and wrong behind a load balancer (see docs/telegram.md).
    secret_token: SecretStr | None = None
    secret_token_file: Path | None = None
    max_connections: int = Field(40, ge=1, le=100)

    @field_validator("url")
    @classmethod
    def _absolute(cls, v: str) -> str:
        parsed = urlparse(v)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError("must be an absolute http(s) URL, e.g. https://support.example.com/telegram")
        return v

    @property
    def local_path(self) -> str:
        return self.path or urlparse(self.url).path or "/"


class BotConfig(BaseModel):
    """One bot, as written in the configuration (secrets not yet read)."""

    model_config = ConfigDict(extra="forbid")

    token: SecretStr | None = None
    token_file: Path | None = None
    api_base: str = PRODUCTION_API
    mode: Literal["polling", "webhook"] = "polling"
    webhook: WebhookConfig | None = None
    # Group and supergroup ids (negative numbers) the bot takes messages from; private chats are
    # governed by ``private_chats`` alone.
    allowed_chats: list[int] = []
    private_chats: bool = True
    # Quote the user's last message in replies: in groups (where several people talk), always, never.
    quote: Literal["groups", "always", "never"] = "groups"
    # Long-poll hold time; 0 (short polling) would spin, so at least 1.
    poll_timeout_s: int = Field(25, ge=1, le=50)
    request_timeout_s: int = Field(30, ge=1, le=300)
    # Telegram's published limits: ~1 message/s per chat, 20/min per group, ~30/s overall.
    chat_interval_s: float = Field(1.0, ge=0)
    group_interval_s: float = Field(3.0, ge=0)
    global_per_s: float = Field(30.0, gt=0)
    # Attachments are fetched only on request, up to this size (the Bot API's own getFile cap is 20 MB).
    max_file_bytes: int = Field(20 * 1024 * 1024, ge=1)

    @field_validator("allowed_chats", mode="before")
    @classmethod
    def _chat_list(cls, v: object) -> object:
        # From the environment the section is untyped, so a list arrives as text:
        # SWITCHBOARD_TELEGRAM__ALLOWED_CHATS='[-1001, -1002]' or '-1001,-1002'.
        if isinstance(v, str):
            text = v.strip().removeprefix("[").removesuffix("]")
            return [part for part in re.split(r"[\s,]+", text) if part]
        return v

    @field_validator("api_base")
    @classmethod
    def _base(cls, v: str) -> str:
        parsed = urlparse(v)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError("must be an absolute http(s) URL such as https://api.telegram.org")
        return v.rstrip("/")


_BOT_KEYS = frozenset(BotConfig.model_fields)


class TelegramSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    name: str = "default"
    bots: dict[str, dict[str, Any]] = {}


@dataclass(frozen=True)
class BotSettings:
    """A bot ready to run: its account name, validated options, the token read from its source."""

    name: str
    config: BotConfig
    token: str
    webhook_secret: str | None


def parse_section(section: Mapping[str, Any]) -> list[BotSettings]:
    """Validate the raw ``[telegram]`` table; raise ConfigError naming each bad setting."""
    raw = dict(section)
    defaults = {k: raw.pop(k) for k in list(raw) if k in _BOT_KEYS}
    try:
        top = TelegramSection.model_validate(raw)
    except ValidationError as exc:
        raise config_error(exc, "[telegram] configuration") from None
    if not top.enabled:
        return []
    bots: dict[str, dict[str, Any]] = {}
    if top.bots:
        # The environment lower-cases names; merge case-insensitively so TOML and env meet.
        for name, options in top.bots.items():
            if not isinstance(options, Mapping):
                raise ConfigError(f"[telegram.bots.{name}]: expected a table of settings")
            bots.setdefault(name.lower(), {}).update(options)
    else:
        if "token" not in defaults and "token_file" not in defaults:
            raise ConfigError(
                "[telegram] no bot configured: set SWITCHBOARD_TELEGRAM__TOKEN (or token_file), "
                "or add [telegram.bots.NAME] tables"
            )
        bots[top.name.lower()] = {}
    out: list[BotSettings] = []
    tokens: dict[str, str] = {}
    for name, options in bots.items():
        label = f"telegram.bots.{name}" if top.bots else "telegram"
        where = f"[{label}]"
        if not _NAME.match(name):
            raise ConfigError(f"{where}: bot names are 1-64 of a-z, 0-9, _ (it names the account)")
        try:
            cfg = BotConfig.model_validate({**defaults, **options})
        except ValidationError as exc:
            raise config_error(exc, f"[{label}] configuration") from None
        token = read_secret(cfg.token, cfg.token_file, f"{where} token")
        if not _TOKEN.match(token):
            raise ConfigError(f"{where} token: not a bot token (expected digits:letters, as @BotFather gives it)")
        if token in tokens:
            raise ConfigError(f"{where}: same token as bot {tokens[token]!r}; one bot, one account")
        tokens[token] = name
        secret = None
        if cfg.mode == "webhook":
            if cfg.webhook is None:
                raise ConfigError(f"{where}: mode = 'webhook' needs a [webhook] table with at least url")
            if cfg.webhook.secret_token is not None or cfg.webhook.secret_token_file is not None:
                secret = read_secret(cfg.webhook.secret_token, cfg.webhook.secret_token_file, f"{where} webhook secret")
                if not _SECRET.match(secret):
                    raise ConfigError(f"{where} webhook secret: 1-256 characters of A-Z, a-z, 0-9, _ and -")
        out.append(BotSettings(name, cfg, token, secret))
    _check_webhook_routes(out)
    return out


def _check_webhook_routes(bots: list[BotSettings]) -> None:
    seen: dict[tuple[str, int, str], str] = {}
    for bot in bots:
        hook = bot.config.webhook
        if bot.config.mode != "webhook" or hook is None:
            continue
        route = (hook.host, hook.port, hook.local_path)
        if route in seen:
            raise ConfigError(
                f"[telegram] bots {seen[route]!r} and {bot.name!r} share the webhook "
                f"{hook.host}:{hook.port}{hook.local_path}; give each its own path"
            )
        seen[route] = bot.name
