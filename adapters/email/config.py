"""The ``[email]`` configuration section, validated at the boundary.

Each mailbox is one Switchboard account. Passwords never need to be in the TOML file: name an
environment variable (``password_env``) or a file (``password_file``, e.g. a Docker/Kubernetes
secret); ``password`` itself is accepted for the ``SWITCHBOARD_EMAIL__…`` environment form.

```toml
[email]
[[email.mailboxes]]
name = "support"
address = "support@example.com"
imap_host = "imap.example.com"          # implicit TLS on 993 by default
smtp_host = "smtp.example.com"          # STARTTLS on 587 by default
password_env = "SUPPORT_MAIL_PASSWORD"
```
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from router.channel import ConfigError, config_error, read_secret

TlsMode = Literal["implicit", "starttls", "none"]

_DEFAULT_PORTS = {
    ("imap", "implicit"): 993,
    ("imap", "starttls"): 143,
    ("imap", "none"): 143,
    ("smtp", "implicit"): 465,
    ("smtp", "starttls"): 587,
    ("smtp", "none"): 25,
}


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class MailboxConfig(BaseModel):
    """One mailbox: where to read (IMAP), how to answer (SMTP), and the reader's timings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: The account name in Switchboard (conversations are keyed by channel + account).
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    enabled: bool = True
    #: The mailbox's address: the From of replies; also the login when ``user`` is not set.
    address: str = Field(pattern=r"^[^@\s<>]+@[^@\s<>]+$")
    display_name: str = ""
    user: str = ""
    password: SecretStr | None = None
    password_file: Path | None = None
    #: The name of an environment variable holding the password.
    password_env: str = ""

    imap_host: str = Field(min_length=1)
    imap_port: int | None = Field(None, ge=1, le=65535)
    imap_tls: TlsMode = "implicit"
    folder: str = Field("INBOX", min_length=1)

    #: Empty: this mailbox only reads; replies to its conversations fail with a clear reason.
    smtp_host: str = ""
    smtp_port: int | None = Field(None, ge=1, le=65535)
    smtp_tls: TlsMode = "starttls"
    #: SMTP login and password; default to the IMAP ones (the usual case with app passwords).
    smtp_user: str = ""
    smtp_password: SecretStr | None = None
    smtp_password_file: Path | None = None
    smtp_password_env: str = ""
    #: Log in to the SMTP server: "auto" logs in when the server offers AUTH (a hosted mailbox) and
    #: sends without when it does not (a local relay on port 25); true requires AUTH, false never
    #: logs in. With "auto", explicit SMTP credentials (smtp_user / smtp_password*) and a server
    #: that offers no AUTH stop the start with an error naming the setting.
    smtp_auth: bool | Literal["auto"] = "auto"
    #: Other addresses this mailbox sends or receives as (aliases, the SMTP login if different):
    #: mail from any of them, or carrying a Message-ID we generated, is our own copy, never a
    #: customer's message, and none of them is ever used as a reply address.
    aliases: list[str] = []

    #: Plain-text IMAP/SMTP is refused except on loopback unless this is set (local relays only).
    allow_insecure: bool = False
    #: Verify the servers' TLS certificates (turn off only for a local test server).
    tls_verify: bool = True
    #: A PEM file of CA certificates to trust instead of the system's (a private CA).
    tls_ca_file: Path | None = None

    #: Use IMAP IDLE when the server offers it; otherwise (or when IDLE fails) poll.
    idle: bool = True
    #: IDLE is ended and re-issued this often: it doubles as a keep-alive and a safety poll.
    idle_renew_s: float = Field(300.0, gt=0, le=29 * 60)
    poll_interval_s: float = Field(60.0, gt=0)
    #: Every IMAP/SMTP command times out after this (a server that never answers must not hang us).
    timeout_s: float = Field(30.0, gt=0)
    reconnect_min_s: float = Field(1.0, gt=0)
    reconnect_max_s: float = Field(120.0, gt=0)

    #: At the first start, import the messages of the last N days (0: only new ones).
    backfill_days: int = Field(0, ge=0)
    #: At the first start, import everything in the folder.
    backfill_all: bool = False
    #: Messages per UID FETCH during catch-up.
    fetch_batch: int = Field(20, ge=1, le=500)
    #: Only the first N bytes of a larger message are fetched (attachments stay on the server).
    max_fetch_bytes: int = Field(10 * 1024 * 1024, ge=64 * 1024)
    #: The routed text is cut at this length.
    max_text_chars: int = Field(20_000, ge=100)
    #: The whole body goes into meta["full_body"] only when quotes were cut and it is this short.
    full_body_max_chars: int = Field(4000, ge=0)
    max_attachments: int = Field(50, ge=0)
    #: A reply whose subject is unrelated to its thread's subject starts a new conversation.
    split_on_new_subject: bool = True
    #: How long Message-ID -> thread mappings are kept.
    thread_ttl_days: int = Field(180, ge=1)

    @model_validator(mode="after")
    def _check(self) -> MailboxConfig:
        insecure = [
            f"{kind}_tls = 'none' with {kind}_host = {host!r}"
            for kind, host, mode in (("imap", self.imap_host, self.imap_tls), ("smtp", self.smtp_host, self.smtp_tls))
            if host and mode == "none" and not _is_loopback(host)
        ]
        if insecure and not self.allow_insecure:
            raise ValueError(
                f"{'; '.join(insecure)} would send the password in clear; use 'implicit' or 'starttls' "
                "(or set allow_insecure = true for a trusted local relay)"
            )
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be >= reconnect_min_s")
        return self

    @property
    def login(self) -> str:
        return self.user or self.address

    @property
    def imap_port_(self) -> int:
        return self.imap_port or _DEFAULT_PORTS[("imap", self.imap_tls)]

    @property
    def smtp_port_(self) -> int:
        return self.smtp_port or _DEFAULT_PORTS[("smtp", self.smtp_tls)]

    @property
    def smtp_login(self) -> str:
        return self.smtp_user or self.login

    @property
    def smtp_credentials_explicit(self) -> bool:
        """Whether SMTP credentials were set for SMTP itself (not inherited from the IMAP login)."""
        return bool(self.smtp_user or self.smtp_password or self.smtp_password_env or self.smtp_password_file)

    @property
    def own_addresses(self) -> frozenset[str]:
        """Every address that is this mailbox itself (lower case)."""
        candidates = [self.address, self.login, self.smtp_login, *self.aliases]
        return frozenset(a.strip().lower() for a in candidates if "@" in a)

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2]

    def read_password(self) -> str:
        """The IMAP password from ``password``, ``password_env`` or ``password_file``."""
        return _secret(self.password, self.password_env, self.password_file, f"[email] {self.name}: password")

    def read_smtp_password(self) -> str:
        if self.smtp_password or self.smtp_password_env or self.smtp_password_file:
            return _secret(
                self.smtp_password,
                self.smtp_password_env,
                self.smtp_password_file,
                f"[email] {self.name}: smtp_password",
            )
        return self.read_password()


