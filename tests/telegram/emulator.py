"""A local Telegram Bot API emulator: real HTTP on loopback, speaking the Bot API's JSON.

It implements what the adapter uses, with the semantics that matter for it:

- ``/bot{token}/{method}`` with form-encoded (or multipart) bodies; a wrong token gets 401;
- ``getMe``; ``getUpdates`` (``offset`` confirms and drops older updates, ``timeout`` holds the
  request open until an update arrives, 409 while a webhook is set); ``sendMessage`` (4096 UTF-16
  units at most, returns a valid Message, records ``reply_markup``); ``answerCallbackQuery``
  (recorded in ``answers``; an unknown or already answered query id gets 400 like Telegram's
  "query is too old"); ``getFile`` and ``/file/bot{token}/{path}``;
  ``setWebhook`` / ``deleteWebhook`` / ``getWebhookInfo``;
- scripted failures (``fail``): the next N calls of a method answer with an error, e.g. 429 with
  ``parameters.retry_after``, or 403 "bot was blocked by the user";
- webhook delivery (``deliver``) POSTs an update to the registered URL with the secret header;
- a tap on an inline button (``push_press``): a ``callback_query`` update carrying the bot's
  message as Telegram returned it (its ``reply_markup`` included).

Message builders generate ``entities`` for @mentions and /commands as Telegram does (offsets in
UTF-16 code units), so the adapter's addressing rules are tested against realistic updates.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

TOKEN = "123456:TEST-emulator_token"
BOT_ID = 123456
BOT_USERNAME = "SwitchboardTestBot"

_ENTITY = re.compile(r"(?P<command>/[A-Za-z0-9_]+(?:@[A-Za-z0-9_]+)?)|(?<!\w)(?P<mention>@[A-Za-z0-9_]{3,})")


def _u16(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def entities(text: str) -> list[dict[str, Any]]:
    """The mention / bot_command entities Telegram would attach to ``text``."""
    out = []
    for m in _ENTITY.finditer(text):
        kind = "bot_command" if m.group("command") else "mention"
        if kind == "bot_command" and m.start() > 0 and not text[m.start() - 1].isspace():
            continue
        out.append({"type": kind, "offset": _u16(text[: m.start()]), "length": _u16(m.group())})
    return out


@dataclass
class Failure:
    status: int
    description: str
    parameters: dict[str, Any] | None = None


@dataclass
class Emulator:
    token: str = TOKEN
    bot_id: int = BOT_ID
    username: str = BOT_USERNAME
    url: str = ""
    updates: list[dict[str, Any]] = field(default_factory=list)
    calls: list[tuple[str, dict[str, str], float]] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    #: The Message objects sendMessage returned, in order (a press is a tap under one of them).
    sent_messages: list[dict[str, Any]] = field(default_factory=list)
    #: Every answered callback query: {"callback_query_id", "text", "show_alert"}.
    answers: list[dict[str, Any]] = field(default_factory=list)
    polls: list[dict[str, Any]] = field(default_factory=list)
    webhook: dict[str, str] | None = None
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    max_concurrent_polls: int = 0
    #: Names the process behind a getUpdates caller's address (host, port), recorded as the poll's
    #: ``who``: tests with several client processes tell which one polled.
    identify: Callable[[tuple[str, int]], Any] | None = None

    def __post_init__(self) -> None:
        self._failures: dict[str, list[Failure | None]] = {}
        self._ids = itertools.count(1001)
        self._query_ids = itertools.count(9_000_001)
        self._open_queries: set[str] = set()
        self._message_ids = itertools.count(5001)
        self._arrived = asyncio.Event()
        self._closing = asyncio.Event()
        self._active_polls = 0
        self._chats: dict[int, dict[str, Any]] = {}
        self._runner: web.AppRunner | None = None

    # -- server --------------------------------------------------------------------------------
    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/bot{token}/{method}", self._api)
        app.router.add_get("/file/bot{token}/{path:.+}", self._file)
        # A short shutdown timeout: an open long poll must not hold the test up (protocol notes).
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def close(self) -> None:
        self._closing.set()
        self._arrived.set()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- test controls ------------------------------------------------------------------------
    def fail(
        self,
        method: str,
        status: int,
        description: str,
        *,
        retry_after: int | None = None,
        times: int = 1,
        after: int = 0,
    ) -> None:
        """After ``after`` more successful calls, the next ``times`` calls of ``method`` fail so."""
        params = {"retry_after": retry_after} if retry_after is not None else None
        queue = self._failures.setdefault(method, [])
        queue.extend([None] * after + [Failure(status, description, params)] * times)

    def push(self, update: dict[str, Any]) -> dict[str, Any]:
        """Queue an update (``update_id`` assigned here) for getUpdates."""
        update = {"update_id": next(self._ids), **update}
        self.updates.append(update)
        self._arrived.set()
        return update

    def user(self, uid: int = 777, first_name: str = "Alice", username: str | None = "alice") -> dict[str, Any]:
        u: dict[str, Any] = {"id": uid, "is_bot": False, "first_name": first_name, "language_code": "en"}
        if username:
            u["username"] = username
        return u

    def bot_user(self) -> dict[str, Any]:
        return {"id": self.bot_id, "is_bot": True, "first_name": "Support", "username": self.username}

    def chat(self, chat_id: int, kind: str | None = None, *, forum: bool = False) -> dict[str, Any]:
        kind = kind or ("private" if chat_id > 0 else "supergroup")
        c: dict[str, Any] = {"id": chat_id, "type": kind}
        if kind == "private":
            c["first_name"] = "Alice"
        else:
            c["title"] = f"group {chat_id}"
            if forum:
                c["is_forum"] = True
        self._chats[chat_id] = c
        return c

    def message(
        self,
        chat: dict[str, Any],
        text: str | None = None,
        *,
        sender: dict[str, Any] | None = None,
        thread_id: int | None = None,
        reply_to: dict[str, Any] | None = None,
        caption: str | None = None,
        **media: Any,
    ) -> dict[str, Any]:
        """A Message object, with entities for its mentions and commands."""
        m: dict[str, Any] = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": chat,
            "from": sender or self.user(),
        }
        if text is not None:
            m["text"] = text
            if ents := entities(text):
                m["entities"] = ents
        if caption is not None:
            m["caption"] = caption
            if ents := entities(caption):
                m["caption_entities"] = ents
        if thread_id is not None:
            m["message_thread_id"] = thread_id
            m["is_topic_message"] = True
            # Telegram makes every topic message a reply to the topic's creation message.
            m.setdefault(
                "reply_to_message",
                {
                    "message_id": thread_id,
                    "date": m["date"],
                    "chat": chat,
                    "from": self.user(1, "Admin", "admin"),
                    "forum_topic_created": {"name": "topic", "icon_color": 7322096},
                },
            )
        if reply_to is not None:
            m["reply_to_message"] = reply_to
        m.update(media)
        return m

    def push_message(self, chat: dict[str, Any], text: str | None = None, **kw: Any) -> dict[str, Any]:
        return self.push({"message": self.message(chat, text, **kw)})

    def push_chat_member(
        self, chat: dict[str, Any], user: dict[str, Any], old: str = "left", new: str = "member"
    ) -> dict[str, Any]:
        """A ``chat_member`` update (what an admin bot gets when a member joins, leaves, changes)."""
        changed = {
            "chat": chat,
            "from": user,
            "date": int(time.time()),
            "old_chat_member": {"status": old, "user": user},
            "new_chat_member": {"status": new, "user": user},
        }
        return self.push({"chat_member": changed})

    def push_edit(self, original: dict[str, Any], text: str) -> dict[str, Any]:
        edited = {**original, "text": text, "edit_date": original["date"] + 5}
        edited.pop("entities", None)
        if ents := entities(text):
            edited["entities"] = ents
        return self.push({"edited_message": edited})

    def press_update(
        self, message: dict[str, Any], data: str, *, sender: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """A callback_query update for a tap on ``message``'s button with ``data`` (not queued)."""
        query_id = str(next(self._query_ids))
        self._open_queries.add(query_id)
        query = {
            "id": query_id,
            "from": sender or self.user(),
            "message": message,
            "chat_instance": f"ci{message['chat']['id']}",
            "data": data,
        }
        return {"update_id": next(self._ids), "callback_query": query}

    def push_press(self, message: dict[str, Any], data: str, **kw: Any) -> dict[str, Any]:
        """Queue a tap on ``message``'s button with ``data`` for getUpdates."""
        update = self.press_update(message, data, **kw)
        self.updates.append(update)
        self._arrived.set()
        return update

    def add_file(self, file_id: str, data: bytes) -> None:
        self.files[file_id] = (f"documents/{file_id}.bin", data)

    async def deliver(self, update: dict[str, Any], secret: str | None = "<registered>") -> int:
        """POST ``update`` to the registered webhook as Telegram does; returns the HTTP status."""
        assert self.webhook is not None, "no webhook registered"
        if secret == "<registered>":
            secret = self.webhook.get("secret_token")
        headers = {"X-Telegram-Bot-Api-Secret-Token": secret} if secret is not None else {}
        async with (
            aiohttp.ClientSession() as session,
            session.post(self.webhook["url"], json=update, headers=headers) as resp,
        ):
            return resp.status

    def methods(self) -> list[str]:
        return [name for name, _, _ in self.calls]

    def call_times(self, method: str) -> list[float]:
        return [at for name, _, at in self.calls if name == method]

    # -- Bot API ------------------------------------------------------------------------------
    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params = {k: str(v) for k, v in (await request.post()).items()}
        self.calls.append((method, params, time.monotonic()))
        if request.match_info["token"] != self.token:
            return _error(401, "Unauthorized")
        if (failures := self._failures.get(method)) and (f := failures.pop(0)) is not None:
            return _error(f.status, f.description, f.parameters)
        handler = getattr(self, f"_m_{method}", None)
        if handler is None:
            return _error(404, "Not Found: method not found")
        if method == "getUpdates" and self.identify is not None and request.transport is not None:
            # Not a Bot API parameter: the caller's name, for the poll's record.
            params["who"] = str(self.identify(request.transport.get_extra_info("peername")))
        result = await handler(params)
        return result if isinstance(result, web.Response) else web.json_response({"ok": True, "result": result})

    async def _m_getMe(self, params: dict[str, str]) -> Any:
        return {**self.bot_user(), "can_join_groups": True, "can_read_all_group_messages": False}

    async def _m_getUpdates(self, params: dict[str, str]) -> Any:
        if self.webhook is not None:
            return _error(409, "Conflict: can't use getUpdates method while webhook is active")
        offset = int(params.get("offset") or 0)
        timeout = float(params.get("timeout") or 0)
        limit = int(params.get("limit") or 100)
        at = time.monotonic()
        self.polls.append({"offset": offset or None, "timeout": timeout, "at": at, "who": params.get("who")})
        if offset:
            # Confirmation: updates below the offset are forgotten for good.
            self.updates = [u for u in self.updates if u["update_id"] >= offset]
        self._active_polls += 1
        self.max_concurrent_polls = max(self.max_concurrent_polls, self._active_polls)
        try:
            deadline = time.monotonic() + timeout
            while not self.updates and not self._closing.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), left)
                except TimeoutError:
                    break
        finally:
            self._active_polls -= 1
        return self.updates[:limit]

    async def _m_sendMessage(self, params: dict[str, str]) -> Any:
        text = params.get("text", "")
        if not text.strip():
            return _error(400, "Bad Request: message text is empty")
        if _u16(text) > 4096:
            return _error(400, "Bad Request: message is too long")
        chat_id = int(params["chat_id"])
        reply = json.loads(params["reply_parameters"]) if "reply_parameters" in params else None
        record = {
            "chat_id": chat_id,
            "text": text,
            "thread_id": int(params["message_thread_id"]) if "message_thread_id" in params else None,
            "reply_parameters": reply,
            "parse_mode": params.get("parse_mode"),
            "reply_markup": json.loads(params["reply_markup"]) if "reply_markup" in params else None,
            "at": time.monotonic(),
        }
        self.sent.append(record)
        msg: dict[str, Any] = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": self._chats.get(chat_id) or self.chat(chat_id),
            "from": self.bot_user(),
            "text": text,
        }
        if record["thread_id"] is not None:
            msg["message_thread_id"] = record["thread_id"]
            msg["is_topic_message"] = True
        if record["reply_markup"] is not None:
            msg["reply_markup"] = record["reply_markup"]
        self.sent_messages.append(msg)
        return msg

    async def _m_answerCallbackQuery(self, params: dict[str, str]) -> Any:
        query_id = params["callback_query_id"]
        if query_id not in self._open_queries:
            return _error(400, "Bad Request: query is too old and response timeout expired or query ID is invalid")
        self._open_queries.discard(query_id)
        self.answers.append(
            {"callback_query_id": query_id, "text": params.get("text"), "show_alert": params.get("show_alert")}
        )
        return True

    async def _m_getFile(self, params: dict[str, str]) -> Any:
        file_id = params["file_id"]
        if file_id not in self.files:
            return _error(400, "Bad Request: invalid file_id")
        path, data = self.files[file_id]
        return {"file_id": file_id, "file_unique_id": file_id[-8:], "file_size": len(data), "file_path": path}

    async def _m_setWebhook(self, params: dict[str, str]) -> Any:
        if not params.get("url", "").startswith(("http://", "https://")):
            return _error(400, "Bad Request: bad webhook: An HTTPS URL must be provided for webhook")
        self.webhook = {"url": params["url"], "secret_token": params.get("secret_token", "")}
        return True

    async def _m_deleteWebhook(self, params: dict[str, str]) -> Any:
        self.webhook = None
        return True

    async def _m_getWebhookInfo(self, params: dict[str, str]) -> Any:
        return {"url": (self.webhook or {}).get("url", ""), "has_custom_certificate": False, "pending_update_count": 0}

    async def _file(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["token"] != self.token:
            return web.Response(status=401)
        for path, data in self.files.values():
            if path == request.match_info["path"]:
                return web.Response(body=data)
        return web.Response(status=404)


def _error(status: int, description: str, parameters: dict[str, Any] | None = None) -> web.Response:
    body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
    if parameters:
        body["parameters"] = parameters
    return web.json_response(body, status=status)
