"""Choosing a text by the user's language: every localized text of Switchboard (incident status
texts, the safety notice, the impostor warning, the CSAT survey, the answer buttons) is a mapping
language code -> text with an English one, and is looked up the same way."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

__all__ = ["FALLBACK_LANGUAGE", "localized"]

#: Users whose language has no text get this one's; every localized text must have it.
FALLBACK_LANGUAGE = "en"

T = TypeVar("T")


def localized(texts: Mapping[str, T], lang: str | None) -> T:
    """The text in ``lang``, else in its base language (``zh-Hans`` finds ``zh``), else in
    ``FALLBACK_LANGUAGE`` (KeyError if ``texts`` lacks it: the texts' validators require it)."""
    lang = (lang or "").lower()
    found = texts.get(lang)
    if found is None:
        found = texts.get(lang.split("-", 1)[0])
    return found if found is not None else texts[FALLBACK_LANGUAGE]