def _secret(value: SecretStr | None, env: str, file: Path | None, what: str) -> str:
    if env:
        found = os.environ.get(env, "")
        if not found:
            raise ConfigError(f"{what}: the environment variable {env} is not set or empty")
        return found
    return read_secret(value, file, what)


class EmailConfig(BaseModel):
    """The ``[email]`` section: a list of mailboxes (or a table of them keyed by name)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    mailboxes: list[MailboxConfig] = []

    @field_validator("mailboxes", mode="before")
    @classmethod
    def _table_form(cls, value: Any) -> Any:
        # [email.mailboxes.support] (a table keyed by name) is what environment overrides can
        # address: SWITCHBOARD_EMAIL__MAILBOXES__SUPPORT__PASSWORD.
        if isinstance(value, Mapping):
            return [{"name": str(name), **dict(box)} for name, box in value.items()]
        return value

    @field_validator("mailboxes")
    @classmethod
    def _unique(cls, value: list[MailboxConfig]) -> list[MailboxConfig]:
        names = [box.name for box in value]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"mailbox names must be unique: {', '.join(dupes)}")
        return value


def parse_config(section: Mapping[str, Any]) -> EmailConfig:
    """Validate the raw ``[email]`` table; ConfigError names every bad setting."""
    try:
        return EmailConfig.model_validate(dict(section))
    except ValidationError as exc:
        raise config_error(exc, "[email] configuration", loc_prefix="email.") from None
