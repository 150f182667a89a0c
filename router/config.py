"""Configuration in one place: a TOML file, with ``SWITCHBOARD_…`` environment variables over it.

Nested settings use ``__`` in environment names: ``SWITCHBOARD_REDIS__URL``,
``SWITCHBOARD_WORKER__BATCH``. Secrets (tokens, passwords) are never read from the TOML file:
they come from the environment or from a file named by a ``…_file`` setting, and are held as
``SecretStr`` so they never reach a log line.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from router.errors import ConfigError
from rules.document import TimeZone
from rules.locale import FALLBACK_LANGUAGE, localized

#: The most virtual shards a deployment may have (``redis.shards``): each then has a contiguous
#: slice of 16 of the 16384 slots (router/keys.py shard_prefix), enough for 1024 primaries.
MAX_SHARDS = 1024


DEFAULT_CONFIG = Path("switchboard.toml")


def _has_fallback(texts: dict[str, str]) -> dict[str, str]:
    if FALLBACK_LANGUAGE not in texts:
        raise ValueError(f"needs a text in {FALLBACK_LANGUAGE!r} (the fallback for other languages)")
    return texts


#: A text per language code, with one in the fallback language (rules/locale.py ``localized``).
LocalizedTexts = Annotated[dict[str, str], AfterValidator(_has_fallback)]


class RedisSettings(BaseModel):
    # Empty: Switchboard starts its own redis-server with AOF in data_dir.
    url: SecretStr = SecretStr("")
    data_dir: Path = Path("var")
    # The embedded server's memory limit (policy noeviction: writes are refused beyond it, appends
    # raise RedisFull and adapters retry later; nothing is ever evicted). "0": no limit.
    embedded_maxmemory: str = "2gb"
    # Virtual shards of the inbox and conversation state (docs/architecture.md, "Scale-out and
    # Redis Cluster"). Fixed per deployment: stored at the first start, and a process started with
    # another count refuses to start (changing it needs a migration, which does not exist yet).
    shards: int = Field(1, ge=1, le=MAX_SHARDS)


class InboxSettings(BaseModel):
    # The inbox's cap. Routed entries beyond it are trimmed (oldest first); entries not routed yet
    # never are: at the cap with none routed, appends are refused (InboxFull) and retried later.
    maxlen: int = Field(1_000_000, ge=1000)
    # Entries older than this (by stream id) are trimmed too; 0 keeps by length only.
    max_age_s: int = Field(0, ge=0)
    max_message_bytes: int = Field(256 * 1024, ge=1024)
    dedup_ttl_s: int = Field(7 * 86400, ge=60)
    # What an append's acknowledgement means (README, "Durability"): "fast", written to Redis and
    # its AOF within ~1 s (a power loss can lose up to ~1 s of confirmed messages); "durable", on
    # disk before it returns (WAITAOF on Redis >= 7.2, else the server must run appendfsync always,
    # which the embedded server then does).
    durability: Literal["fast", "durable"] = "fast"
    # Replicas each append must reach (WAIT; with "durable" and WAITAOF, on their disk) before it
    # returns; 0 for a single server.
    replicas: int = Field(0, ge=0)
    wait_timeout_ms: int = Field(2000, ge=1)
    # The P1 lane (docs/surge.md): the ingest precheck that sends a suspected P1 situation to a
    # stream the workers read first — "model" (the rule set's P1 rules, then the triage model's
    # P(P1) where the rule set has a model section), "rules" (the P1 rules alone: ~40% of the P1
    # development set against ~95%, at about half the appending CPU), "off" (one stream, no
    # per-conversation marker written).
    p1_lane: Literal["off", "rules", "model"] = "model"
    # At this many entries waiting in a shard's lane, no new conversation enters it (false
    # positives cost lane capacity; later messages of a conversation waiting there still do).
    lane_maxlen: int = Field(10_000, ge=1)
    # How long the marker of a conversation's last append lives: a suspect enters the lane only
    # while the inbox's oldest unrouted entry is younger (else its marker may have expired).
    lane_order_ttl_s: int = Field(3600, ge=60)


class WorkerSettings(BaseModel):
    batch: int = Field(100, ge=1, le=10_000)
    block_ms: int = Field(1000, ge=1)
    # A pending entry idle longer than this belongs to a dead worker and is reclaimed.
    claim_idle_ms: int = Field(30_000, ge=100)
    # The entries of a consumer without a live heartbeat (a dead worker) are taken over once idle
    # this long: above 0 so that two workers taking over at once do not both deliver an entry.
    claim_dead_idle_ms: int = Field(1000, ge=1)
    max_attempts: int = Field(5, ge=1)
    # The heartbeat key lives 3 heartbeats: a killed worker's entries wait that long, plus up to
    # one heartbeat (the other workers look for dead ones as often) and claim_dead_idle_ms.
    heartbeat_s: float = Field(1.0, gt=0)
    rules_poll_s: float = Field(2.0, gt=0)
    trim_every_s: float = Field(60.0, gt=0)
    # A consumer with nothing pending, idle this long, is removed from the group (each worker
    # process is a new consumer; a live one that was only quiet is re-added by its next read).
    forget_consumer_s: float = Field(3600.0, gt=0)
    # The worker processes of `run --workers N` are restarted when they die, after a jittered delay
    # doubling from restart_backoff_s up to restart_backoff_cap_s (never giving up), back to the
    # shortest once a process had run restart_reset_s; stop_timeout_s: from SIGTERM to SIGKILL.
    restart_backoff_s: float = Field(1.0, gt=0)
    restart_backoff_cap_s: float = Field(60.0, gt=0)
    restart_reset_s: float = Field(60.0, gt=0)
    stop_timeout_s: float = Field(30.0, gt=0)
    # With redis.shards > 1: each worker process reads only the shards it holds a lease on
    # (router/shardlease.py; the lease timing is [leases]). Off: every worker process reads every
    # shard through its consumer groups, as with one shard (no takeover wait after a crash beyond
    # claim_dead_idle_ms, but each process holds a blocked read per shard). Ignored with one shard.
    shard_leases: bool = True


class LeaseSettings(BaseModel):
    """Adapter leases (router/leases.py): one poller per bot or mailbox across replicas.

    The holder renews every ttl_s/3 and stops polling once it could not renew for ttl_s minus
    max_skew_s; a standby tries every retry_s, so a dead holder's account is taken over within
    ttl_s + retry_s (7 s by default). Expiry is judged by each replica's wall clock: replicas'
    clocks must agree within max_skew_s (NTP keeps them within milliseconds).
    """

    ttl_s: float = Field(6.0, ge=0.3)
    retry_s: float = Field(1.0, gt=0)
    max_skew_s: float = Field(0.5, ge=0)

    @model_validator(mode="after")
    def _skew_below_renewal(self) -> LeaseSettings:
        if self.max_skew_s >= self.ttl_s / 3:
            raise ValueError(
                f"max_skew_s ({self.max_skew_s}) must be under a third of ttl_s ({self.ttl_s}): "
                "a holder would give its lease up before its first renewal"
            )
        return self

    @property
    def ttl_ms(self) -> int:
        """``ttl_s`` as router/leases.py takes it."""
        return round(self.ttl_s * 1000)

    @property
    def max_skew_ms(self) -> int:
        return round(self.max_skew_s * 1000)


class ConversationSettings(BaseModel):
    reopen_window_s: int = Field(7 * 86400, ge=0)
    # SLA: the time to first answer per priority, which orders each queue after priority.
    sla_s: dict[str, int] = {"P1": 15 * 60, "P2": 3600, "P3": 4 * 3600, "P4": 24 * 3600}

    @field_validator("sla_s")
    @classmethod
    def _all_priorities(cls, v: dict[str, int]) -> dict[str, int]:
        missing = {"P1", "P2", "P3", "P4"} - v.keys()
        if missing:
            raise ValueError(f"missing SLA for {', '.join(sorted(missing))}")
        return v


class AssignSettings(BaseModel):
    """Automatic assignment (router/assignment.py, docs/assignment.md).

    policy_file: the assignment policies per group (YAML, sla/assignment.py), in force while no
    policy is published (``switchboard assign publish``, router/assignstore.py); neither: every
    group is ``manual`` (agents claim) and no assignment service runs. An agent whose last heartbeat is
    older than grace_s is offline: no new conversation goes to it, and its open conversations in
    groups with a policy go back to the queue. A reservation (the first step of an assignment)
    lives reservation_s; one left behind by a crashed process is released once expired (by more
    than [leases] max_skew_s). Each assigner looks at the head of a queue (batch conversations)
    every poll_s when idle; sweep_s: presence, load, expired reservations, re-offers, overflow.
    """

    policy_file: Path | None = None
    heartbeat_s: float = Field(10.0, gt=0)
    grace_s: float = Field(60.0, gt=0)
    reservation_s: float = Field(10.0, gt=0)
    poll_s: float = Field(0.2, gt=0)
    sweep_s: float = Field(1.0, gt=0)
    batch: int = Field(50, ge=1, le=1000)
    # One assigner per shard across processes (a lease, [leases] timing); off: every process
    # assigns every shard (safe, the steps are atomic; the tests use it to make them contend).
    leases: bool = True

    @model_validator(mode="after")
    def _grace_above_heartbeat(self) -> AssignSettings:
        if self.grace_s <= self.heartbeat_s:
            raise ValueError(f"grace_s ({self.grace_s}) must be above heartbeat_s ({self.heartbeat_s})")
        return self


class SlaDestination(BaseModel):
    """Where an escalation's ``notify: WHOM`` is also sent: an outbox item on an existing channel
    (router/outbox.py), e.g. a supervisors' Telegram chat, Discord channel or e-mail address."""

    model_config = ConfigDict(extra="forbid")

    channel: str = Field(min_length=1)
    account: str = ""
    to: str = Field(min_length=1)  # the conversation key there: chat id, channel id, e-mail address


