"""A local Discord: the REST API over HTTP and the gateway over a websocket, for the real client.

Just enough of Discord for discord.py 2 and the adapter: login (``/users/@me``, the application),
the gateway (HELLO, heartbeats, IDENTIFY -> READY + GUILD_CREATE, RESUME -> replay + RESUMED or
INVALID_SESSION, dispatches of MESSAGE_CREATE / MESSAGE_UPDATE / MESSAGE_DELETE / THREAD_CREATE,
GUILD_MEMBER_ADD / GUILD_MEMBER_UPDATE to sessions with the Server Members intent), channels, message
history with ``after``, sending messages (every body is recorded; components are kept on the
message), private threads, guild application commands, and interactions: ``press`` dispatches a
button's component INTERACTION_CREATE, ``slash`` a slash command's, and the interaction callback
endpoint records the answer (``responses``; no bot token there, as on Discord: the interaction's
token is in the path; an interaction answered twice gets 40060, an unknown one 10062). Point
discord.py at it with ``Emulator.patch(monkeypatch)``.

Faithful where it matters to the adapter: responses are exactly ``application/json`` (discord.py
fails on ``; charset=utf-8``), message content is blanked without the message-content intent and
the gateway closes with 4014 when that intent (or Server Members) is requested but not enabled,
guild messages carry their author's ``member`` (nickname) as Discord sends them, 401 on a bad token,
history is newest first.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
import yarl
from aiohttp import WSMsgType, web

DISCORD_EPOCH_MS = 1_420_070_400_000
MESSAGE_CONTENT = 1 << 15
GUILD_MEMBERS = 1 << 1

Json = dict[str, Any]


def _json(data: Any, status: int = 200) -> web.Response:
    # Exactly "application/json": aiohttp's json_response adds "; charset=utf-8", which discord.py
    # does not take for JSON (it then fails with "string indices must be integers").
    return web.Response(body=json.dumps(data).encode(), status=status, headers={"Content-Type": "application/json"})


def _error(status: int, code: int, message: str) -> web.Response:
    return _json({"code": code, "message": message}, status)


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat()


@dataclass
class Session:
    """A gateway session: survives its websocket, so that it can be resumed."""

    id: str
    intents: int
    seq: int = 0
    ws: web.WebSocketResponse | None = None
    backlog: list[Json] = field(default_factory=list)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Emulator:
    def __init__(
        self,
        token: str,
        guilds: dict[int, list[int]],
        *,
        message_content_enabled: bool = True,
        members_intent_enabled: bool = True,
    ) -> None:
        self.token = token
        self.message_content_enabled = message_content_enabled
        self.members_intent_enabled = members_intent_enabled
        #: (guild id, user id) -> the member's server nickname.
        self.nicks: dict[tuple[int, str], str] = {}
        #: (guild id) -> the application commands registered there (PUT .../guilds/{id}/commands).
        self.commands: dict[int, list[Json]] = {}
        self.allow_resume = True
        self._ms = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
        self._counter = itertools.count(1)
        self.bot = self.user("switchboard-bot", bot=True)
        self.app_id = self.snowflake()
        self.guilds: dict[int, Json] = {}
        self.channels: dict[int, Json] = {}
        self.messages: dict[int, list[Json]] = {}
        self.thread_members: dict[int, set[int]] = {}
        for guild_id, channel_ids in guilds.items():
            self.guilds[guild_id] = {"id": str(guild_id), "name": f"guild {guild_id}"}
            for channel_id in channel_ids:
                self.channels[channel_id] = {
                    "id": str(channel_id),
                    "type": 0,
                    "guild_id": str(guild_id),
                    "name": f"support-{channel_id}",
                    "position": len(self.channels),
                    "permission_overwrites": [],
                    "nsfw": False,
                    "parent_id": None,
                    "topic": None,
                    "rate_limit_per_user": 0,
                    "last_message_id": None,
                }
        #: Every POST to /channels/{id}/messages: {"channel_id": int, "body": the JSON body}.
        self.sent: list[Json] = []
        #: Every request, as "METHOD path", for assertions on what the client asked.
        self.requests: list[str] = []
        #: channel id -> (status, code, message) to answer the next sends with.
        self.fail_sends: dict[int, tuple[int, int, str]] = {}
        #: channel id -> retry_after (s): sends there are answered 429 as Discord's rate limiter does.
        self.rate_limit_sends: dict[int, float] = {}
        self._dms: dict[str, int] = {}  # user id -> DM channel id
        #: Whether the bot has Manage Messages (may delete other users' messages).
        self.manage_messages = True
        #: Every message the bot deleted (DELETE /channels/{id}/messages/{id}), as (channel id, message id).
        self.deleted: list[tuple[int, int]] = []
        #: Attachment id -> its bytes, served by the CDN route while the url's signature is valid.
        self.files: dict[int, bytes] = {}
        #: Added to the wall clock for CDN url expiry (``ex``): +25 h makes every url signed now stale.
        self.time_shift = 0.0
        #: Every interaction callback: {"interaction_id", "body": the JSON body, "after_s": since the dispatch}.
        self.responses: list[Json] = []
        self._interactions: dict[int, tuple[str, float]] = {}  # id -> (token, dispatched at), until answered
        self.sessions: dict[str, Session] = {}
        self.identifies = 0
        self.resumes = 0
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- ids and objects -----------------------------------------------------------------------------
    def snowflake(self) -> int:
        """A fresh id, increasing, with a timestamp close to now (as Discord's)."""
        now = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
        self._ms = max(self._ms, now)
        return ((self._ms - DISCORD_EPOCH_MS) << 22) | (next(self._counter) & 0x3FFFFF)

    def user(self, name: str, *, bot: bool = False) -> Json:
        return {
            "id": str(self.snowflake()),
            "username": name,
            "discriminator": "0",
            "global_name": name.title(),
            "avatar": None,
            "bot": bot,
        }

    def dm(self, user: Json) -> int:
        """The DM channel between the bot and ``user`` (created on first use)."""
        if user["id"] in self._dms:
            return self._dms[user["id"]]
        channel_id = self.snowflake()
        self.channels[channel_id] = {"id": str(channel_id), "type": 1, "recipients": [user], "last_message_id": None}
        self._dms[user["id"]] = channel_id
        return channel_id

    async def create_thread(
        self, parent_id: int, name: str, *, owner: Json | None = None, private: bool = False
    ) -> int:
        """A thread under ``parent_id``, announced with THREAD_CREATE."""
        parent = self.channels[parent_id]
        thread_id = self.snowflake()
        thread = {
            "id": str(thread_id),
            "type": 12 if private else 11,
            "guild_id": parent["guild_id"],
            "parent_id": str(parent_id),
            "owner_id": (owner or self.bot)["id"],
            "name": name,
            "message_count": 0,
            "member_count": 1,
            "rate_limit_per_user": 0,
            "last_message_id": None,
            "thread_metadata": {
                "archived": False,
                "auto_archive_duration": 1440,
                "archive_timestamp": _iso(self._ms),
                "locked": False,
            },
        }
        self.channels[thread_id] = thread
        await self.dispatch("THREAD_CREATE", {**thread, "newly_created": True})
        return thread_id

    def attachment(self, filename: str, data: bytes, content_type: str = "application/octet-stream") -> Json:
        """An attachment to pass to ``post(..., attachments=[...])``; its url is signed when posted."""
        attachment_id = self.snowflake()
        self.files[attachment_id] = data
        return {"id": str(attachment_id), "filename": filename, "size": len(data), "content_type": content_type}

    def _signed(self, message: Json) -> Json:
        """The message with its attachments' CDN urls signed for 24 h from now, as Discord does."""
        expires = int(time.time() + self.time_shift + 86400)
        base = f"http://127.0.0.1:{self.port}/cdn/attachments/{message['channel_id']}"

        def sign(attachments: list[Json]) -> list[Json]:
            urls = [f"{base}/{a['id']}/{a['filename']}?ex={expires:x}&hm=sig" for a in attachments]
            return [{**a, "url": url, "proxy_url": url} for a, url in zip(attachments, urls, strict=True)]

        snapshots = [
            {"message": {**s["message"], "attachments": sign(s["message"]["attachments"])}}
            for s in message.get("message_snapshots", [])
        ]
        signed = {**message, "attachments": sign(message["attachments"])}
        return {**signed, "message_snapshots": snapshots} if snapshots else signed

    def store(self, channel_id: int, author: Json, content: str, **extra: Any) -> Json:
        """A message kept in the channel's history without an event (posted while nobody listened)."""
        channel = self.channels[channel_id]
        msg_id = self.snowflake()
        data: Json = {
            "id": str(msg_id),
            "channel_id": str(channel_id),
            "author": author,
            "content": content,
            "timestamp": _iso(self._ms),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "pinned": False,
            "type": 0,
            "flags": 0,
        }
        if "guild_id" in channel:
            data["guild_id"] = channel["guild_id"]
            data["member"] = self._member(int(channel["guild_id"]), author, with_user=False)
        data.update(extra)
        self.messages.setdefault(channel_id, []).append(data)
        channel["last_message_id"] = str(msg_id)
        return data

    def _visible(self, message: Json, session: Session | None) -> Json:
        # Without the message-content intent Discord blanks the text of messages not sent to the bot.
        if session is None or session.intents & MESSAGE_CONTENT or "guild_id" not in message:
            return message
        return {**message, "content": "", "attachments": [], "embeds": []}

    async def post(self, channel_id: int, author: Json, content: str, **extra: Any) -> Json:
        """A user posts a message: stored in the channel's history and dispatched as MESSAGE_CREATE."""
        message = self.store(channel_id, author, content, **extra)
        await self.dispatch("MESSAGE_CREATE", self._signed(message))
        return self._signed(message)

    async def edit(self, message: Json, content: str) -> Json:
        message["content"] = content
        message["edited_timestamp"] = dt.datetime.now(dt.UTC).isoformat()
        await self.dispatch("MESSAGE_UPDATE", self._signed(message))
        return message

    async def delete(self, message: Json) -> None:
        channel_id = int(message["channel_id"])
        self.messages[channel_id] = [m for m in self.messages[channel_id] if m["id"] != message["id"]]
        payload = {"id": message["id"], "channel_id": message["channel_id"]}
        if "guild_id" in message:
            payload["guild_id"] = message["guild_id"]
        await self.dispatch("MESSAGE_DELETE", payload)

    async def press(self, message: Json, custom_id: str, user: Json) -> int:
        """``user`` presses the button ``custom_id`` under ``message``: a component interaction is
        dispatched (INTERACTION_CREATE, as Discord sends it to a gateway bot); returns its id."""
        channel = self.channels[int(message["channel_id"])]
        interaction_id = self.snowflake()
        token = uuid.uuid4().hex
        self._interactions[interaction_id] = (token, time.monotonic())
        data: Json = {
            "id": str(interaction_id),
            "application_id": str(self.app_id),
            "type": 3,
            "token": token,
            "version": 1,
            "data": {"custom_id": custom_id, "component_type": 2},
            "channel_id": message["channel_id"],
            "channel": channel,
            "message": self._signed(message),
            "locale": "en-US",
            "app_permissions": "0",
            "attachment_size_limit": 10 * 1024 * 1024,
            "entitlements": [],
            "authorizing_integration_owners": {},
        }
        if "guild_id" in channel:
            data["guild_id"] = channel["guild_id"]
            data["context"] = 0
            joined = _iso(self._ms)
            data["member"] = {"user": user, "roles": [], "joined_at": joined, "deaf": False, "mute": False, "flags": 0}
        else:
            data["context"] = 1
            data["user"] = user
        await self.dispatch("INTERACTION_CREATE", data)
        return interaction_id

    def _member(self, guild_id: int, user: Json, *, with_user: bool = True) -> Json:
        member: Json = {
            "nick": self.nicks.get((guild_id, user["id"])),
            "roles": [],
            "joined_at": _iso(self._ms),
            "deaf": False,
            "mute": False,
            "flags": 0,
        }
        return {**member, "user": user} if with_user else member

    async def member_join(self, guild_id: int, user: Json) -> None:
        """``user`` joins the guild: GUILD_MEMBER_ADD (to sessions with the Server Members intent)."""
        await self.dispatch(
            "GUILD_MEMBER_ADD", {**self._member(guild_id, user), "guild_id": str(guild_id)}, GUILD_MEMBERS
        )

    async def member_update(self, guild_id: int, user: Json, *, nick: str | None = None) -> None:
        """The member changes their nickname (or, with ``user`` changed, their names): GUILD_MEMBER_UPDATE."""
        if nick is not None:
            self.nicks[(guild_id, user["id"])] = nick
        await self.dispatch(
            "GUILD_MEMBER_UPDATE", {**self._member(guild_id, user), "guild_id": str(guild_id)}, GUILD_MEMBERS
        )

    async def slash(self, channel_id: int, user: Json, command: str, options: list[Json], resolved: Json) -> int:
        """``user`` runs a slash command in ``channel_id``: INTERACTION_CREATE; returns the interaction id."""
        channel = self.channels[channel_id]
        guild_id = int(channel["guild_id"])
        registered = {c["name"]: c for c in self.commands.get(guild_id, [])}
        assert command in registered, f"/{command} is not registered on guild {guild_id}"
        interaction_id = self.snowflake()
        token = uuid.uuid4().hex
        self._interactions[interaction_id] = (token, time.monotonic())
        await self.dispatch(
            "INTERACTION_CREATE",
            {
                "id": str(interaction_id),
                "application_id": str(self.app_id),
                "type": 2,
                "data": {
                    "id": registered[command]["id"],
                    "name": command,
                    "type": 1,
                    "guild_id": str(guild_id),
                    "options": options,
                    "resolved": resolved,
                },
                "guild_id": str(guild_id),
                "channel_id": str(channel_id),
                "channel": channel,
                "member": {**self._member(guild_id, user), "permissions": "0"},
                "token": token,
                "version": 1,
                "app_permissions": "0",
                "locale": "en-US",
                "guild_locale": "en-US",
                "entitlements": [],
                "authorizing_integration_owners": {"0": str(guild_id)},
                "context": 0,
                "attachment_size_limit": 10 * 1024 * 1024,
            },
        )
        return interaction_id

    # -- gateway -------------------------------------------------------------------------------------
    async def dispatch(self, event: str, data: Json, intent: int = 0) -> None:
        """Send an event to every live session (that asked for ``intent``); a disconnected session
        keeps it for a RESUME."""
        for session in list(self.sessions.values()):
            if intent and not session.intents & intent:
                continue
            async with session.lock:
                session.seq += 1
                payload = {"op": 0, "t": event, "s": session.seq, "d": self._visible(data, session)}
                session.backlog.append(payload)
                if session.ws is not None and not session.ws.closed:
                    with contextlib.suppress(ConnectionError):
                        await session.ws.send_str(json.dumps(payload))

    async def drop(self, *, resumable: bool = False) -> None:
        """Close every gateway websocket (code 4000); ``resumable=False`` forgets the sessions too."""
        self.allow_resume = resumable
        sockets = [s.ws for s in self.sessions.values() if s.ws is not None]
        if not resumable:
            self.sessions.clear()
        for ws in sockets:
            await ws.close(code=4000, message=b"emulator dropped the connection")

    async def close_gateway(self, code: int, reason: str) -> None:
        """Discord ending every session for good: 4004 after a token reset (the old token is then
        refused), 4014 after the Message Content intent was switched off (refused from now on)."""
        if code == 4004:
            self.token = "reset-" + self.token
        if code == 4014:
            self.message_content_enabled = False
        sockets = [s.ws for s in self.sessions.values() if s.ws is not None]
        self.sessions.clear()
        for ws in sockets:
            await ws.close(code=code, message=reason.encode())

    async def lock_thread(self, thread_id: int) -> None:
        """A moderator archives and locks the thread: only Manage Threads may post there again."""
        thread = self.channels[thread_id]
        thread["thread_metadata"] = {**thread["thread_metadata"], "archived": True, "locked": True}
        await self.dispatch("THREAD_UPDATE", thread)

    def forum(self, guild_id: int) -> int:
        """A forum channel in the guild: no messages of its own, every post is a thread under it."""
        channel_id = self.snowflake()
        self.channels[channel_id] = {
            "id": str(channel_id),
            "type": 15,
            "guild_id": str(guild_id),
            "name": f"forum-{channel_id}",
            "position": len(self.channels),
            "permission_overwrites": [],
            "nsfw": False,
            "parent_id": None,
            "topic": None,
            "rate_limit_per_user": 0,
            "last_message_id": None,
            "available_tags": [],
            "default_reaction_emoji": None,
            "flags": 0,
        }
        return channel_id

    def history_requests(self) -> list[int]:
        """The channels whose history was requested, one entry per request, in order."""
        return [int(r.split("/")[4]) for r in self.requests if r.startswith("GET ") and r.endswith("/messages")]

    def _guild_create(self, guild_id: int) -> Json:
        channels = [c for c in self.channels.values() if c.get("guild_id") == str(guild_id)]
        active = [c for c in channels if c["type"] in (11, 12) and not c["thread_metadata"]["archived"]]
        return {
            **self.guilds[guild_id],
            "unavailable": False,
            "member_count": 2,
            "roles": [{"id": str(guild_id), "name": "@everyone", "permissions": "68608", "position": 0}],
            "members": [],
            "channels": [c for c in channels if c["type"] not in (11, 12)],
            "threads": active,
            "emojis": [],
            "stickers": [],
            "features": [],
            "voice_states": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
        }

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        session: Session | None = None
        await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": 41250}}))
        async for frame in ws:
            if frame.type != WSMsgType.TEXT:
                break
            msg = json.loads(frame.data)
            op, data = msg.get("op"), msg.get("d")
            if op == 1:
                await ws.send_str(json.dumps({"op": 11}))
            elif op == 2:
                if data.get("token") != self.token:
                    await ws.close(code=4004, message=b"Authentication failed.")
                    break
                intents = int(data.get("intents", 0))
                if (intents & MESSAGE_CONTENT and not self.message_content_enabled) or (
                    intents & GUILD_MEMBERS and not self.members_intent_enabled
                ):
                    await ws.close(code=4014, message=b"Disallowed intent(s).")
                    break
                self.identifies += 1
                self.allow_resume = True
                session = Session(uuid.uuid4().hex, intents, ws=ws)
                await self._identify(session)
            elif op == 6:
                session = self.sessions.get(data.get("session_id", ""))
                if session is None or not self.allow_resume:
                    await ws.send_str(json.dumps({"op": 9, "d": False}))
                    continue
                self.resumes += 1
                async with session.lock:
                    session.ws = ws
                    for payload in session.backlog:
                        if payload["s"] > int(data.get("seq") or 0):
                            await ws.send_str(json.dumps(payload))
                    session.seq += 1
                    await ws.send_str(json.dumps({"op": 0, "t": "RESUMED", "s": session.seq, "d": {}}))
        if session is not None and session.ws is ws:
            session.ws = None
        return ws

    async def _identify(self, session: Session) -> None:
        url = f"ws://127.0.0.1:{self.port}/gw"
        ready = {
            "v": 10,
            "user": self.bot,
            "guilds": [{"id": str(g), "unavailable": True} for g in self.guilds],
            "session_id": session.id,
            "resume_gateway_url": url,
            "application": {"id": str(self.app_id), "flags": 0},
            "private_channels": [],
        }
        async with session.lock:
            # Registered under the lock: no event can slip between READY and the session's start.
            self.sessions[session.id] = session
            for event, data in [("READY", ready)] + [("GUILD_CREATE", self._guild_create(g)) for g in self.guilds]:
                session.seq += 1
                payload = {"op": 0, "t": event, "s": session.seq, "d": data}
                session.backlog.append(payload)
                assert session.ws is not None
                await session.ws.send_str(json.dumps(payload))

    # -- REST ----------------------------------------------------------------------------------------
    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append(f"{request.method} {request.path}")
        # Interaction callbacks carry no bot token: the interaction's own token is their credential.
        interaction = request.path.startswith("/api/v10/interactions/")
        if (
            request.path.startswith("/api/")
            and not interaction
            and request.headers.get("Authorization") != f"Bot {self.token}"
        ):
            return _error(401, 0, "401: Unauthorized")
        response: web.StreamResponse = await handler(request)
        return response

    async def _me(self, request: web.Request) -> web.Response:
        return _json(self.bot)

    async def _application(self, request: web.Request) -> web.Response:
        return _json(
            {
                "id": str(self.app_id),
                "name": "Switchboard",
                "description": "",
                "icon": None,
                "bot_public": False,
                "bot_require_code_grant": False,
                "owner": self.user("owner"),
                "verify_key": "0" * 64,
                "flags": 1 << 19,  # GATEWAY_MESSAGE_CONTENT_LIMITED
            }
        )

    async def _gateway_info(self, request: web.Request) -> web.Response:
        url = f"ws://127.0.0.1:{self.port}/gw"
        limits = {"total": 1000, "remaining": 1000, "reset_after": 0, "max_concurrency": 1}
        return _json({"url": url, "shards": 1, "session_start_limit": limits})

    def _channel_or_404(self, request: web.Request) -> Json | None:
        return self.channels.get(int(request.match_info["channel"]))

    async def _get_channel(self, request: web.Request) -> web.Response:
        channel = self._channel_or_404(request)
        return _json(channel) if channel else _error(404, 10003, "Unknown Channel")

    async def _history(self, request: web.Request) -> web.Response:
        channel_id = int(request.match_info["channel"])
        if channel_id not in self.channels:
            return _error(404, 10003, "Unknown Channel")
        if self.channels[channel_id]["type"] == 15:
            return _error(400, 50024, "Cannot execute action on this channel type")
        limit = min(int(request.query.get("limit", 50)), 100)
        messages = self.messages.get(channel_id, [])
        if "after" in request.query:
            after = int(request.query["after"])
            # The `limit` messages right after `after`, answered newest first like Discord.
            page = [m for m in messages if int(m["id"]) > after][:limit]
        else:
            before = int(request.query.get("before", 1 << 63))
            page = [m for m in messages if int(m["id"]) < before][-limit:]
        return _json([self._signed(m) for m in reversed(page)])

    async def _send(self, request: web.Request) -> web.Response:
        channel_id = int(request.match_info["channel"])
        if channel_id not in self.channels:
            return _error(404, 10003, "Unknown Channel")
        body = await request.json()
        self.sent.append({"channel_id": channel_id, "body": body})
        if self.channels[channel_id].get("thread_metadata", {}).get("locked"):
            return _error(400, 50083, "Cannot execute action on an archived thread")
        if channel_id in self.fail_sends:
            status, code, text = self.fail_sends[channel_id]
            return _error(status, code, text)
        if channel_id in self.rate_limit_sends:
            retry_after = self.rate_limit_sends[channel_id]
            body = {"message": "You are being rate limited.", "retry_after": retry_after, "global": False}
            # discord.py takes a 429 without `Via` for a Cloudflare ban, not a rate limit.
            headers = {"Content-Type": "application/json", "Via": "1.1 google", "Retry-After": str(int(retry_after))}
            return web.Response(body=json.dumps(body).encode(), status=429, headers=headers)
        content = body.get("content") or ""
        if len(content) > 2000:
            return _error(400, 50035, "Invalid Form Body: content: Must be 2000 or fewer in length.")
        extra: Json = {}
        if body.get("message_reference"):
            extra = {"type": 19, "message_reference": body["message_reference"]}
        if body.get("components"):
            extra["components"] = body["components"]
        message = self.store(channel_id, self.bot, content, **extra)
        await self.dispatch("MESSAGE_CREATE", message)
        return _json(message)

    async def _get_message(self, request: web.Request) -> web.Response:
        channel_id, message_id = int(request.match_info["channel"]), request.match_info["message"]
        found = [m for m in self.messages.get(channel_id, []) if m["id"] == message_id]
        return _json(self._signed(found[0])) if found else _error(404, 10008, "Unknown Message")

    async def _interaction_callback(self, request: web.Request) -> web.Response:
        interaction_id = int(request.match_info["interaction"])
        if interaction_id not in self._interactions and interaction_id in {r["interaction_id"] for r in self.responses}:
            return _error(400, 40060, "Interaction has already been acknowledged.")
        known = self._interactions.pop(interaction_id, None)
        if known is None or known[0] != request.match_info["token"]:
            return _error(404, 10062, "Unknown interaction")
        body = await request.json()
        self.responses.append({"interaction_id": interaction_id, "body": body, "after_s": time.monotonic() - known[1]})
        if not request.query.get("with_response"):
            return web.Response(status=204)
        ephemeral = bool(((body.get("data") or {}).get("flags") or 0) & 64)
        answer = {
            "id": str(interaction_id),
            "type": 3,
            "response_message_id": str(self.snowflake()),
            "response_message_loading": False,
            "response_message_ephemeral": ephemeral,
        }
        return _json({"interaction": answer})

    async def _cdn(self, request: web.Request) -> web.Response:
        data = self.files.get(int(request.match_info["attachment"]))
        if data is None or int(request.query.get("ex", "0"), 16) < time.time() + self.time_shift:
            return web.Response(status=404, text="This content is no longer available.")
        return web.Response(body=data, headers={"Content-Type": "application/octet-stream"})

    async def _delete_message(self, request: web.Request) -> web.Response:
        channel_id, message_id = int(request.match_info["channel"]), request.match_info["message"]
        found = [m for m in self.messages.get(channel_id, []) if m["id"] == message_id]
        if not found:
            return _error(404, 10008, "Unknown Message")
        if found[0]["author"]["id"] != self.bot["id"] and not self.manage_messages:
            return _error(403, 50013, "Missing Permissions")
        self.deleted.append((channel_id, int(message_id)))
        await self.delete(found[0])
        return web.Response(status=204)

    async def _start_thread(self, request: web.Request) -> web.Response:
        channel_id = int(request.match_info["channel"])
        if channel_id not in self.channels:
            return _error(404, 10003, "Unknown Channel")
        body = await request.json()
        thread_id = await self.create_thread(channel_id, body.get("name", "thread"), private=body.get("type") == 12)
        return _json(self.channels[thread_id], 201)

    async def _add_thread_member(self, request: web.Request) -> web.Response:
        thread_id = int(request.match_info["channel"])
        self.thread_members.setdefault(thread_id, set()).add(int(request.match_info["user"]))
        return web.Response(status=204)

    # -- lifecycle -----------------------------------------------------------------------------------
    async def _put_guild_commands(self, request: web.Request) -> web.Response:
        if int(request.match_info["app"]) != self.app_id:
            return _error(403, 50001, "Missing Access")
        guild_id = int(request.match_info["guild"])
        commands = [
            {
                **c,
                "id": str(self.snowflake()),
                "application_id": str(self.app_id),
                "guild_id": str(guild_id),
                "version": str(self.snowflake()),
                "default_member_permissions": None,
                "nsfw": False,
            }
            for c in await request.json()
        ]
        self.commands[guild_id] = commands
        return _json(commands)

    async def start(self) -> None:
        app = web.Application(middlewares=[self._auth])
        api = "/api/v10"
        app.router.add_get("/gw", self._gateway)
        app.router.add_get(f"{api}/users/@me", self._me)
        app.router.add_get(f"{api}/oauth2/applications/@me", self._application)
        app.router.add_get(f"{api}/gateway", self._gateway_info)
        app.router.add_get(f"{api}/gateway/bot", self._gateway_info)
        app.router.add_get(f"{api}/channels/{{channel}}", self._get_channel)
        app.router.add_get(f"{api}/channels/{{channel}}/messages", self._history)
        app.router.add_post(f"{api}/channels/{{channel}}/messages", self._send)
        app.router.add_get(f"{api}/channels/{{channel}}/messages/{{message}}", self._get_message)
        app.router.add_delete(f"{api}/channels/{{channel}}/messages/{{message}}", self._delete_message)
        app.router.add_get("/cdn/attachments/{channel}/{attachment}/{filename}", self._cdn)
        app.router.add_post(f"{api}/interactions/{{interaction}}/{{token}}/callback", self._interaction_callback)
        app.router.add_post(f"{api}/channels/{{channel}}/threads", self._start_thread)
        app.router.add_put(f"{api}/channels/{{channel}}/thread-members/{{user}}", self._add_thread_member)
        app.router.add_put(f"{api}/applications/{{app}}/guilds/{{guild}}/commands", self._put_guild_commands)
        # shutdown_timeout: do not wait the default 60 s for the client's open websocket.
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None and server.sockets  # type: ignore[attr-defined]
        self.port = int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]

    async def close(self) -> None:
        for session in self.sessions.values():
            if session.ws is not None:
                await session.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def patch(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Point discord.py (REST and gateway) at this emulator for the test."""
        import discord.gateway
        import discord.http

        monkeypatch.setattr(discord.http.Route, "BASE", f"http://127.0.0.1:{self.port}/api/v10")
        monkeypatch.setattr(
            discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(f"ws://127.0.0.1:{self.port}/gw")
        )
