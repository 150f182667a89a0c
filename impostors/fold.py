"""Name folding: what a name looks like, so that lookalikes of a name fold to the same string.

A display name or username goes through, in this order:

1. NFKC (fullwidth ``ＤａｖｉｄＣｈｅｎ``, mathematical letters, ligatures become plain letters);
2. invisible characters removed: format characters (category Cf: zero-width space/joiner/non-joiner,
   word joiner, soft hyphen, bidi marks and overrides, invisible operators) and the blank "letters"
   scammers use as spaces (Hangul fillers, braille blank);
3. the Unicode TR39 confusable *skeleton* (the prototype of every character in Unicode's
   confusables table, as shipped by ``confusable-homoglyphs``), applied before and after case
   folding, so that Cyrillic ``а``, Greek ``Ι`` (capital iota), ``Ð``, ``0`` and ``1`` meet the
   letters they imitate; a few visual pairs the table leaves out (``i``/``l``) are added;
4. combining marks removed after NFD, then NFC again (``Sofía`` = ``Sofia``; Hangul recomposes);
5. everything that is not a letter or a digit is a separator; the name becomes a list of tokens.

The same fold is applied to staff names and to candidates, so only the result's equality and
similarity matter, never whether a prototype is "the right letter".
"""

from __future__ import annotations

import functools
import unicodedata
from dataclasses import dataclass

from confusable_homoglyphs import confusables

#: Blank letters (category Lo/So, not Cf) used as invisible padding in display names.
_BLANKS = frozenset("\u115f\u1160\u3164\uffa0\u2800")
#: Pairs TR39 does not list but that read alike in a name at a glance (after case folding).
_VISUAL = str.maketrans({"i": "l", "ı": "l"})
#: Digits and signs written for letters (after the skeleton: ``0`` is already ``O``, ``1`` is ``l``).
_LEET = str.maketrans({"0": "o", "1": "l", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"})


@functools.cache
def _prototypes() -> dict[str, str]:
    """Each confusable character's prototype.

    ``confusable-homoglyphs`` stores Unicode's confusables.txt both ways: a source character lists
    exactly its one target, a target lists all its sources. A target is never a source (TR39's
    mapping is idempotent), so a character with one entry is a source of that entry — unless the
    entry has one entry too (a pair of one source and one target): both then map to the smaller,
    which keeps the two equal, all that the comparison needs.
    """
    data = confusables.confusables_data
    out: dict[str, str] = {}
    for char, entries in data.items():
        if len(char) != 1 or len(entries) != 1:
            continue
        target = entries[0]["c"].replace("\u200e", "")  # the table wraps RTL characters in LRMs
        if len(target) == 1 and len(data.get(target, ())) == 1:
            target = min(char, target)
        if target != char:
            out[char] = target
    return out


def skeleton(text: str) -> str:
    """TR39's skeleton of ``text``, character by character (prototypes may be several characters)."""
    table = _prototypes()
    return "".join(table.get(ch, ch) for ch in text)


def strip_invisible(text: str) -> str:
    return "".join(ch for ch in text if unicodedata.category(ch) != "Cf" and ch not in _BLANKS)


def _strip_marks(text: str) -> str:
    decomposed = unicodedata.normalize("NFD", text)
    return unicodedata.normalize(
        "NFC", "".join(ch for ch in decomposed if unicodedata.category(ch) not in ("Mn", "Me"))
    )


def _tokens(text: str) -> tuple[str, ...]:
    out: list[str] = []
    word: list[str] = []
    for ch in text:
        if unicodedata.category(ch)[0] in "LN":
            word.append(ch)
        elif word:
            out.append("".join(word))
            word = []
    if word:
        out.append("".join(word))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Folded:
    """A name after folding.

    ``plain`` is the name as a reader would spell it (NFKC, case and accents folded, invisibles
    and separators dropped) and ``looks`` what it looks like (the skeleton on top: two variants,
    skeleton before and after case folding, since ``I`` and ``l`` are alike but ``i`` and ``I``
    are one letter). ``tricks`` names what the fold had to undo.
    """

    plain: tuple[str, ...]
    #: ``plain`` with its accents and tone marks kept (in Vietnamese or Turkish they are letters).
    spelled: tuple[str, ...]
    looks: tuple[tuple[str, ...], ...]
    tricks: frozenset[str]


def fold(name: str) -> Folded:
    """Fold a display name or username (see the module's docstring)."""
    tricks: set[str] = set()
    compat = unicodedata.normalize("NFKC", name)
    if compat != unicodedata.normalize("NFC", name):
        tricks.add("compatibility characters")
    visible = strip_invisible(compat)
    if visible != compat:
        tricks.add("invisible characters")
    spelled = _tokens(unicodedata.normalize("NFC", visible.casefold()))
    plain = _tokens(_strip_marks(visible.casefold()))
    looks = tuple(
        dict.fromkeys(
            _tokens(_strip_marks(skeleton(form)).casefold().translate(_VISUAL).translate(_LEET))
            for form in (skeleton(visible), visible.casefold())
        )
    )
    if any(_mixed_script(token) for token in _tokens(visible)):
        tricks.add("mixed scripts")
    if any(_digit_in_word(token) for token in plain):
        tricks.add("digits for letters")
    return Folded(plain, spelled, looks, frozenset(tricks))


def _script(ch: str) -> str:
    """The script of a letter, as the first word of its Unicode name (LATIN, CYRILLIC, GREEK ...)."""
    return unicodedata.name(ch, "?").split(" ", 1)[0]


def _mixed_script(token: str) -> bool:
    scripts = {_script(ch) for ch in token if ch.isalpha()}
    # CJK ideographs, kana and Hangul mix in real names; Latin with Cyrillic or Greek does not.
    return len(scripts & {"LATIN", "CYRILLIC", "GREEK", "ARMENIAN", "CHEROKEE"}) > 1


def _digit_in_word(token: str) -> bool:
    # "C0inly", "Dav1d": a digit between letters; "anna1990" or "user42" end in digits innocently.
    return any(ch.isdigit() for ch in token[1:-1]) and token[0].isalpha() and token[-1].isalpha()
