"""Text normalisation shared by keyword matching, regexes and rule keywords.

The transform is ``NFKC -> casefold() -> Traditional-to-Simplified Chinese (per character)``:

* NFKC folds full-width Latin (``ＢＴＣ`` -> ``BTC``), ligatures, circled/parenthesised forms and
  composes combining sequences (so an NFC pre-pass is unnecessary: NFKC already ends with
  canonical composition).
* ``casefold()`` rather than ``lower()`` so that ``ß`` matches ``ss`` and final sigma matches sigma.
* The T->S table is the set of single-character 1:1 mappings of zhconv's ``zh2Hans`` dictionary
  (8,505 characters, extracted at import in ~15 ms). OpenCC's ``t2s`` was measured too: its
  single-character table has 4,572 entries (467 of them CJK compatibility ideographs that NFKC
  already folds), agrees with zhconv on all but 2 shared characters, and would be a new native
  dependency; zhconv is already one. A few simplified *variants* are folded on top (帐->账,
  著->着) because Taiwanese text writes 帳戶 where mainland text writes 账户, and the table alone
  maps 帳 to 帐.

Cost (Python 3.11, 2-core dev box shared with other jobs, loop over the 220 labelled samples
texts): 4.7 µs per message mean; ASCII 0.5 µs (``lower()`` only), Chinese 8.6 µs (NFKC itself is
~3.7 µs of that). The offset-building slow path runs only when the length changes or composition
can happen (4 of 220 samples: ``……``, Turkish ``İ``) and costs a few µs more. Import builds the
tables once: ~0.3 s, ~1 MB.

Offsets: ``Normalized.offsets[i]`` is the index in the original string of the character that
produced normalised character ``i``; ``offsets[len(text)] == len(original)``. It is ``None`` when the
mapping is the identity (same length, character *i* from character *i*), which is the common case.
"""

from __future__ import annotations

import bisect
import json
import re
import unicodedata
from functools import lru_cache
from pathlib import Path

import msgspec

__all__ = ["Normalized", "char_class", "has_word_edges", "is_word_char", "normalize", "normalize_keyword"]


def _load_t2s() -> dict[int, int]:
    import zhconv  # imported here: only its bundled dictionary is needed

    path = Path(zhconv.__file__).with_name("zhcdict.json")
    with path.open(encoding="utf-8") as fh:
        hans: dict[str, str] = json.load(fh)["zh2Hans"]
    # Folding of simplified variants on top of the table; applied to both sides of a match, so it
    # only has to be consistent, not "correct Chinese".
    fold = {"帐": "账", "著": "着"}
    table = {k: fold.get(v, v) for k, v in hans.items() if len(k) == 1 and len(v) == 1 and k != v}
    table.update(fold)
    return {ord(k): ord(v) for k, v in table.items()}


_T2S: dict[int, int] = _load_t2s()


def _scan_unicode() -> tuple[frozenset[str], frozenset[str]]:
    """Find the characters that break the 1:1 character mapping, once at import (~0.1 s).

    Returns ``(continuation, expanding)``: characters that may compose with, or reorder against,
    the character before them; and characters whose own transform is not exactly one character.
    A string with neither kind maps character i to character i, because every code point maps to
    at least one code point and nothing merges. Only planes 0 and 1, the CJK compatibility
    supplement and the variation selectors hold such characters.
    """
    cont: set[str] = set()
    expanding: set[str] = set()
    for cp in (*range(0x20000), *range(0x2F800, 0x2FA20), *range(0xE0000, 0xE01F0)):
        ch = chr(cp)
        dec = unicodedata.decomposition(ch)
        if len(ch.casefold()) != 1 or (dec and len(unicodedata.normalize("NFKC", ch).casefold()) != 1):
            expanding.add(ch)
        if unicodedata.combining(ch):
            cont.add(ch)
            continue
        if not dec:
            continue
        parts = dec.split()
        if parts[0].startswith("<"):
            parts = parts[1:]
        if not parts:
            continue
        if unicodedata.combining(chr(int(parts[0], 16))):
            cont.add(ch)  # e.g. U+0F73: a starter whose decomposition begins with a mark
        if len(parts) == 2 and not dec.startswith("<") and unicodedata.normalize("NFC", ch) == ch:
            # primary composite: its second part composes with a preceding starter
            cont.add(chr(int(parts[1], 16)))
    # Hangul conjoining vowels and trailing consonants compose algorithmically with the jamo before.
    cont.update(chr(cp) for cp in range(0x1160, 0x1200))
    cont.update(chr(cp) for cp in range(0xD7B0, 0xD800))
    return frozenset(cont), frozenset(expanding)


