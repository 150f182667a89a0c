"""The knowledge base's articles: one article, a variant per language, and the whole base.

An article is the unit an answerer picks; its variants are the same answer written in each
language. What the answerer and an agent need of an article is the same in every variant (tags,
the groups it serves, whether it may be sent by itself), so the loader refuses variants that
disagree on it (kb/loader.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import msgspec

__all__ = ["LANGS", "Article", "KnowledgeBase", "Variant"]

#: The language variants an article may have: zh is Simplified, zh-Hant Traditional Chinese.
LANGS = ("zh", "zh-Hant", "en", "ru", "es", "tr", "vi", "pt", "ko")


class Variant(msgspec.Struct, frozen=True):
    """An article in one language: its title and its Markdown body."""

    lang: str
    title: str
    body: str


class Article(msgspec.Struct, frozen=True):
    """An article: its id, tags, the groups it serves, whether the answerer may send it by itself
    (``auto``; false: only suggested to agents), and its variants by language."""

    id: str
    tags: tuple[str, ...]
    groups: tuple[str, ...]
    auto: bool
    variants: dict[str, Variant]

    def variant(self, lang: str | None, fallback: str = "en") -> Variant:
        """The variant in ``lang``; else in ``fallback``; else the first one in ``LANGS`` order.
        A Traditional-Chinese reader gets the Simplified variant before an English one and the
        other way round."""
        related = {"zh": "zh-Hant", "zh-Hant": "zh"}
        for want in (lang, related.get(lang or ""), fallback):
            if want in self.variants:
                return self.variants[want]
        return next(self.variants[x] for x in LANGS if x in self.variants)


class KnowledgeBase:
    """Articles in id order, and the digest of their content (the version an index is built for)."""

    __slots__ = ("_by_id", "articles", "digest")

    def __init__(self, articles: Iterable[Article]) -> None:
        self.articles = tuple(sorted(articles, key=lambda a: a.id))
        self._by_id = {a.id: a for a in self.articles}
        if len(self._by_id) != len(self.articles):
            raise ValueError("two articles with the same id")
        #: sha256 of the articles' canonical encoding, first 12 hex digits.
        self.digest = hashlib.sha256(msgspec.json.encode(self.articles)).hexdigest()[:12]

    def __len__(self) -> int:
        return len(self.articles)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, KnowledgeBase) and other.articles == self.articles

    __hash__ = None  # type: ignore[assignment]

    def get(self, article_id: str) -> Article:
        """The article of ``article_id`` (``KeyError`` if none)."""
        return self._by_id[article_id]

    def ids(self) -> tuple[str, ...]:
        return tuple(self._by_id)
