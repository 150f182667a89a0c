"""Telegram updates to envelopes: which messages Switchboard takes, and how they are keyed.

Pure functions over aiogram's types, no I/O, so the rules are easy to read and to test.

A ``callback_query`` (a tap on a reply's inline button) becomes a ``Press`` (``press_of``) in the
conversation of the chat (and topic) of the message that carried the button.

Keys (the router relies on them): ``platform_id = "{chat_id}:{message_id}"`` (an edit appends
``":edit:{edit_date}"``), ``conversation_key = "{chat_id}"`` or ``"{chat_id}:{thread_id}"`` for a
forum topic; ``meta`` holds ``chat_id``, ``message_id``, ``chat_type`` and ``thread_id`` (topics).

A forwarded message is the user showing us someone else's words, usually a stranger's DM ("is this
really your support?"): ``meta["forwarded_from"]`` names where it came from, as Telegram tells
(``Origin``), so the agent reads it as a quote, and the sender attribute ``forwarded`` (``user``,
``hidden_user``, ``chat``, ``channel``) lets a rule tell it from the user's own words. The urls
behind text links ("click here") are kept in ``meta["links"]``, one a line.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiogram.types import (
    CallbackQuery,
    Message,
    MessageEntity,
    MessageOriginChannel,
    MessageOriginChat,
    MessageOriginHiddenUser,
    MessageOriginUser,
    Update,
)

from router.channel import Attachment, Envelope, Press, Sender, new_id, now

CHANNEL = "telegram"
#: The update types the adapter asks for (getUpdates / setWebhook ``allowed_updates``).
#: ``callback_query``: presses of a reply's buttons; ``chat_member`` (joins, seen by a bot that is a
#: group admin) feeds the impostor check (guard.py).
ALLOWED_UPDATES = ["message", "edited_message", "callback_query", "chat_member"]
GROUP_TYPES = frozenset({"group", "supergroup"})


@dataclass(frozen=True, slots=True)
class BotIdentity:
    """Who the bot is (from getMe): needed to tell whether a group message addresses it."""

    id: int
    username: str


@dataclass(frozen=True, slots=True)
class Policy:
    """Where the bot takes messages from."""

    allowed_chats: frozenset[int]
    private_chats: bool = True


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a forwarded message came from: its kind (``user``, ``hidden_user``, ``chat``,
    ``channel``), the account's id where Telegram gives one, its names (display name, username)."""

    kind: str
    id: int | None
    names: tuple[str, ...]

    @property
    def label(self) -> str:
        """How an agent sees it: "Anna Support (@anna_help, id 666)"."""
        name, *handles = self.names
        extra = [f"@{h}" for h in handles if h] + ([f"id {self.id}"] if self.id is not None else [])
        return f"{name} ({', '.join(extra)})" if extra else name


def origin_of(msg: Message) -> Origin | None:
    """Where ``msg`` was forwarded from (None: it was not)."""
    origin = msg.forward_origin
    if isinstance(origin, MessageOriginUser):
        user = origin.sender_user
        return Origin("user", user.id, (user.full_name, user.username or ""))
    if isinstance(origin, MessageOriginHiddenUser):
        return Origin("hidden_user", None, (origin.sender_user_name,))
    if isinstance(origin, MessageOriginChat | MessageOriginChannel):
        chat = origin.sender_chat if isinstance(origin, MessageOriginChat) else origin.chat
        title = chat.title or chat.full_name or str(chat.id)
        if origin.author_signature:
            title = f"{origin.author_signature}, {title}"
        return Origin(origin.type, chat.id, (title, chat.username or ""))
    return None


#: At most this many hidden links are kept of one message.
MAX_LINKS = 10


def hidden_links(msg: Message) -> list[str]:
    """The targets of the message's text links ("click here" over a url): the text shows only the
    words, and a forwarded phishing message's url is what the agent needs to report it."""
    entities = msg.entities or msg.caption_entities or []
    urls = [e.url for e in entities if e.type == "text_link" and e.url]
    return list(dict.fromkeys(urls))[:MAX_LINKS]


@dataclass(frozen=True, slots=True)
class Ignored:
    """An update Switchboard does not take, with the reason (for logs and counters)."""

    reason: str
    # Set when a group that is not configured addressed the bot: how an operator learns its id.
    unknown_chat: int | None = None