_CONTINUATION, _EXPANDING = _scan_unicode()

# Tables indexed by code point, for str.translate: a dict is the slowest (an unmapped character
# raises KeyError inside translate), a str ~2.5x faster, a list of ints faster again (2.6 vs
# 3.5 µs per non-ASCII benchmark message: translate writes an int as it is, where a str value
# beyond Latin-1 is a new object per character); the list costs ~7 MB. Code points past the end
# raise IndexError, which translate() treats as "unchanged"; nothing past U+2FFFF needs mapping.
_TABLE_SIZE = 0x30000
_T2S_TABLE: list[int] = [_T2S.get(cp, cp) for cp in range(_TABLE_SIZE)]


def char_class(cps: list[int]) -> str:
    """The inside of a regex character class holding the sorted code points ``cps``, as ranges."""
    ranges: list[list[int]] = []
    for cp in cps:
        if ranges and ranges[-1][1] == cp - 1:
            ranges[-1][1] = cp
        else:
            ranges.append([cp, cp])
    return "".join(re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges)


# Every character the table changes (a test checks it): those of plane 0 one by one, so that text
# in Simplified Chinese, which has none, skips the per-character translate (search and translate
# 1.0 vs 2.2 µs a benchmark or training message with Han characters, 4 in 5 of which have none);
# past plane 0, the supplementary ideographic planes whole (a regex tests a class's characters
# past U+FFFF range by range, but plane 0 in one bitmap lookup).
_T2S_KEYS_RE = re.compile(f"[{char_class(sorted(k for k in _T2S if k < 0x10000))}\U00020000-\U0003ffff]")
# Marks for the slow path: \x01 expands, \x02 may attach to the previous character.
_MARK_TABLE = "".join(
    "\x02" if chr(cp) in _CONTINUATION else "\x01" if chr(cp) in _EXPANDING else "\x00" for cp in range(_TABLE_SIZE)
)
# A place where the mapping is not 1:1: a character with what attaches to it, or an expanding one.
_SPECIAL_RE = re.compile(r"[\x00\x01]?\x02+|\x01")


def _transform(s: str) -> str:
    return unicodedata.normalize("NFKC", s).casefold().translate(_T2S_TABLE)


class Normalized(msgspec.Struct, frozen=True, gc=False):
    """A normalised string and the way back to the original's positions."""

    text: str
    offsets: tuple[int, ...] | None

    def span_to_original(self, start: int, end: int) -> tuple[int, int]:
        """Map ``[start, end)`` in ``text`` to the smallest span of whole original characters.

        A span that starts or ends inside an expansion (the second ``s`` of ``ß`` -> ``ss``)
        widens to cover the whole original character, so a redaction never leaves half of it.
        """
        offsets = self.offsets
        if offsets is None:
            return start, end
        if end <= start:
            return offsets[start], offsets[start]
        orig_start = offsets[start]
        last = offsets[end - 1]
        j = end
        # offsets[-1] == len(original) > last, so this stops at the next original character.
        while offsets[j] == last:
            j += 1
        return orig_start, offsets[j]


