"""Identity and access for the console: local users, sessions, CSRF, login rate limiting, API tokens.

- Passwords are hashed with argon2id (argon2-cffi's defaults); verification runs in a thread
  because a hash costs tens of milliseconds of CPU.
- A session is a random id in an HttpOnly, SameSite=Lax cookie; Redis stores only a keyed digest
  of it (HMAC with the session secret), so reading Redis does not let anyone log in. Each session
  has its own CSRF token, required on every state-changing request that a cookie authenticates.
- API tokens (``Authorization: Bearer sbt_…``) are for scripts: no ambient credential, so no CSRF;
  stored as a keyed digest too, one token per user (issuing a new one revokes the old).
- Failed logins are counted per user name and per client address in a window; past the limit the
  login answers 429 without checking the password, so guessing costs the attacker the window.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any, Literal

import redis.asyncio as aioredis
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from router.config import WebSettings, read_secret
from router.errors import Conflict, NotFound, SwitchboardError
from router.keys import Keys

Role = Literal["admin", "agent"]
ROLES: tuple[Role, ...] = ("admin", "agent")
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
    """Too many failed logins; ``retry_after`` seconds until the window ends."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed logins; try again in {retry_after}s")
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class User:
    """A console user. Admins see every group; an agent sees only ``groups``."""

    name: str
    role: Role
    groups: tuple[str, ...]
    must_change: bool = False
    created: float = 0.0
    has_token: bool = False

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

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
        raise ValueError("a user name is 1-32 of a-z, 0-9, '.', '_', '-', starting with a letter or digit")
    return name


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"a password needs at least {MIN_PASSWORD} characters")
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

    def __init__(self, client: aioredis.Redis, keys: Keys, secret: bytes) -> None:
        self._client = client
        self._keys = keys
        self._secret = secret
        self._hasher = PasswordHasher()

    def digest(self, value: str) -> str:
        return hmac.new(self._secret, value.encode(), hashlib.sha256).hexdigest()

    @staticmethod
    def _from_hash(data: dict[bytes, bytes]) -> User:
        d = {k.decode(): v.decode() for k, v in data.items()}
        role: Role = "admin" if d.get("role") == "admin" else "agent"
        return User(
            name=d["name"],
            role=role,
            groups=tuple(json.loads(d.get("groups") or "[]")),
            must_change=d.get("must_change") == "1",
            created=float(d.get("created") or 0),
            has_token=bool(d.get("token")),
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

    async def _hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

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
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        generated = password is None
        password = secrets.token_urlsafe(12) if password is None else check_password(password)
        fields = {
            "name": name,
            "role": role,
            "groups": json.dumps(list(_clean_groups(groups))),
            "pw": await self._hash(password),
            "created": str(time.time()),
            "must_change": "1" if (generated if must_change is None else must_change) else "0",
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
                raise ValueError(f"role must be one of {', '.join(ROLES)}")
            fields["role"] = role
        if groups is not None:
            fields["groups"] = json.dumps(list(_clean_groups(groups)))
        if fields:
            await self._client.hset(self._keys.user(name), mapping=fields)
        return await self.require(name)

    async def set_password(self, name: str, password: str, *, must_change: bool = False) -> None:
        await self.require(name)
        check_password(password)
        await self._client.hset(
            self._keys.user(name),
            mapping={"pw": await self._hash(password), "must_change": "1" if must_change else "0"},
        )

    async def delete(self, name: str) -> None:
        user = await self.require(name)
        token = await self._client.hget(self._keys.user(name), "token")
        pipe = self._client.pipeline(transaction=True)
        pipe.delete(self._keys.user(user.name))
        pipe.srem(self._keys.users, user.name)
        if token:
            pipe.delete(self._keys.token(token.decode()))
        await pipe.execute()

    async def verify(self, name: str, password: str) -> User | None:
        """The user when ``password`` is theirs, else None (also for unknown names)."""
        stored = await self._client.hget(self._keys.user(name), "pw") if NAME_RE.match(name) else None
        if not stored:
            # Hash anyway, so that a wrong name costs as long as a wrong password.
            await asyncio.to_thread(self._hasher.hash, password)
            return None
        try:
            await asyncio.to_thread(self._hasher.verify, stored.decode(), password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        return await self.get(name)

    async def issue_token(self, name: str) -> str:
        """A new API token for ``name``; the previous one stops working."""
        await self.require(name)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        digest = self.digest(token)
        old = await self._client.hget(self._keys.user(name), "token")
        pipe = self._client.pipeline(transaction=True)
        if old:
            pipe.delete(self._keys.token(old.decode()))
        pipe.set(self._keys.token(digest), name)
        pipe.hset(self._keys.user(name), "token", digest)
        await pipe.execute()
        return token

    async def by_token(self, token: str) -> User | None:
        if not token.startswith(TOKEN_PREFIX):
            return None
        name = await self._client.get(self._keys.token(self.digest(token)))
        return await self.get(name.decode()) if name else None

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


class Sessions:
    """Server-side sessions with a TTL; the cookie holds the id, Redis a keyed digest of it."""

    def __init__(self, client: aioredis.Redis, keys: Keys, users: Users, ttl_s: int) -> None:
        self._client = client
        self._keys = keys
        self._users = users
        self._ttl = ttl_s

    async def create(self, user: str) -> tuple[str, Session]:
        sid = secrets.token_urlsafe(32)
        session = Session(user, secrets.token_urlsafe(32), time.time())
        record = json.dumps({"user": session.user, "csrf": session.csrf, "created": session.created})
        await self._client.set(self._keys.session(self._users.digest(sid)), record, ex=self._ttl)
        return sid, session

    async def get(self, sid: str) -> Session | None:
        if not sid or len(sid) > 128:
            return None
        raw = await self._client.get(self._keys.session(self._users.digest(sid)))
        if not raw:
            return None
        d = json.loads(raw)
        return Session(d["user"], d["csrf"], float(d["created"]))

    async def delete(self, sid: str) -> None:
        await self._client.delete(self._keys.session(self._users.digest(sid)))


class LoginLimiter:
    """Counts failed logins per user name and per client address in a fixed window."""

    def __init__(self, client: aioredis.Redis, keys: Keys, web: WebSettings) -> None:
        self._client = client
        self._keys = keys
        self._per_user = web.login_max_failures
        self._per_ip = web.login_max_failures_per_ip
        self._window = web.login_window_s

    def _targets(self, name: str, ip: str) -> list[tuple[str, int]]:
        return [
            (self._keys.ratelimit("login-user", name[:64]), self._per_user),
            (self._keys.ratelimit("login-ip", ip), self._per_ip),
        ]

    async def check(self, name: str, ip: str) -> None:
        """Raise RateLimited when either counter is at its limit."""
        pipe = self._client.pipeline(transaction=False)
        targets = self._targets(name, ip)
        for key, _ in targets:
            pipe.get(key)
            pipe.ttl(key)
        raw = await pipe.execute()
        for i, (_, limit) in enumerate(targets):
            count, ttl = raw[2 * i], raw[2 * i + 1]
            if count is not None and int(count) >= limit:
                raise RateLimited(max(1, int(ttl)))

    async def failed(self, name: str, ip: str) -> None:
        pipe = self._client.pipeline(transaction=True)
        for key, _ in self._targets(name, ip):
            # SET NX starts the window at the first failure; INCR keeps the TTL, so later failures
            # do not extend it (EXPIRE … NX would need Redis 7, and we support 6.2).
            pipe.set(key, 0, ex=self._window, nx=True)
            pipe.incr(key)
        await pipe.execute()

    async def succeeded(self, name: str) -> None:
        await self._client.delete(self._keys.ratelimit("login-user", name[:64]))