class SlaSettings(BaseModel):
    """The SLA timer (router/slatimer.py); the policies themselves are published data
    (``switchboard sla publish``, docs/sla.md)."""

    model_config = ConfigDict(extra="forbid")

    # Run the timer service in `switchboard run`: one process per shard fires (the timer lease).
    timer: bool = True
    # How often the timer looks for due conversations; an escalation fires up to this late.
    tick_s: float = Field(1.0, gt=0)
    # Due conversations evaluated per shard per tick.
    batch: int = Field(200, ge=1, le=10_000)
    # notify: WHOM -> a destination besides the console event (WHOM as the policy writes it).
    notify: dict[str, SlaDestination] = {}


class RetentionSettings(BaseModel):
    """How long Redis keeps what is no longer in flight (router/retention.py; docs/operations.md)."""

    # Closed conversations (state, history, delivery records, conversation-key mapping) are
    # deleted this long after closing: there is no archive yet. 0 keeps them for ever.
    closed_conversation_days: float = Field(30.0, ge=0)
    # Dead letters older than this, or beyond the newest dead_letter_max, are dropped.
    dead_letter_days: float = Field(30.0, ge=0)
    dead_letter_max: int = Field(100_000, ge=1)
    # One sweep per interval across all workers (a lock); each script call deletes at most batch
    # conversations (~5 ms of Redis at 100: Redis serves nobody else meanwhile).
    sweep_every_s: float = Field(60.0, gt=0)
    batch: int = Field(100, ge=1, le=10_000)