def _slow(original: str, text: str) -> Normalized:
    # Runs between special places map 1:1; each special place is transformed alone and all of
    # its output points back at its first original character.
    offsets: list[int] = []
    pos = 0
    for m in _SPECIAL_RE.finditer(original.translate(_MARK_TABLE)):
        a, b = m.span()
        offsets.extend(range(pos, a))
        offsets.extend([a] * len(_transform(original[a:b])))
        pos = b
    n = len(original)
    offsets.extend(range(pos, n))
    if len(offsets) != len(text):
        # Composition across a special place's edge (never seen in testing): keep the text
        # exact and fall back to a proportional map, monotonic and in the right region.
        m_len = len(text)
        offsets = [min(n - 1, (i * n) // m_len) for i in range(m_len)]
    offsets.append(n)
    return Normalized(text, tuple(offsets))


def normalize(text: str) -> Normalized:
    """Normalise a message field for matching; see the module docstring for the transform."""
    if text.isascii():
        # NFKC is the identity on ASCII and casefold() equals lower() there; no Han to convert.
        return Normalized(text.lower(), None)
    # The quick check is ~0.1 µs and true for most messages, which then skip NFKC entirely.
    nfkc_normal = unicodedata.is_normalized("NFKC", text)
    nf = text if nfkc_normal else unicodedata.normalize("NFKC", text)
    out = nf.casefold()
    # Only Han (and 「」『』) convert: most non-ASCII messages (Korean, Cyrillic, accented Latin)
    # skip the per-character table lookup for one scan of a character class.
    if _T2S_KEYS_RE.search(out) is not None:
        out = out.translate(_T2S_TABLE)
    # Equal length means 1:1 unless something composed while something else expanded, which
    # needs a character that attaches to its predecessor (and NFKC-normal text composes nothing).
    if len(out) == len(text) and (nfkc_normal or _CONTINUATION.isdisjoint(text)):
        return Normalized(out, None)
    return _slow(text, out)


def normalize_keyword(keyword: str) -> str:
    """Apply the message transform to a rule keyword, so both sides compare equal."""
    return _transform(keyword)


# Scripts written without spaces between words (or, for Hangul, with particles glued to nouns:
# 비트코인을 = "bitcoin" + object marker). Their characters are not word characters, so a keyword
# in them is a plain substring match.
_NO_SPACE_RANGES: tuple[tuple[int, int], ...] = (
    (0x0E00, 0x0EFF),  # Thai, Lao
    (0x0F00, 0x0FFF),  # Tibetan
    (0x1000, 0x109F),  # Myanmar
    (0x1100, 0x11FF),  # Hangul Jamo
    (0x1780, 0x17FF),  # Khmer
    (0x19E0, 0x19FF),  # Khmer symbols
    (0x2E80, 0x2FDF),  # CJK radicals, Kangxi
    (0x3005, 0x3007),  # 々 〆 〇
    (0x3021, 0x3029),  # Hangzhou numerals
    (0x3031, 0x303C),  # kana repeat marks, 〸〹〺〻〼
    (0x3040, 0x31FF),  # Hiragana, Katakana, Bopomofo, Hangul compatibility jamo, ...
    (0x3400, 0x4DBF),  # CJK extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xA000, 0xA4CF),  # Yi
    (0xA960, 0xA97F),  # Hangul Jamo extended A
    (0xA9E0, 0xA9FF),  # Myanmar extended B
    (0xAA60, 0xAA7F),  # Myanmar extended A
    (0xAC00, 0xD7FF),  # Hangul syllables, Jamo extended B
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0xFF66, 0xFFDC),  # half-width kana and Hangul
    (0x1B000, 0x1B2FF),  # kana supplement/extended, Nüshu
    (0x20000, 0x3FFFF),  # CJK extensions B..
)
_NO_SPACE_STARTS = tuple(r[0] for r in _NO_SPACE_RANGES)


@lru_cache(maxsize=4096)
def _is_word_char_non_ascii(ch: str) -> bool:
    if unicodedata.category(ch)[0] not in "LNM":
        return False
    cp = ord(ch)
    i = bisect.bisect_right(_NO_SPACE_STARTS, cp) - 1
    return not (i >= 0 and cp <= _NO_SPACE_RANGES[i][1])


def is_word_char(ch: str) -> bool:
    """True for letters, digits and combining marks of space-separated scripts.

    Latin (incl. Vietnamese and its combining marks), Cyrillic, Greek, Arabic, Hebrew, Indic...
    are word characters. Han, kana, Hangul, Thai, Lao, Khmer, Myanmar and Tibetan are not, nor are
    punctuation, symbols, space and ``_`` (so ``usdt_trc20`` contains the word ``trc20``).
    """
    if ch.isascii():
        return ch.isalnum()
    return _is_word_char_non_ascii(ch)


def has_word_edges(text: str, start: int, end: int) -> bool:
    """True when ``text[start:end]`` is not glued to a word character on either side.

    A side is checked only when the match itself begins (or ends) with a word character, so a CJK
    keyword is a plain substring and ``btc`` matches inside ``我的btc提现``.
    """
    if end <= start:
        return True
    if start > 0 and is_word_char(text[start]) and is_word_char(text[start - 1]):
        return False
    return not (end < len(text) and is_word_char(text[end - 1]) and is_word_char(text[end]))
