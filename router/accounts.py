"""Identity and access for the console: local users, sessions, CSRF, login rate limiting, API tokens.

- Passwords are hashed with argon2id (argon2-cffi's defaults); verification runs in a thread
  because a hash costs tens of milliseconds of CPU.
- A session is a random id in an HttpOnly, SameSite=Lax cookie; Redis stores only a keyed digest
  of it (HMAC with the session secret), so reading Redis does not let anyone log in. Each session
  has its own CSRF token, required on every state-changing request that a cookie authenticates.
- API tokens (``Authorization: Bearer sbt_…``) are for scripts: no ambient credential, so no CSRF;
  stored as a keyed digest too, one token per user (issuing a new one revokes the old), with a
  scope (read < reply < admin) and an expiry.
- Every user has a *generation*, a random value renewed whenever their password is set or reset,
  their role or groups change, or they are deleted (a re-created name gets a new one). Sessions and
  tokens carry the generation they were issued under and stop working when it changes, which
  also ends open event streams (they re-authenticate every few seconds).
- Login attempts are counted *before* the password is checked (one Lua script, lua/login.lua), per
  (user, address) and per address with a hard limit in a window, and per user with a growing
  delay (a slow-down, not a lock: guessing from many addresses gets slower and slower, while the
  real user from their own address is never locked out by someone else's failures beyond it).
  Password checks run a few at a time; a flood beyond that is answered 429, not queued.
- One-time passwords (generated, or set by an admin) expire after ``web.otp_ttl_s`` and cannot be
  chosen as the new password; new passwords must pass zxcvbn's strength estimate.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import math
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

import redis.asyncio as aioredis
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from zxcvbn import zxcvbn

from router.config import WebSettings, read_secret
from router.errors import BadRequest, Conflict, NotFound, SwitchboardError
from router.keys import Keys

# A supervisor works the queues of their groups like an agent and also sees those groups' reports.
Role = Literal["admin", "supervisor", "agent"]
ROLES: tuple[Role, ...] = ("admin", "supervisor", "agent")
Scope = Literal["read", "reply", "admin"]
#: Each scope includes the ones before it: read = GET only; reply = what an agent does; admin = all.
SCOPES: tuple[Scope, ...] = ("read", "reply", "admin")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,31}$")
MIN_PASSWORD = 8
TOKEN_PREFIX = "sbt_"
FIRST_ADMIN = "admin"


class Unauthorized(SwitchboardError):
    """No valid session or token: log in first."""


class Forbidden(SwitchboardError):
    """Authenticated, but this user may not do that."""


class CsrfError(Forbidden):
    """A state-changing request authenticated by a cookie came without the session's CSRF token."""


class RateLimited(SwitchboardError):
    """Too many login attempts (or password checks at once); ``retry_after`` seconds to wait."""

    def __init__(self, retry_after: int, what: str = "too many failed logins") -> None:
        super().__init__(f"{what}; try again in {retry_after}s")
        self.retry_after = retry_after


class PasswordExpired(Unauthorized):
    """The right one-time password, but past its lifetime: an admin must set a new one."""


@dataclass(frozen=True, slots=True)
class User:
    """A console user. Admins see every group; a supervisor or an agent sees only ``groups``."""

    name: str
    role: Role
    groups: tuple[str, ...]
    must_change: bool = False
    created: float = 0.0
    has_token: bool = False
    # Renewed on every credential or permission change; sessions and tokens carry it (module doc).
    gen: str = ""
    # Set on a request authenticated by an API token: what that token may do.
    scope: Scope = "admin"

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def sees_reports(self) -> bool:
        """Admins see every report; supervisors those of their groups; agents none."""
        return self.role in ("admin", "supervisor")

    def sees(self, group: str) -> bool:
        return self.is_admin or group in self.groups

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "groups": list(self.groups),
            "must_change_password": self.must_change,
            "created": self.created,
            "has_token": self.has_token,
        }


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise BadRequest("a user name is 1-32 of a-z, 0-9, '.', '_', '-', starting with a letter or digit")
    return name


def check_password(password: str, name: str = "", min_score: int = 0) -> str:
    """Length always; with ``min_score``, zxcvbn's estimate (0-4) knowing the user's name.

    zxcvbn (Dropbox's estimator) knows the common-password lists, names, keyboard walks, dates and
    l33t substitutions, which a hand-written blocklist would not; 2 = "somewhat guessable",
    enough against online guessing through the rate limiter, 3 for offline attacks on the hashes.
    """
    if len(password) < MIN_PASSWORD:
        raise BadRequest(f"a password needs at least {MIN_PASSWORD} characters")
    if min_score:
        result = zxcvbn(password[:128], user_inputs=[name, "switchboard", "support", "exchange"])
        if int(result["score"]) < min_score:
            hint = result["feedback"].get("warning") or "add more words or characters"
            raise BadRequest(f"this password is too easy to guess ({hint.rstrip('.')}); choose a longer one")
    return password