class AnalyticsSettings(BaseModel):
    """The analytics exporter (router/exporter.py, docs/analytics.md): every conversation event
    into an embedded DuckDB file, exactly once."""

    model_config = ConfigDict(extra="forbid")

    # Run the exporter in `switchboard run` (`switchboard analytics export` runs it alone).
    enabled: bool = True
    # The DuckDB file; relative paths are under redis.data_dir. One writing process per file.
    db: Path = Path("analytics.duckdb")
    # How often the exporter looks for new events when it has caught up.
    poll_s: float = Field(1.0, gt=0)
    # Entries read per stream per round (one DuckDB transaction a round).
    batch: int = Field(1000, ge=1, le=100_000)
    # Also export the same tables into this PostgreSQL database (postgresql://user:pass@host/db),
    # by a second exporter with cursors of its own (router/pgstore.py); empty: DuckDB only.
    postgres: str = ""

    @field_validator("postgres")
    @classmethod
    def _postgres_url(cls, url: str) -> str:
        if url and not url.startswith(("postgresql://", "postgres://")):
            raise ValueError("a PostgreSQL URL: postgresql://user:password@host:port/database")
        return url

    def path(self, data_dir: Path) -> Path:
        return self.db if self.db.is_absolute() else data_dir / self.db


class RulesSettings(BaseModel):
    # Empty: the shipped default rule set, unless one was published into Redis.
    file: Path | None = None
    # The triage model the rules' `intent:`/`urgency:` conditions and `model:` section read:
    # "shipped" (rules/models/), "off", or a directory holding `make model`'s output.
    model: Literal["shipped", "off"] | Path = "shipped"
    # The share of routed messages a shadow model (`switchboard model shadow N`) is asked about:
    # each costs a prediction or two (docs/triage.md, "Publishing a model") and a stream entry.
    shadow_sample: float = Field(1.0, ge=0.0, le=1.0)
    # `switchboard model train`'s interpreter, with the fastText trainer (default: the checkout's
    # .venv-train/bin/python, built by `make .venv-train/.installed-stamp`).
    trainer_python: Path | None = None


class KBSettings(BaseModel):
    """The knowledge base (router/kbstore.py) when none is published, and how it answers."""

    # The knowledge base in force until one is published: a directory of <article id>/<lang>.md
    # files (empty: the shipped default, kb/default/).
    directory: Path | None = None
    # The method, thresholds and example questions (empty: the shipped kb/calibration.json).
    calibration: Path | None = None


class ReviewSettings(BaseModel):
    """The second opinion (router/review.py): a semantic model reviews new conversations that the
    triage model was unsure of, off the hot path. Thresholds: semantic.json's unless set here."""

    enabled: bool = True
    review_below: float | None = Field(None, ge=0, le=1.01)
    move_min: float | None = Field(None, ge=0, le=1.01)
    p1_min: float | None = Field(None, ge=0, le=1.01)
    # Older conversations are skipped (and counted): a surge never waits on the reviewer.
    max_age_s: float = Field(30.0, gt=0)


#: "This solved it" / "talk to a person" under an answer, per language (the variant's language
#: sent; ``en`` for one not listed).
DEFAULT_BUTTON_LABELS: dict[str, tuple[str, str]] = {
    "en": ("This solved it", "Talk to a person"),
    "zh": ("已解决", "转人工客服"),
    "zh-Hant": ("已解決", "轉人工客服"),
    "ru": ("Это помогло", "Связаться с оператором"),
    "es": ("Esto lo resolvió", "Hablar con una persona"),
    "tr": ("Sorunum çözüldü", "Bir temsilciyle görüş"),
    "vi": ("Đã giải quyết", "Nói chuyện với nhân viên"),
    "pt": ("Isso resolveu", "Falar com uma pessoa"),
    "ko": ("해결되었습니다", "상담원 연결"),
}


