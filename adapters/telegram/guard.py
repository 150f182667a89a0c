"""Impostor defence in the groups a bot sits in, and ``/verify`` (docs/impostors.md).

Every update the bot receives is screened before it is converted: the sender of a group message
(addressed to the bot or not), members who join (``new_chat_members`` service messages and
``chat_member`` updates) and members seen under new names (a rename shows on their next message or
member update) are checked against the staff names by ``ChannelContext.impostors``. A flagged
member gets a case in the review queue; an ``impostor`` verdict also gets one warning in the group
(``[impostors] warn_in_group``). Nothing is banned or muted: moderators decide. The account a
forwarded message came from is checked too (a user showing us a stranger's DM, privately or in a
group): a lookalike gets a case, and the warning answers the forward in that chat.

``/verify`` (replying to someone's message, or ``/verify @username``) answers in the chat whether
that account is staff — by id. A ``@username`` is turned into an id only from what this bot saw
(members' messages and joins, remembered for ``USERNAME_TTL_S``): the Bot API cannot look a user
up by username.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Coroutine
from typing import Any

from aiogram import Bot
from aiogram.exceptions import AiogramError
from aiogram.types import Message, ReplyParameters, Update, User

from adapters.telegram.convert import CHANNEL, GROUP_TYPES, BotIdentity, origin_of
from adapters.telegram.outbound import RateLimiter
from router.channel import ChannelContext, ImpostorGuard

log = logging.getLogger("switchboard.telegram")

#: How long a username seen in a group resolves to its account for ``/verify @username``.
USERNAME_TTL_S = 30 * 86400
_REMEMBERED = 10_000


class GroupGuard:
    """One bot's screening of its groups and its ``/verify`` answers."""

    def __init__(
        self, ctx: ChannelContext, bot: Bot, account: str, limiter: RateLimiter, group_interval_s: float
    ) -> None:
        self._guard: ImpostorGuard = ctx.impostors
        self._store = ctx.store(CHANNEL)
        self._bot = bot
        self._account = account
        self._limiter = limiter
        self._interval = group_interval_s
        self._usernames: OrderedDict[str, int] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()

    async def screen(self, update: Update, me: BotIdentity) -> bool:
        """Check the members an update shows; True when it was a ``/verify`` (answered here, and
        not a support message)."""
        if update.chat_member is not None:
            changed = update.chat_member
            if changed.chat.type in GROUP_TYPES and changed.new_chat_member.status not in ("left", "kicked"):
                await self._check(changed.new_chat_member.user, changed.chat.id, f"joined chat {changed.chat.id}")
            return False
        msg = update.message or update.edited_message
        if msg is None:
            return False
        if msg.chat.type in GROUP_TYPES:
            for member in msg.new_chat_members or ():
                await self._check(member, msg.chat.id, f"joined chat {msg.chat.id}")
            if msg.from_user is not None:
                await self._check(msg.from_user, msg.chat.id, f"chat {msg.chat.id}")
        elif msg.chat.type != "private":
            return False
        origin = origin_of(msg)
        if origin is not None and origin.kind == "user" and origin.id is not None and update.message is not None:
            await self._check_forwarded(msg, origin.id, origin.names)
        if update.message is not None and _command(msg, me) == "/verify":
            await self._verify(msg)
            return True
        return False

    async def close(self) -> None:
        """Let warnings being sent finish (they are few, and short)."""
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)

    async def _check(self, user: User, chat_id: int, where: str) -> None:
        if user.is_bot:
            return
        await self._remember(user)
        names = [user.full_name, user.username or ""]
        flag = await self._guard.check(CHANNEL, self._account, str(user.id), names, where, user.language_code or "")
        if flag is not None and flag.warning is not None:
            self._spawn(self._say(chat_id, flag.warning, None))

    async def _check_forwarded(self, msg: Message, origin_id: int, names: tuple[str, ...]) -> None:
        """A stranger's DM forwarded to us ("is this your support?") or into a group: the account
        it came from is checked like a member, and a lookalike is answered with the warning under
        the forward. User accounts only: a channel or a group is never staff by id, and the
        exchange's own channels are not configured as staff."""
        forwarder = msg.from_user
        where = f"forwarded by {forwarder.id if forwarder else '?'} in chat {msg.chat.id}"
        language = (forwarder.language_code if forwarder else None) or ""
        warning = await self._guard.check_forwarded(CHANNEL, self._account, str(origin_id), names, where, language)
        if warning is not None:
            thread = msg.message_thread_id if msg.is_topic_message else None
            self._spawn(self._say(msg.chat.id, warning, msg.message_id, thread))

    async def _remember(self, user: User) -> None:
        if not user.username:
            return
        name = user.username.casefold()
        if self._usernames.get(name) == user.id:
            return
        await self._store.set(f"username:{self._account}:{name}", str(user.id), ttl_s=USERNAME_TTL_S)
        self._usernames[name] = user.id
        while len(self._usernames) > _REMEMBERED:
            self._usernames.popitem(last=False)

    async def _verify(self, msg: Message) -> None:
        target, label = await self._target(msg)
        if target is None:
            text = (
                f"I have not seen {label} in this group: reply to one of their messages with /verify."
                if label
                else "Reply to someone's message with /verify, or write /verify @username."
            )
        else:
            text = self._guard.verify_text(CHANNEL, str(target), label)
        await self._say(msg.chat.id, text, msg.message_id, msg.message_thread_id if msg.is_topic_message else None)

    async def _target(self, msg: Message) -> tuple[int | None, str]:
        """The account /verify asks about, and how to name it in the answer."""
        replied = msg.reply_to_message
        if replied is not None and replied.from_user is not None and not msg.is_topic_message:
            user = replied.from_user
            return user.id, f"@{user.username}" if user.username else user.full_name
        text = msg.text or ""
        for entity in msg.entities or ():
            if entity.type == "text_mention" and entity.user is not None:
                return entity.user.id, entity.user.full_name
            if entity.type == "mention":
                handle = entity.extract_from(text)
                raw = await self._store.get(f"username:{self._account}:{handle[1:].casefold()}")
                return (int(raw) if raw is not None else None), handle
        if replied is not None and replied.from_user is not None:
            user = replied.from_user  # in a forum topic, only a real reply names someone
            if replied.message_id != msg.message_thread_id:
                return user.id, f"@{user.username}" if user.username else user.full_name
        return None, ""

    async def _say(self, chat_id: int, text: str, reply_to: int | None, thread_id: int | None = None) -> None:
        await self._limiter.wait(chat_id, self._interval)
        reply = ReplyParameters(message_id=reply_to, allow_sending_without_reply=True) if reply_to else None
        try:
            await self._bot.send_message(
                chat_id=chat_id, text=text, reply_parameters=reply, message_thread_id=thread_id
            )
        except AiogramError as exc:
            # The case is in the review queue whatever happens here; a warning is best effort.
            log.warning("telegram bot %s: could not post in chat %s: %s", self._account, chat_id, exc)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _command(msg: Message, me: BotIdentity) -> str | None:
    """The bot command the message starts with (``/verify@ThisBot`` counts, another bot's not)."""
    text = msg.text or ""
    for entity in msg.entities or ():
        if entity.type == "bot_command" and entity.offset == 0:
            command, _, bot = entity.extract_from(text).partition("@")
            if not bot or bot.casefold() == me.username.casefold():
                return command.casefold()
    return None
