"""Which conversation an e-mail belongs to: a Message-ID -> thread root index in Redis.

The conversation key of a message is its thread root: the first Message-ID of References, else
In-Reply-To, else its own Message-ID. That alone breaks in two common cases, which the index fixes:

- a customer answers *our* reply: its In-Reply-To is a Message-ID we generated, which no inbound
  message ever carried; the sender records every outgoing Message-ID here before sending;
- a client that sends In-Reply-To without References (or a cut References): the parent's entry
  gives the root even though the headers do not name it.

Kept in the channel's store (``ctx.store("email")``), one string per Message-ID so that each
expires on its own (Redis 6.2 has no per-field TTL): ``mid:{account}:{message-id}`` ->
``"{root}\\n{normalised thread subject}"`` (Redis key ``{prefix}email:mid:{account}:{message-id}``).
"""

from __future__ import annotations

from adapters.email.mime import normalize_subject
from router.channel import ChannelContext
from rules import redact_secrets

#: The channel's store namespace (Redis keys ``{prefix}email:…``).
STORE = "email"


def related(thread_subject: str, subject: str) -> bool:
    """Whether ``subject`` still belongs to a thread about ``thread_subject`` (both normalised).

    Loose on purpose: a customer who appends "- still waiting" keeps the thread; one who replies to
    an old mail with a brand-new subject starts a new conversation, as Gmail does.
    """
    if not thread_subject or not subject:
        return True
    return thread_subject in subject or subject in thread_subject


class ThreadIndex:
    """Message-ID -> (thread root, thread subject) for one mailbox (account)."""

    def __init__(self, ctx: ChannelContext, account: str, ttl_s: int) -> None:
        self._store = ctx.store(STORE)
        self._account = account
        self._ttl_s = ttl_s

    def _key(self, message_id: str) -> str:
        return f"mid:{self._account}:{message_id}"

    async def lookup(self, message_ids: list[str]) -> tuple[str, str] | None:
        """The (root, subject) of the first of ``message_ids`` that is known, or None."""
        if not message_ids:
            return None
        for text in await self._store.get_many([self._key(mid) for mid in message_ids]):
            if text is not None:
                root, _, subject = text.partition("\n")
                return root, subject
        return None

    async def remember(self, message_id: str, root: str, subject: str) -> None:
        """Record that ``message_id`` belongs to the thread ``root`` about ``subject`` (normalised)."""
        if message_id:
            await self._store.set(self._key(message_id), f"{root}\n{subject}", ttl_s=self._ttl_s)

    async def resolve(
        self,
        *,
        own_id: str,
        fallback_id: str,
        in_reply_to: list[str],
        references: list[str],
        subject: str,
        split_on_new_subject: bool = True,
    ) -> tuple[str, str]:
        """The conversation key (thread root) and thread subject of an inbound message.

        ``own_id`` is the message's Message-ID ("" if it has none), ``fallback_id`` the id used
        when it has none. The message itself is recorded under its own id with the result.
        """
        # Masked, as everything stored (docs/security.md): a subject can hold a pasted secret too.
        norm = redact_secrets(normalize_subject(subject))
        # The message it answers first, then the rest of its ancestry, nearest first.
        parents = list(dict.fromkeys([*in_reply_to, *reversed(references)]))
        parents = [p for p in parents if p != own_id]
        known = await self.lookup(parents)
        me = own_id or fallback_id
        if known is not None:
            root, thread_subject = known
            if split_on_new_subject and not related(thread_subject, norm):
                root, thread_subject = me, norm
        else:
            root = (references[0] if references else "") or (in_reply_to[0] if in_reply_to else "") or me
            thread_subject = norm
        await self.remember(me, root, thread_subject)
        return root, thread_subject