class AnswerSettings(BaseModel):
    """Answers to users from the knowledge base (router/answerer.py, docs/knowledge-base.md)."""

    # off: nothing happens; shadow: the decision is recorded and counted, nothing is sent or held;
    # live: a sure answer is sent with its buttons and the conversation waits as "answered".
    mode: Literal["off", "shadow", "live"] = "off"
    # Eligible: a new conversation routed to one of these groups, or tagged with one of these tags
    # (a rule decides by routing or tagging).
    groups: list[str] = Field(default_factory=lambda: ["general"])
    tags: list[str] = Field(default_factory=list)
    # An answered conversation with no further message nor press this long is closed, "assumed".
    assume_resolved_after_s: int = Field(86_400, ge=60)
    # The sweeper closing them runs this often (one process at a time per shard).
    sweep_every_s: float = Field(60.0, gt=0)
    # (solved, human) labels per language; merged over the defaults.
    labels: dict[str, tuple[str, str]] = Field(default_factory=dict)
    # The shadow stream keeps about this many would-be answers per shard.
    shadow_max: int = Field(10_000, ge=100)

    @field_validator("labels")
    @classmethod
    def _labels_fit(cls, v: dict[str, tuple[str, str]]) -> dict[str, tuple[str, str]]:
        for lang, pair in v.items():
            if not all(0 < len(label) <= 80 for label in pair):
                raise ValueError(f"labels.{lang}: each label needs 1 to 80 characters")
        return v

    def button_labels(self, lang: str) -> tuple[str, str]:
        merged = {**DEFAULT_BUTTON_LABELS, **self.labels}
        return localized(merged, lang)


#: The survey's question and its follow-up per language (``[csat] question`` and ``follow_up``
#: merge over these; ``en`` for a language not listed, ``zh`` for every Chinese variant).
DEFAULT_CSAT_QUESTION: dict[str, str] = {
    "en": "How did we do? Rate our help from 1 (poor) to 5 (excellent).",
    "zh": "我们的服务怎么样？请为本次服务评分：1（很差）到 5（很好）。",
    "ru": "Как мы справились? Оцените нашу помощь от 1 (плохо) до 5 (отлично).",
    "es": "¿Qué tal lo hicimos? Valora nuestra ayuda de 1 (mala) a 5 (excelente).",
    "tr": "Nasıldık? Yardımımızı 1 (kötü) ile 5 (mükemmel) arasında puanlayın.",
    "vi": "Chúng tôi hỗ trợ thế nào? Hãy chấm điểm từ 1 (kém) đến 5 (xuất sắc).",
}
DEFAULT_CSAT_FOLLOW_UP: dict[str, str] = {
    "en": "What could we have done better? Your next message here goes to our support lead.",
    "zh": "我们哪里可以做得更好？您在这里发送的下一条消息将转给我们的客服主管。",
    "ru": "Что мы могли бы сделать лучше? Ваше следующее сообщение здесь получит руководитель поддержки.",
    "es": "¿Qué podríamos haber hecho mejor? Tu próximo mensaje aquí llegará a nuestro responsable de soporte.",
    "tr": "Neyi daha iyi yapabilirdik? Buraya yazacağınız bir sonraki mesaj destek sorumlumuza iletilir.",
    "vi": "Chúng tôi có thể làm tốt hơn điều gì? Tin nhắn tiếp theo của bạn tại đây sẽ đến trưởng nhóm hỗ trợ.",
}


class CsatSettings(BaseModel):
    """Satisfaction surveys after close (router/csat.py, docs/csat.md)."""

    model_config = ConfigDict(extra="forbid")

    # Off: closing schedules nothing and no survey service runs.
    enabled: bool = False
    # The survey goes this long after an agent closes a conversation; per group in group_delay_s.
    delay_s: int = Field(600, ge=0)
    group_delay_s: dict[str, int] = {}
    # Groups that never survey (an internal or abuse group), and close reasons that do not.
    skip_groups: list[str] = []
    skip_reasons: list[str] = Field(default_factory=lambda: ["spam", "duplicate"])
    # A user asked once is not asked again for this long (per shard: docs/csat.md).
    cooldown_days: float = Field(30.0, ge=0)
    # A rating at or under this asks the follow-up question; the user's next message within
    # comment_window_s is its answer (the CSAT comment), not a new conversation.
    follow_up_at_most: int = Field(3, ge=0, le=5)
    comment_window_s: int = Field(86_400, ge=60)
    # The survey service: how often it looks for due surveys, and how many per shard per tick.
    tick_s: float = Field(5.0, gt=0)
    batch: int = Field(100, ge=1, le=10_000)
    # Texts per language, merged over the defaults.
    question: dict[str, str] = {}
    follow_up: dict[str, str] = {}

    @field_validator("group_delay_s")
    @classmethod
    def _delays(cls, v: dict[str, int]) -> dict[str, int]:
        for group, seconds in v.items():
            if seconds < 0:
                raise ValueError(f"group_delay_s.{group}: a delay cannot be negative ({seconds})")
        return v

    @field_validator("question", "follow_up")
    @classmethod
    def _texts(cls, v: dict[str, str]) -> dict[str, str]:
        for lang, text in v.items():
            if not text.strip() or len(text) > 1000:
                raise ValueError(f"{lang}: a text needs 1 to 1000 characters")
        return v

    def delay_ms(self, group: str) -> int:
        return self.group_delay_s.get(group, self.delay_s) * 1000

    def text(self, which: Literal["question", "follow_up"], lang: str) -> str:
        """The survey's ``which`` text in ``lang`` (its base language, else English)."""
        defaults = DEFAULT_CSAT_QUESTION if which == "question" else DEFAULT_CSAT_FOLLOW_UP
        merged = {**defaults, **(self.question if which == "question" else self.follow_up)}
        return localized(merged, lang)