def _clean_groups(groups: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(g.strip() for g in groups if g.strip()))


async def load_secret(client: aioredis.Redis, keys: Keys, web: WebSettings) -> bytes:
    """The key for session and token digests: configured, else generated once and kept in Redis.

    Kept in Redis so that every console process of one deployment agrees on it; configure one
    (environment or file) to keep it out of Redis.
    """
    if (web.session_secret and web.session_secret.get_secret_value()) or web.session_secret_file:
        return read_secret(web.session_secret, web.session_secret_file, "web.session_secret").encode()
    await client.set(keys.web_secret, secrets.token_hex(32), nx=True)
    raw = await client.get(keys.web_secret)
    return bytes(raw)


class Users:
    """Console users in Redis (``users`` set, ``user:{name}`` hashes, ``token:{digest}``)."""

    def __init__(
        self,
        client: aioredis.Redis,
        keys: Keys,
        secret: bytes,
        web: WebSettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        # One-time passwords and tokens expire by this clock (tests move it instead of waiting).
        self.clock = clock
        self._keys = keys
        self._secret = secret
        self._hasher = PasswordHasher()
        self._otp_ttl = web.otp_ttl_s
        self._min_score = web.password_min_score
        self._token_ttl = web.token_ttl_s
        # argon2 costs ~50 ms of CPU and memory per check: a few at a time, and a flood beyond
        # what can wait is refused (429) instead of piling up threads and Redis connections.
        self._checks = asyncio.Semaphore(web.password_checks)
        self._waiting = 0
        self._max_waiting = web.password_checks_waiting

    def digest(self, value: str) -> str:
        return hmac.new(self._secret, value.encode(), hashlib.sha256).hexdigest()

    @staticmethod
    def _from_hash(data: dict[bytes, bytes]) -> User:
        d = {k.decode(): v.decode() for k, v in data.items()}
        role: Role = next((r for r in ROLES if r == d.get("role")), "agent")
        return User(
            name=d["name"],
            role=role,
            groups=tuple(json.loads(d.get("groups") or "[]")),
            must_change=d.get("must_change") == "1",
            created=float(d.get("created") or 0),
            has_token=bool(d.get("token")),
            gen=d.get("gen", ""),
        )

    async def get(self, name: str) -> User | None:
        data = await self._client.hgetall(self._keys.user(name))
        return self._from_hash(data) if data else None

    async def require(self, name: str) -> User:
        user = await self.get(name)
        if user is None:
            raise NotFound(f"user {name}")
        return user

    async def all(self) -> list[User]:
        names = sorted(m.decode() for m in await self._client.smembers(self._keys.users))
        pipe = self._client.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(self._keys.user(name))
        return [self._from_hash(d) for d in await pipe.execute() if d]

    async def _argon2(self, fn: Any, *args: str) -> Any:
        if self._waiting >= self._max_waiting:
            raise RateLimited(1, "too many password checks at once")
        self._waiting += 1
        try:
            async with self._checks:
                return await asyncio.to_thread(fn, *args)
        finally:
            self._waiting -= 1

    async def _hash(self, password: str) -> str:
        return str(await self._argon2(self._hasher.hash, password))

    def _revoke(self, pipe: Any, name: str, token: bytes | None) -> None:
        """In ``pipe``: a new generation (ends sessions and streams) and the API token deleted."""
        pipe.hset(self._keys.user(name), "gen", secrets.token_hex(8))
        if token:
            pipe.delete(self._keys.token(token.decode()))
            pipe.hdel(self._keys.user(name), "token")

    async def add(
        self,
        name: str,
        role: Role,
        groups: list[str] | tuple[str, ...] = (),
        password: str | None = None,
        *,
        must_change: bool | None = None,
    ) -> str:
        """Create a user; returns the password (a generated one-time password when none is given).

        A generated password must be changed at first login. Raises Conflict when the name exists.
        """
        check_name(name)
        if role not in ROLES:
            raise BadRequest(f"role must be one of {', '.join(ROLES)}")
        generated = password is None
        password = secrets.token_urlsafe(12) if password is None else check_password(password, name)
        one_time = generated if must_change is None else must_change
        fields = {
            "name": name,
            "role": role,
            "groups": json.dumps(list(_clean_groups(groups))),
            "pw": await self._hash(password),
            "created": str(self.clock()),
            "must_change": "1" if one_time else "0",
            "otp_until": str(self.clock() + self._otp_ttl) if one_time else "0",
            "gen": secrets.token_hex(8),
        }
        # HSETNX on the name field makes creation race-free: two consoles starting at once
        # (or two admins adding the same name) create the user once.
        if not await self._client.hsetnx(self._keys.user(name), "name", name):
            raise Conflict(f"user {name} already exists")
        pipe = self._client.pipeline(transaction=True)
        pipe.hset(self._keys.user(name), mapping=fields)
        pipe.sadd(self._keys.users, name)
        await pipe.execute()
        return password

    async def update(self, name: str, *, role: Role | None = None, groups: list[str] | None = None) -> User:
        await self.require(name)
        fields: dict[str, str] = {}
        if role is not None:
            if role not in ROLES:
                raise BadRequest(f"role must be one of {', '.join(ROLES)}")
            fields["role"] = role
        if groups is not None:
            fields["groups"] = json.dumps(list(_clean_groups(groups)))
        before = await self.require(name)
        if fields:
            pipe = self._client.pipeline(transaction=True)
            pipe.hset(self._keys.user(name), mapping=fields)
            after_groups = _clean_groups(groups) if groups is not None else before.groups
            if (role or before.role) != before.role or after_groups != before.groups:
                self._revoke(pipe, name, await self._client.hget(self._keys.user(name), "token"))
            await pipe.execute()
        return await self.require(name)

    async def set_password(self, name: str, password: str, *, must_change: bool = False) -> None:
        """Set (``must_change``: as a one-time password, by an admin) and revoke sessions and token.

        A user choosing their own may not keep the current (one-time) password, and the new one must
        pass the strength check; an admin's one-time password is generated or long enough.
        """
        await self.require(name)
        check_password(password, name, 0 if must_change else self._min_score)
        key = self._keys.user(name)
        current = await self._client.hget(key, "pw")
        if not must_change and current and await self._matches(current.decode(), password):
            raise BadRequest("choose a new password, not the current one")
        pipe = self._client.pipeline(transaction=True)
        pipe.hset(
            key,
            mapping={
                "pw": await self._hash(password),
                "must_change": "1" if must_change else "0",
                "otp_until": str(self.clock() + self._otp_ttl) if must_change else "0",
            },
        )
        self._revoke(pipe, name, await self._client.hget(key, "token"))
        await pipe.execute()

    async def delete(self, name: str) -> None:
        user = await self.require(name)
        token = await self._client.hget(self._keys.user(name), "token")
        pipe = self._client.pipeline(transaction=True)
        # The hash goes, and with it the generation: a name re-created later gets a new one, so
        # sessions of the deleted user never become sessions of the new one.
        pipe.delete(self._keys.user(user.name))
        pipe.srem(self._keys.users, user.name)
        if token:
            pipe.delete(self._keys.token(token.decode()))
        await pipe.execute()

    async def _matches(self, stored: str, password: str) -> bool:
        try:
            await self._argon2(self._hasher.verify, stored, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
        return True

    async def verify(self, name: str, password: str) -> User | None:
        """The user when ``password`` is theirs, else None (also for unknown names).

        Raises PasswordExpired for a right one-time password past its lifetime (said only after
        the password was checked, so it tells an attacker nothing).
        """
        key = self._keys.user(name)
        stored = await self._client.hmget(key, "pw", "must_change", "otp_until") if NAME_RE.match(name) else None
        if not stored or not stored[0]:
            # Hash anyway, so that a wrong name costs as long as a wrong password.
            await self._hash(password)
            return None
        if not await self._matches(stored[0].decode(), password):
            return None
        if stored[1] == b"1" and 0 < float(stored[2] or 0) < self.clock():
            raise PasswordExpired("this one-time password has expired: ask an admin for a new one")
        return await self.get(name)

    async def issue_token(self, name: str, scope: Scope = "admin", ttl_s: int | None = None) -> str:
        """A new API token for ``name`` with ``scope`` (capped by the role); the previous one stops.

        Expires after ``ttl_s`` (default ``web.token_ttl_s``; 0 = never) or when the user's
        generation changes (password, role, groups, deletion).
        """
        user = await self.require(name)
        if scope not in SCOPES:
            raise BadRequest(f"scope must be one of {', '.join(SCOPES)}")
        if scope == "admin" and not user.is_admin:
            scope = "reply"
        ttl = self._token_ttl if ttl_s is None else ttl_s
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        digest = self.digest(token)
        record = json.dumps({"user": name, "gen": user.gen, "scope": scope, "until": self.clock() + ttl if ttl else 0})
        old = await self._client.hget(self._keys.user(name), "token")
        pipe = self._client.pipeline(transaction=True)
        if old:
            pipe.delete(self._keys.token(old.decode()))
        pipe.set(self._keys.token(digest), record, ex=ttl or None)
        pipe.hset(self._keys.user(name), "token", digest)
        await pipe.execute()
        return token

    async def revoke_token(self, name: str) -> None:
        token = await self._client.hget(self._keys.user(name), "token")
        pipe = self._client.pipeline(transaction=True)
        if token:
            pipe.delete(self._keys.token(token.decode()))
        pipe.hdel(self._keys.user(name), "token")
        await pipe.execute()

    async def by_token(self, token: str) -> User | None:
        if not token.startswith(TOKEN_PREFIX) or len(token) > 128:
            return None
        raw = await self._client.get(self._keys.token(self.digest(token)))
        if not raw:
            return None
        record = json.loads(raw)
        user = await self.get(record["user"])
        if user is None or user.gen != record.get("gen") or 0 < float(record.get("until") or 0) < self.clock():
            return None
        scope: Scope = record.get("scope", "admin")
        return User(user.name, user.role, user.groups, user.must_change, user.created, True, user.gen, scope)

    async def count(self) -> int:
        return int(await self._client.scard(self._keys.users))

    async def ensure_first_admin(self, password: str | None) -> str | None:
        """Create user ``admin`` when there is no user at all.

        Returns the generated one-time password when it made one (the caller prints it), None when
        the admin already existed or ``password`` was configured.
        """
        if await self.count():
            return None
        try:
            made = await self.add(FIRST_ADMIN, "admin", (), password)
        except Conflict:
            return None
        return made if password is None else None


@dataclass(frozen=True, slots=True)
class Session:
    user: str
    csrf: str
    created: float
    gen: str = ""


class Sessions:
    """Server-side sessions with a TTL; the cookie holds the id, Redis a keyed digest of it."""

    def __init__(self, client: aioredis.Redis, keys: Keys, users: Users, ttl_s: int) -> None:
        self._client = client
        self._keys = keys
        self._users = users
        self._ttl = ttl_s

    async def create(self, user: User) -> tuple[str, Session]:
        sid = secrets.token_urlsafe(32)
        session = Session(user.name, secrets.token_urlsafe(32), time.time(), user.gen)
        record = json.dumps(
            {"user": session.user, "csrf": session.csrf, "created": session.created, "gen": session.gen}
        )
        await self._client.set(self._keys.session(self._users.digest(sid)), record, ex=self._ttl)
        return sid, session

    async def get(self, sid: str) -> tuple[Session, User] | None:
        """The session and its user, or None when unknown, expired or of an older generation."""
        if not sid or len(sid) > 128:
            return None
        raw = await self._client.get(self._keys.session(self._users.digest(sid)))
        if not raw:
            return None
        d = json.loads(raw)
        session = Session(d["user"], d["csrf"], float(d["created"]), d.get("gen", ""))
        user = await self._users.get(session.user)
        if user is None or user.gen != session.gen:
            await self.delete(sid)
            return None
        return session, user

    async def delete(self, sid: str) -> None:
        await self._client.delete(self._keys.session(self._users.digest(sid)))


class LoginLimiter:
    """Login and password-form attempts, counted before the check (see the module docstring)."""

    def __init__(self, client: aioredis.Redis, keys: Keys, web: WebSettings) -> None:
        self._client = client
        self._keys = keys
        self._web = web
        self._script = client.register_script((resources.files("router") / "lua" / "login.lua").read_text())

    def _keys_for(self, name: str, ip: str) -> list[str]:
        who = name[:64]
        return [
            self._keys.ratelimit("login-pair", f"{who}|{ip}"),
            self._keys.ratelimit("login-ip", ip),
            self._keys.ratelimit("login-user", who),
        ]

    async def attempt(self, name: str, ip: str) -> None:
        """Count one attempt; raise RateLimited (nothing checked) when over a limit or too early."""
        web = self._web
        wait_ms = int(
            await self._script(
                keys=self._keys_for(name, ip),
                args=[
                    int(time.time() * 1000),
                    web.login_window_s * 1000,
                    web.login_max_failures,
                    web.login_max_failures_per_ip,
                    web.login_max_failures,
                    web.login_max_delay_s * 1000,
                ],
            )
        )
        if wait_ms:
            raise RateLimited(max(1, math.ceil(wait_ms / 1000)))

    async def succeeded(self, name: str, ip: str) -> None:
        """The password was right: this user's counters start again (the address's keeps counting)."""
        pair, _, user = self._keys_for(name, ip)
        await self._client.delete(pair, user)


async def user_groups(client: aioredis.Redis, keys: Keys, names: list[str]) -> dict[str, tuple[str, ...]]:
    """The groups of each named console user that exists (the agents' groups by default:
    router/presence.py), in one pipelined round."""
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.hget(keys.user(name), "groups")
    return {name: tuple(json.loads(raw)) for name, raw in zip(names, await pipe.execute(), strict=True) if raw}
