"""The knowledge base in the console: admins edit, validate, publish and roll back articles; agents
get the articles suggested for a conversation's latest message.

Over the store (router/kbstore.py), with the access checks (router/console/access.py): everything
but suggestions needs an admin; suggestions are asked with a conversation the caller was allowed
to see (``Console.detail`` checked it). An edit is a change to the knowledge base in force (files
added, replaced or removed), validated and published whole, so two admins editing different
articles at the same time both keep their change.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import yaml

from router.accounts import User
from router.conversations import Conversation, HistoryEntry
from router.errors import BadRequest, NotFound
from router.kbstore import KBRefused, KBVersion, KnowledgeBaseStore, files_of

from .access import require_admin

if TYPE_CHECKING:
    import kb

log = logging.getLogger("switchboard.console")

#: How long a suggestions request waits for the answerer (its first build after a start or a
#: publish can take seconds to minutes); then it answers "building" and the page asks again.
SUGGEST_WAIT_S = 5.0
#: Suggestions kept per (message, version): a page re-asks on every live update.
SUGGEST_CACHE = 2000


@dataclass(frozen=True, slots=True)
class Checked:
    """A proposed knowledge base: its files, and the base or every problem."""

    files: dict[str, str]
    base: kb.KnowledgeBase | None
    errors: list[str]

    @property
    def ok(self) -> bool:
        return self.base is not None


def path_of(text: str) -> str:
    """The file a variant's text belongs to, from its front matter's ``id`` and ``lang``."""
    parts = text.lstrip("\ufeff").split("\n---", 1)
    try:
        meta = yaml.safe_load(parts[0].removeprefix("---")) if text.startswith("---") and len(parts) == 2 else None
    except yaml.YAMLError:
        meta = None
    if not isinstance(meta, dict) or not isinstance(meta.get("id"), str) or not isinstance(meta.get("lang"), str):
        raise BadRequest("a new article's text starts with front matter naming its id and lang (--- id: ... ---)")
    return f"{meta['id']}/{meta['lang']}.md"


def article_rows(base: kb.KnowledgeBase) -> list[dict[str, Any]]:
    """The articles as the admin's list shows them (the English title, else the first)."""
    return [
        {
            "id": a.id,
            "title": a.variant("en").title,
            "languages": list(a.variants),
            "tags": list(a.tags),
            "groups": list(a.groups),
            "auto": a.auto,
        }
        for a in base.articles
    ]


class KBConsole:
    def __init__(self, store: KnowledgeBaseStore) -> None:
        self.store = store
        self._suggested: OrderedDict[tuple[str, int | None], dict[str, Any]] = OrderedDict()

    # -- admins --------------------------------------------------------------------------------
    async def in_force(self, user: User) -> tuple[KBVersion | None, kb.KnowledgeBase]:
        """The published version in force (None: unpublished) and its knowledge base."""
        require_admin(user)
        number, base = await self.store.in_force()
        return (await self.store.get(number) if number is not None else None), base

    async def file(self, user: User, path: str) -> str:
        """One variant's file in the knowledge base in force."""
        _, base = await self.in_force(user)
        files = files_of(base)
        if path not in files:
            raise NotFound(f"article file {path}")
        return files[path]

    async def check(
        self, user: User, files: Mapping[str, str], remove: Sequence[str] = (), *, whole: bool = False
    ) -> Checked:
        """The knowledge base in force with ``files`` added or replaced and ``remove`` (files, or
        whole articles by id) taken out — or, ``whole``, ``files`` alone — validated whole."""
        require_admin(user)
        if whole:
            proposed = dict(files)
        else:
            _, base = await self.store.in_force()
            proposed = {**files_of(base), **files}
        for name in remove:
            gone = [p for p in proposed if p == name or p.split("/")[0] == name]
            if not gone:
                raise BadRequest(f"nothing to remove: {name} is not an article or file of the knowledge base")
            for p in gone:
                del proposed[p]
        try:
            return Checked(proposed, await self.store.validate(proposed), [])
        except KBRefused as exc:
            return Checked(proposed, None, exc.errors)

    async def publish(self, user: User, checked: Checked, comment: str, request_id: str | None = None) -> KBVersion:
        require_admin(user)
        if not checked.ok:
            raise KBRefused(checked.errors)
        number = await self.store.publish(checked.files, author=user.name, comment=comment, request_id=request_id)
        return await self.store.get(number)

    async def rollback(self, user: User, to: int | None, request_id: str | None = None) -> KBVersion:
        require_admin(user)
        number = await self.store.rollback(author=user.name, to=to, request_id=request_id)
        return await self.store.get(number)

    async def history(self, user: User) -> list[dict[str, str]]:
        require_admin(user)
        return await self.store.history(100)

    async def version(self, user: User, number: int) -> KBVersion:
        require_admin(user)
        return await self.store.get(number)

    async def diff(self, user: User, a: int, b: int) -> dict[str, str]:
        require_admin(user)
        return await self.store.diff(a, b)

    def draft_from_reply(self, user: User, conv: Conversation, history: list[HistoryEntry], reply: str) -> str:
        """A new article's file pre-filled with an agent's reply of ``conv`` (admins only)."""
        import kb

        require_admin(user)
        found = next((h for h in history if h.type == "outbound" and str(h.data.get("id")) == reply), None)
        if found is None or found.data.get("auto"):
            raise NotFound(f"agent reply {reply} in conversation {conv.id}")
        body = str(found.data.get("text", "")).strip()
        lang = conv.language if conv.language in kb.LANGS else "en"
        title = (body.splitlines() or ["New article"])[0][:80]
        draft = kb.Variant(lang, title, body)
        return kb.dump_variant(kb.Article("new-article", (), (conv.group,), False, {lang: draft}), lang)

    # -- agents --------------------------------------------------------------------------------
    async def suggestions(self, conv: Conversation, history: list[HistoryEntry]) -> dict[str, Any] | None:
        """The top three articles for the conversation's latest inbound message, in the user's
        language (computed in a thread, once per message and version); None while the answerer
        of the version in force is still being built."""
        inbound = [h for h in history if h.type == "inbound"]
        if not inbound:
            return {"version": None, "message": None, "lang": conv.language, "suggestions": []}
        latest = inbound[-1].data
        message = str(latest.get("msg", inbound[-1].id))
        try:
            number, answerer = await asyncio.wait_for(self.store.answerer(), SUGGEST_WAIT_S)
        except TimeoutError:
            return None
        key = (message, number)
        if (done := self._suggested.get(key)) is not None:
            self._suggested.move_to_end(key)
            return done
        lang = str(latest.get("decision", {}).get("language") or conv.language or "en")
        # The stored text: secrets the rules redacted stay masked here too.
        answer = await asyncio.to_thread(answerer.answer, str(latest.get("text", "")), lang)
        result = {
            "version": number,
            "message": message,
            "lang": lang,
            "suggestions": [
                {
                    "article": s.article.id,
                    "lang": s.variant.lang,
                    "title": s.variant.title,
                    "text": s.variant.body,
                    "score": round(s.score, 4),
                    "auto": s.article.auto,
                }
                for s in answer.suggestions
            ],
        }
        self._suggested[key] = result
        while len(self._suggested) > SUGGEST_CACHE:
            self._suggested.popitem(last=False)
        return result