class IncidentSettings(BaseModel):
    """Incidents (router/incidents.py, docs/incidents.md): the linker and the resolution broadcast."""

    # The linker and the broadcaster run in ``switchboard run`` (every replica: leases decide).
    enabled: bool = True
    # Resolution texts queued per second per channel, over the deployment (each shard's
    # broadcaster takes its share): the platforms' own limits (Telegram ~30 msgs/s to different
    # chats, Discord ~50 requests/s); e-mail: what the SMTP relay accepts.
    rates: dict[str, float] = Field(default_factory=lambda: {"telegram": 30.0, "discord": 50.0, "email": 10.0})
    # A channel not in ``rates``.
    default_rate: float = Field(20.0, gt=0)
    # The broadcaster's round: each round sends up to rate * tick_s per channel.
    tick_s: float = Field(1.0, gt=0)
    # Surge detection (router/surge.py): a tag on at least ``surge_min`` new conversations in the
    # last ``surge_window_m`` minutes, ``surge_factor`` times its average over as long a window in
    # the ``surge_baseline_h`` hours before the current one, is a suggested incident.
    surge_window_m: int = Field(10, ge=1, le=60)
    surge_baseline_h: int = Field(24, ge=1, le=25)
    surge_factor: float = Field(5.0, gt=1)
    surge_min: int = Field(20, ge=1)

    @field_validator("rates")
    @classmethod
    def _positive(cls, v: dict[str, float]) -> dict[str, float]:
        for channel, rate in v.items():
            if rate <= 0:
                raise ValueError(f"rates.{channel}: messages per second must be above 0")
        return v

    def rate(self, channel: str) -> float:
        return self.rates.get(channel, self.default_rate)


class WebSettings(BaseModel):
    """The web console and HTTP API (``switchboard web``, and inside ``switchboard run``)."""

    enabled: bool = True  # inside `switchboard run`; `switchboard web` always serves
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    # Secure cookies: set when the console is served behind TLS (a reverse proxy terminating it);
    # requests that arrive over https get Secure cookies whatever this says.
    secure_cookies: bool = False
    # Keys session ids and API tokens before they are stored in Redis. Secrets: environment
    # (SWITCHBOARD_WEB__SESSION_SECRET) or a file; unset, one is generated and kept in Redis.
    session_secret: SecretStr | None = None
    session_secret_file: Path | None = None
    # The first admin's password (user ``admin``, created on first start); unset, a one-time
    # password is printed and must be changed at first login.
    admin_password: SecretStr | None = None
    admin_password_file: Path | None = None
    session_ttl_s: int = Field(12 * 3600, ge=60)
    # Login (and password form) attempts, counted before the password is checked: per user name
    # and client address (hard limit in the window), per address, and per user name from any
    # address a slow-down: past login_max_failures, each attempt waits twice as long as the last,
    # up to login_max_delay_s (so nobody can lock an account for everyone). docs/security.md.
    login_max_failures: int = Field(5, ge=1)
    login_max_failures_per_ip: int = Field(30, ge=1)
    login_window_s: int = Field(300, ge=1)
    login_max_delay_s: int = Field(60, ge=1)
    # Addresses of reverse proxies whose X-Forwarded-For names the client (uvicorn's
    # forwarded_allow_ips); empty: the peer address is the client, headers are ignored.
    trusted_proxies: list[str] = Field(default_factory=list)
    # Password checks (argon2) at once, and how many may wait for one before the rest get 429.
    password_checks: int = Field(4, ge=1)
    password_checks_waiting: int = Field(64, ge=0)
    # One-time passwords (generated, or set by an admin) expire after this.
    otp_ttl_s: int = Field(24 * 3600, ge=60)
    # zxcvbn score (0-4) a password that users choose themselves must reach.
    password_min_score: int = Field(2, ge=0, le=4)
    # API tokens expire after this (0 = never); a token also ends when its user's password,
    # role or groups change.
    token_ttl_s: int = Field(90 * 86400, ge=0)
    # The audit log (logins, failures, user, token and rule changes) keeps about this many entries.
    audit_max: int = Field(100_000, ge=100)
    # The dashboard's time series: one sample of counters and depths every sample_s seconds.
    sample_s: float = Field(15.0, gt=0)
    # Live streams (SSE) open at once; each holds a Redis connection of its own while it waits.
    max_streams: int = Field(200, ge=1)
    max_streams_per_user: int = Field(8, ge=1)
    # Availability (docs/security.md, "Console availability"). Open connections at most (the
    # process raises its open-files limit to this + 512 when the hard limit allows): beyond, the
    # oldest one still sending its request is closed to make room (else the new one is).
    max_connections: int = Field(10_000, ge=8)
    # A request's headers and body must arrive within this; an idle kept-alive connection closes
    # after keep_alive_s.
    request_timeout_s: float = Field(10.0, gt=0)
    keep_alive_s: int = Field(5, ge=1)
    # The console's own Redis pool (workers and adapters keep theirs): a request waits up to
    # redis_wait_s for a free connection instead of failing.
    redis_connections: int = Field(32, ge=2)
    redis_wait_s: float = Field(5.0, gt=0)
    # /metrics: with a token, scrapers send "Authorization: Bearer <token>"; without, only
    # loopback clients are answered. Secret: environment or file.
    metrics_token: SecretStr | None = None
    metrics_token_file: Path | None = None
    metrics_cache_s: float = Field(1.0, ge=0)
    # Rule drafts are validated in a child process with these limits (address space, wall time).
    draft_memory_mb: int = Field(512, ge=64)
    draft_timeout_s: float = Field(10.0, gt=0)
    # The console's address as users reach it (e.g. "https://support.example.com"): buttons under
    # e-mail replies are links to {public_url}/a/{token} (router/links.py). Unset, e-mail replies
    # go out without them.
    public_url: str = ""
    # A button link in an e-mail works this long after the reply was sent.
    link_ttl_s: int = Field(14 * 86400, ge=60)

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if value and (not value.startswith(("http://", "https://")) or "?" in value or "#" in value):
            raise ValueError("must be the console's base URL, like https://support.example.com (no query)")
        return value