def convert(update: Update, account: str, me: BotIdentity, policy: Policy) -> Envelope | Ignored:
    """The envelope for ``update``, or why it is ignored."""
    msg, edited = (update.message, False) if update.message is not None else (update.edited_message, True)
    if msg is None:
        return Ignored("not a message")
    chat = msg.chat
    user = msg.from_user
    if user is None or user.is_bot:
        # Other bots (and anonymous admins, who post as a bot) are never answered automatically:
        # two robots answering each other would loop.
        return Ignored("sent by a bot or anonymously")
    if chat.type == "private":
        if not policy.private_chats:
            return Ignored("private chats disabled")
    elif chat.type in GROUP_TYPES:
        if not addresses_bot(msg, me):
            return Ignored("group message not addressed to the bot")
        if chat.id not in policy.allowed_chats:
            return Ignored(f"chat {chat.id} not in allowed_chats", unknown_chat=chat.id)
    else:
        return Ignored(f"chat type {chat.type}")
    text = msg.text or msg.caption or ""
    files = attachments(msg)
    if not text and not files:
        return Ignored("no text or attachment (service message)")
    topic = msg.message_thread_id if msg.is_topic_message else None
    key = f"{chat.id}:{topic}" if topic is not None else str(chat.id)
    platform_id = f"{chat.id}:{msg.message_id}"
    when = msg.date.timestamp()
    if edited:
        stamp = msg.edit_date or int(when)
        platform_id = f"{platform_id}:edit:{stamp}"
        when = float(stamp)
    meta = {"chat_id": str(chat.id), "message_id": str(msg.message_id), "chat_type": chat.type}
    if topic is not None:
        meta["thread_id"] = str(topic)
    attributes = {"chat_type": chat.type}
    if user.language_code:
        # The app's UI language, not the message's: a rule may use it, but it is not given as the
        # language hint, which would switch the rules' language detection off.
        attributes["language_code"] = user.language_code
    origin = origin_of(msg)
    if origin is not None:
        attributes["forwarded"] = origin.kind
        meta["forwarded_from"] = origin.label
    if links := hidden_links(msg):
        meta["links"] = "\n".join(links)
    replied = msg.reply_to_message
    reply_to = None
    if replied is not None and not _is_topic_root(msg, replied):
        reply_to = f"{chat.id}:{replied.message_id}"
    return Envelope(
        id=new_id(),
        channel=CHANNEL,
        account=account,
        platform_id=platform_id,
        conversation_key=key,
        sender=Sender(id=str(user.id), name=user.full_name, handle=user.username or "", attributes=attributes),
        text=text,
        attachments=files,
        received_at=when,
        reply_to=reply_to,
        kind="edit" if edited else "message",
        meta=meta,
    )


def press_of(query: CallbackQuery, account: str) -> Press | Ignored:
    """The press of a tap on an inline button, or why it is not taken.

    The data must be one of the buttons of the message it came from when that message is visible
    (a modified client may send any data); a message older than Telegram shows (an
    ``InaccessibleMessage``, no keyboard) is taken on the data alone, which the press's consumer
    checks against what it sent anyway.
    """
    msg = query.message
    if msg is None:
        return Ignored("callback query without a message (an inline-mode button, not ours)")
    if not query.data:
        return Ignored("callback query without data (a game button)")
    if isinstance(msg, Message):
        markup = msg.reply_markup
        offered = {b.callback_data for row in (markup.inline_keyboard if markup else []) for b in row}
        if query.data not in offered:
            return Ignored(f"callback data {query.data!r} is not a button of message {msg.chat.id}:{msg.message_id}")
        topic = msg.message_thread_id if msg.is_topic_message else None
    else:
        topic = None  # an inaccessible message does not say its topic: the chat's conversation
    key = f"{msg.chat.id}:{topic}" if topic is not None else str(msg.chat.id)
    return Press(
        id=query.id,
        channel=CHANNEL,
        account=account,
        conversation_key=key,
        user=str(query.from_user.id),
        data=query.data,
        at=now(),
    )


def addresses_bot(msg: Message, me: BotIdentity) -> bool:
    """A group message is for the bot when it mentions it, runs ``/command@bot`` or replies to it."""
    replied = msg.reply_to_message
    if (
        replied is not None
        and replied.from_user is not None
        and replied.from_user.id == me.id
        and not _is_topic_root(msg, replied)
    ):
        return True
    text = msg.text or msg.caption or ""
    entities: list[MessageEntity] = msg.entities or msg.caption_entities or []
    handle = "@" + me.username.casefold()
    for entity in entities:
        if entity.type == "text_mention" and entity.user is not None and entity.user.id == me.id:
            return True
        if entity.type in ("mention", "bot_command"):
            # Offsets are in UTF-16 code units; extract_from converts.
            value = entity.extract_from(text).casefold()
            if (entity.type == "mention" and value == handle) or (
                entity.type == "bot_command" and value.endswith(handle)
            ):
                return True
    return False


def _is_topic_root(msg: Message, replied: Message) -> bool:
    # In a forum topic every message "replies" to the topic's first message (id == thread id);
    # that is not a reply to the bot, even when the bot opened the topic.
    return bool(msg.is_topic_message) and replied.message_id == msg.message_thread_id


def attachments(msg: Message) -> tuple[Attachment, ...]:
    """Metadata of the message's media; the bytes stay on Telegram until an agent asks for them."""
    out: list[Attachment] = []
    if msg.photo:
        # Telegram sends several sizes of one photo; keep the largest.
        best = max(msg.photo, key=lambda p: p.width * p.height)
        out.append(Attachment(name="photo.jpg", type="photo", size=best.file_size, ref=best.file_id))
    if msg.animation:
        a = msg.animation
        out.append(Attachment(name=a.file_name or "animation.mp4", type="animation", size=a.file_size, ref=a.file_id))
    elif msg.document:
        # An animation also carries a ``document`` copy of itself for old clients: take it once.
        d = msg.document
        out.append(Attachment(name=d.file_name or "document", type="document", size=d.file_size, ref=d.file_id))
    if msg.voice:
        v = msg.voice
        out.append(Attachment(name="voice.ogg", type="voice", size=v.file_size, ref=v.file_id))
    if msg.audio:
        au = msg.audio
        out.append(Attachment(name=au.file_name or "audio", type="audio", size=au.file_size, ref=au.file_id))
    if msg.video:
        vi = msg.video
        out.append(Attachment(name=vi.file_name or "video.mp4", type="video", size=vi.file_size, ref=vi.file_id))
    if msg.video_note:
        n = msg.video_note
        out.append(Attachment(name="video_note.mp4", type="video_note", size=n.file_size, ref=n.file_id))
    if msg.sticker:
        s = msg.sticker
        name = f"sticker {s.emoji}" if s.emoji else "sticker"
        out.append(Attachment(name=name, type="sticker", size=s.file_size, ref=s.file_id))
    return tuple(out)
