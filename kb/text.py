"""Text to index terms, the same way for articles and questions, in every language variant.

* Normalised first as the rules normalise (rules/normalize.py: NFKC for full-width ``ＵＳＤＴ``,
  case folding, Traditional Chinese folded to Simplified, so a zh-Hant question meets the zh
  variant's words too) and, for Latin letters, accents dropped (users write ``deposito``,
  ``nap tien``, ``cekim``).
* Words of Latin or Cyrillic script are stemmed with the Snowball stemmer of the text's language
  (en, ru, es, tr, pt; PyStemmer), or with the English one for Latin words inside a zh, ko or ru
  text (``мой withdrawal``); Vietnamese syllables are kept and paired with their neighbour.
* Chinese has no spaces: every Han character and every pair of adjacent ones is a term. Korean
  glues particles to words: each Hangul word and its character pairs are terms.
* ``chargrams``: every word's character 3-grams as well (``#wi wit ith …``), which forgives typos
  and inflections the stemmers do not know.
"""

from __future__ import annotations

import functools
import re
import unicodedata

import Stemmer

from rules.normalize import normalize_keyword

__all__ = ["Analyzer", "normalize"]

STEMMERS = {"en": "english", "ru": "russian", "es": "spanish", "tr": "turkish", "pt": "portuguese"}
_HAN_CHARS = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_HANGUL_CHARS = "\uac00-\ud7af\u1100-\u11ff\u3130-\u318f"
_TOKEN = re.compile(f"[{_HAN_CHARS}]+|[{_HANGUL_CHARS}]+|[^\\W_{_HAN_CHARS}{_HANGUL_CHARS}]+")
_HAN = re.compile(f"[{_HAN_CHARS}]")
_HANGUL = re.compile(f"[{_HANGUL_CHARS}]")
_LATIN = re.compile(r"[a-z0-9]+")


def _fold_accents(text: str) -> str:
    decomposed = unicodedata.normalize("NFD", text.replace("đ", "d").replace("ı", "i").replace("ё", "е"))
    # Only Latin letters lose their marks: Cyrillic й and Korean jamo must survive.
    out: list[str] = []
    for ch in decomposed:
        if unicodedata.combining(ch) and out and "a" <= out[-1] <= "z":
            continue
        out.append(ch)
    return unicodedata.normalize("NFC", "".join(out))


def normalize(text: str) -> str:
    """NFKC, case folded, Traditional Chinese as Simplified, accents off Latin letters."""
    return _fold_accents(normalize_keyword(text))


@functools.cache
def _stemmer(lang: str) -> Stemmer.Stemmer | None:
    name = STEMMERS.get(lang)
    return Stemmer.Stemmer(name) if name else None


class Analyzer:
    """Text -> terms (a list, with repeats: term frequency counts) for one configuration."""

    def __init__(self, *, stem: bool = True, chargrams: bool = False) -> None:
        self.stem = stem
        self.chargrams = chargrams

    @property
    def name(self) -> str:
        return "words" + ("+stem" if self.stem else "") + ("+char3" if self.chargrams else "")

    def terms(self, text: str, lang: str) -> list[str]:
        out: list[str] = []
        words = _TOKEN.findall(normalize(text))
        base = "zh" if lang == "zh-Hant" else lang
        latin_stemmer = _stemmer(base) if base in ("es", "tr", "pt", "en") else _stemmer("en")
        previous = ""
        for word in words:
            if _HAN.match(word):
                out += list(word)
                out += [word[i : i + 2] for i in range(len(word) - 1)]
                previous = ""
                continue
            if _HANGUL.match(word):
                out.append(word)
                if len(word) > 2:
                    out += [word[i : i + 2] for i in range(len(word) - 1)]
                previous = ""
                continue
            term = word
            if self.stem:
                stemmer = latin_stemmer if _LATIN.fullmatch(word) else _stemmer(base)
                if stemmer is not None:
                    term = stemmer.stemWord(word)
            out.append(term)
            if base == "vi":
                if previous:
                    out.append(f"{previous}_{word}")
                previous = word
            if self.chargrams and len(word) > 3:
                padded = f"#{word}#"
                out += [padded[i : i + 3] for i in range(len(padded) - 2)]
        return out