class AlertSettings(BaseModel):
    """Thresholds above which ``switchboard check`` fails, naming the reason (docs/operations.md)."""

    # Inbox entries no router worker has read yet.
    inbox_lag: int = Field(1000, ge=0)
    # Age (since appended) of the oldest entry read but not acknowledged, inbox or outbox.
    pending_age_s: float = Field(300.0, gt=0)
    # Replies of one channel not yet sent and recorded.
    outbox_depth: int = Field(500, ge=0)
    # Redis used_memory / maxmemory (not checked when maxmemory is 0, i.e. unlimited).
    memory_ratio: float = Field(0.8, gt=0, le=1)


#: Channel adapters' sections: validated by each adapter's own model when it starts, so that the
#: core does not import adapter code. One per channel of the registry (adapters/__init__.py
#: CHANNELS): this leaf module cannot import it, a test keeps the two equal.
class StaffIdentity(BaseModel):
    """One staff account on one platform: ``id`` is what makes it staff, ``names`` what impostors copy."""

    id: str = Field(min_length=1)
    names: list[str] = Field(min_length=1)

    @field_validator("id", mode="before")
    @classmethod
    def _id_text(cls, v: object) -> object:
        # Telegram and Discord ids are numbers; TOML may give them as integers.
        return str(v) if isinstance(v, int) else v

    @field_validator("names")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        if not all(name.strip() for name in v):
            raise ValueError("a staff name may not be blank")
        return v


class ImpostorSettings(BaseModel):
    """The impostor check (docs/impostors.md): staff by platform id, lookalike names to review."""

    enabled: bool = True
    #: platform ("telegram", "discord") -> its staff accounts. Names are compared across platforms.
    staff: dict[str, list[StaffIdentity]] = {}
    #: Post a warning in the group when a member is flagged ``impostor`` (never ``review``); the
    #: member is never banned or muted by Switchboard: moderators decide (warn-first).
    warn_in_group: bool = True
    #: The warning, by language ("{name}": the member's name, "{staff}": the staff name alike);
    #: "en" is the fallback.
    warning: LocalizedTexts = {
        "en": "Careful: {name} is not a member of our staff (looks like {staff}). Staff never DM first.",
    }
    #: rapidfuzz similarity (0-100) for "impostor" (with a trick) and "review" (without).
    impostor_ratio: float = Field(85.0, ge=0, le=100)
    review_ratio: float = Field(97.0, ge=0, le=100)
    #: A member already checked is checked again only for new names, or after this long.
    recheck_s: int = Field(3600, ge=0)


class SafetyNoticeSettings(BaseModel):
    """The notice added to the first reply of a conversation (docs/impostors.md, "Safety notice")."""

    enabled: bool = True
    #: By language of the conversation; "en" is the fallback.
    text: LocalizedTexts = {
        "en": "Staff never DM you first and never ask for your recovery phrase.",
        "zh": "工作人员绝不会主动私信您，也绝不会索要您的助记词。",
        "ru": "Сотрудники никогда не пишут первыми и никогда не просят вашу фразу восстановления.",
        "es": "El personal nunca te escribe primero ni te pide tu frase de recuperación.",
        "tr": "Ekibimiz size asla ilk mesajı atmaz ve kurtarma ifadenizi asla istemez.",
        "vi": "Nhân viên không bao giờ nhắn tin cho bạn trước và không bao giờ hỏi cụm từ khôi phục của bạn.",
        "ko": "직원은 먼저 DM을 보내지 않으며 복구 문구를 절대 요구하지 않습니다.",
        "pt": "A equipe nunca envia mensagem primeiro e nunca pede sua frase de recuperação.",
    }


class AdmissionLimit(BaseModel):
    """A sender's token bucket: ``rate_per_s`` messages a second sustained, ``burst`` at once."""

    model_config = ConfigDict(extra="forbid")

    rate_per_s: float = Field(gt=0, le=1000)
    burst: int = Field(ge=1, le=100_000)


class AdmissionSettings(BaseModel):
    """Admission control at ingest (docs/admission.md): a token bucket per sender and channel,
    checked in the route script (atomic across workers). A message over the limit is never
    dropped: it joins the sender's conversation's history marked ``throttled``, without a second
    queue entry, and the sender gets one notice per ``notice_window_s``."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    #: Generous by default: a person types in bursts of a few messages, not 20 in a row, and not
    #: more than one every two seconds for minutes.
    rate_per_s: float = Field(0.5, gt=0, le=1000)
    burst: int = Field(20, ge=1, le=100_000)
    #: channel -> its own limit (an e-mail sender writes less often than a chat user).
    channels: dict[str, AdmissionLimit] = {}
    notice_window_s: int = Field(600, ge=1)
    #: The notice by the message's language; "en" is the fallback.
    notice: LocalizedTexts = {
        "en": "We have received your messages and will answer them together shortly. Thank you for your patience.",
        "zh": "我们已收到您的消息，稍后会一并回复。感谢您的耐心等待。",
        "ru": "Мы получили ваши сообщения и скоро ответим на них все вместе. Спасибо за терпение.",
        "es": "Hemos recibido sus mensajes y los responderemos juntos en breve. Gracias por su paciencia.",
        "tr": "Mesajlarınızı aldık, kısa süre içinde hepsine birlikte yanıt vereceğiz. Sabrınız için teşekkürler.",
        "vi": "Chúng tôi đã nhận được tin nhắn của bạn và sẽ sớm trả lời tất cả. Cảm ơn bạn đã kiên nhẫn.",
    }

    def limit(self, channel: str) -> AdmissionLimit:
        """The limit of ``channel``: its override, else the default."""
        return self.channels.get(channel) or AdmissionLimit(rate_per_s=self.rate_per_s, burst=self.burst)


class WaitSettings(BaseModel):
    """Wait estimates in auto-replies (docs/waits.md): ``{wait_min}``-``{wait_max}`` minutes from
    the conversation's place in its queue and the group's departures over the last
    ``window_min`` whole minutes."""

    model_config = ConfigDict(extra="forbid")

    #: Minutes of departures the service rate is measured over; the route script keeps each
    #: minute's count for 120 minutes (lua/common.lua SERVED_TTL_MS), the longest window.
    window_min: int = Field(15, ge=1, le=120)
    #: The range said around the estimate e: from floor(e * (1 - band)) to ceil(e * (1 + band)).
    band: float = Field(0.5, ge=0, lt=1)
    #: How often the agents online per group are copied where the route script reads them
    #: (router/online.py): the rate is scaled by online now / online over the window.
    online_every_s: float = Field(30.0, gt=0, le=600)
    #: Said instead of the sentence holding {wait_min}/{wait_max} when there is no estimate (no
    #: departure in the window: nothing measured yet, or nobody answering), by the message's
    #: language; "en" is the fallback.
    fallback: LocalizedTexts = {
        "en": "We will answer as soon as an agent is free.",
        "zh": "客服有空时会尽快回复您。",
        "ru": "Мы ответим, как только освободится специалист.",
        "es": "Le responderemos en cuanto un agente esté disponible.",
        "tr": "Bir temsilci müsait olur olmaz yanıt vereceğiz.",
        "vi": "Chúng tôi sẽ trả lời ngay khi có nhân viên rảnh.",
    }

    def phrase(self, language: str) -> str:
        return localized(self.fallback, language)


AdapterSection = dict[str, Any]


Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
WEEKDAYS: tuple[str, ...] = get_args(Weekday)


class ReportSettings(BaseModel):
    """The weekly summary for the support lead (router/weekly.py, docs/analytics.md "Scheduled
    reports"): the week before, sent once a week by one ``switchboard run`` replica."""

    model_config = ConfigDict(extra="forbid")

    # Off: no summary is sent on schedule (`switchboard report weekly` still prints one).
    weekly: bool = False
    # When: the first `weekday` at `hour`:00 in `timezone` after the reported ISO week ends (that
    # week is Monday to Sunday in the same time zone).
    weekday: Weekday = "monday"
    hour: int = Field(9, ge=0, le=23)
    timezone: TimeZone = "UTC"
    # E-mail recipients, sent through the SMTP settings of the [email] mailbox `email_mailbox`.
    email_to: list[str] = []
    email_mailbox: str = ""
    # A Telegram chat (a user's or a group's id), sent by the [telegram] bot `telegram_bot`.
    telegram_chat: int | None = None
    telegram_bot: str = ""
    # How many transfer pairs the summary lists.
    top_transfers: int = Field(5, ge=1, le=50)
    # How many complaint causes (router/complaints.py) the summary lists, largest first.
    top_causes: int = Field(5, ge=1, le=50)
    # How often the service looks whether a summary is due (a failed send is retried this often).
    tick_s: float = Field(60.0, gt=0)
    # A replica's claim on a week's send; a replica that died mid-send is replaced after this.
    claim_s: float = Field(600.0, ge=10)

    @field_validator("email_to")
    @classmethod
    def _addresses(cls, v: list[str]) -> list[str]:
        bad = [a for a in v if not re.fullmatch(r"[^@\s<>,]+@[^@\s<>,]+\.[^@\s<>,]+", a)]
        if bad:
            raise ValueError(f"not an e-mail address: {', '.join(map(repr, bad))}")
        return v

    @model_validator(mode="after")
    def _recipients(self) -> ReportSettings:
        if self.email_to and not self.email_mailbox:
            raise ValueError("email_to needs email_mailbox: the [email] mailbox whose SMTP settings send it")
        if self.telegram_chat is not None and not self.telegram_bot:
            raise ValueError("telegram_chat needs telegram_bot: the [telegram] bot that sends it")
        if self.weekly and not self.email_to and self.telegram_chat is None:
            raise ValueError("weekly = true needs a recipient: email_to (with email_mailbox) or telegram_chat")
        return self

    @property
    def weekday_number(self) -> int:
        """ISO weekday, 1 (Monday) to 7."""
        return WEEKDAYS.index(self.weekday) + 1


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SWITCHBOARD_", env_nested_delimiter="__", extra="forbid")

    prefix: str = "sb:"
    log_level: str = "INFO"
    log_format: str = "text"  # or "json"
    redis: RedisSettings = RedisSettings()
    inbox: InboxSettings = InboxSettings()
    worker: WorkerSettings = WorkerSettings()
    leases: LeaseSettings = LeaseSettings()
    conversations: ConversationSettings = ConversationSettings()
    admission: AdmissionSettings = AdmissionSettings()
    assign: AssignSettings = AssignSettings()
    sla: SlaSettings = SlaSettings()
    retention: RetentionSettings = RetentionSettings()
    analytics: AnalyticsSettings = AnalyticsSettings()
    rules: RulesSettings = RulesSettings()
    review: ReviewSettings = ReviewSettings()
    answers: AnswerSettings = AnswerSettings()
    csat: CsatSettings = CsatSettings()
    reports: ReportSettings = ReportSettings()
    incidents: IncidentSettings = IncidentSettings()
    waits: WaitSettings = WaitSettings()
    kb: KBSettings = KBSettings()
    web: WebSettings = WebSettings()
    alerts: AlertSettings = AlertSettings()
    impostors: ImpostorSettings = ImpostorSettings()
    safety_notice: SafetyNoticeSettings = SafetyNoticeSettings()
    sandbox: AdapterSection = {}
    telegram: AdapterSection = {}
    discord: AdapterSection = {}
    email: AdapterSection = {}

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML file arrives as init kwargs; the environment must win over it.
        return env_settings, init_settings

    @property
    def redis_url(self) -> str:
        return self.redis.url.get_secret_value()


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Read the TOML file (``path``, else ./switchboard.toml when present) and the environment.

    Raises ConfigError with every problem, each naming the setting.
    """
    explicit = path is not None
    path = path or Path(os.environ.get("SWITCHBOARD_CONFIG", DEFAULT_CONFIG))
    data: dict[str, Any] = {}
    if path.exists():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: {exc}") from exc
    elif explicit:
        raise ConfigError(f"{path}: no such configuration file")
    for where in _secrets_in(data):
        raise ConfigError(
            f"{path}: {where} is a secret: set it in the environment (SWITCHBOARD_"
            f"{where.replace('.', '__').upper()}) or name a file with {where}_file instead"
        )
    data.update(overrides)
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise config_error(exc, f"configuration ({path})") from None


def config_error(exc: ValidationError, what: str, *, loc_prefix: str = "") -> ConfigError:
    """The one way a pydantic error becomes a ``ConfigError``: ``invalid {what}: loc: message; …``,
    each location prefixed with ``loc_prefix`` (a channel's section, say ``email.``)."""
    problems = "; ".join(
        f"{loc_prefix}{'.'.join(str(p) for p in e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
        for e in exc.errors()
    )
    return ConfigError(f"invalid {what}: {problems}")


#: Keys that may never come from the TOML file, at any depth ([telegram.bots.x] token too).
SECRET_KEYS = frozenset(
    {
        "token",
        "password",
        "smtp_password",
        "admin_password",
        "secret",
        "secret_token",
        "session_secret",
        "api_key",
        "metrics_token",
    }
)


def _secrets_in(data: dict[str, Any], path: str = "") -> list[str]:
    found = []
    for key, value in data.items():
        where = f"{path}.{key}" if path else key
        if isinstance(value, dict):
            found += _secrets_in(value, where)
        elif key in SECRET_KEYS or where == "redis.url":
            found.append(where)
    return found


def read_secret(value: SecretStr | None, file: Path | None, what: str) -> str:
    """A secret from the environment-provided value or from a file; ConfigError when neither."""
    if value is not None and value.get_secret_value():
        return value.get_secret_value()
    if file is not None:
        try:
            return file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{what}: cannot read secret file {file}: {exc}") from exc
    raise ConfigError(f"{what}: not configured (set it in the environment or name a secret file)")
