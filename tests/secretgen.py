"""Generated leaked secrets, disguised the ways people (and attackers) get them past a filter.

A :class:`Secret` is a message text to send plus the fragments that must never survive redaction:
the words of each seed phrase, or the private key (64 hex or WIF). :func:`generate` is
deterministic (``generate(n, seed)``) for plain loops and fixtures; :func:`secrets` is the
hypothesis strategy over the same space. :func:`reveal` undoes every disguise used here, so a
test can look for surviving fragments in what the redactor returned.

Disguises (issue 13): separators (tab, NBSP, U+3000, ``- / | ; : _ +``, numbering, runs of 13+
spaces, backticks around words, emoji between words), Cyrillic/Greek look-alike letters,
full-width letters, zero-width characters inside words, upper case, two phrases in one run,
phrase lengths 12-24; keys bare, after ``pk:``/``key:``/``secret``, with the key word more
than 200 characters before them, split into 4x16 or 2x32 chunks, 0x-prefixed, full-width,
zero-width, look-alikes; WIF keys (compressed and not) with the character-level disguises.
"""

from __future__ import annotations

import random
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

from hypothesis import strategies as st
from mnemonic import Mnemonic

from rules.detectors import b58check_encode

__all__ = [
    "KEY_EVASIONS",
    "PHRASE_EVASIONS",
    "SEPARATORS",
    "Secret",
    "generate",
    "hex_survivors",
    "phrase_survivors",
    "reveal",
    "secrets",
    "split",
]

_MNEMO = Mnemonic("english")
_STRENGTHS = (128, 160, 192, 224, 256)  # 12, 15, 18, 21, 24 words

#: Joiners between phrase words; each is one disguise of finding 2/4.
SEPARATORS: tuple[str, ...] = (
    " ",
    "\t",
    "\u00a0",  # no-break space
    "\u3000",  # ideographic space
    "-",
    "/",
    "|",
    ";",
    ":",
    "_",
    "+",
    ", ",
    "\n",
    " " * 13,
    " " * 40,
    " 🔥 ",
    "😀",
    " 🙏🏽 ",
    "，",
    "、",
)
_ZERO_WIDTH = ("\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad")
# Look-alikes used to disguise Latin letters (lower case): Cyrillic first, then Greek.
_LOOKALIKE: dict[str, tuple[str, ...]] = {
    "a": ("\u0430", "\u03b1"),
    "c": ("\u0441",),
    "e": ("\u0435",),
    "i": ("\u0456", "\u03b9"),
    "j": ("\u0458",),
    "o": ("\u043e", "\u03bf"),
    "p": ("\u0440", "\u03c1"),
    "s": ("\u0455",),
    "x": ("\u0445", "\u03c7"),
    "y": ("\u0443",),
    "k": ("\u03ba",),
    "v": ("\u03bd",),
}
_UNDO_LOOKALIKE = {ch: latin for latin, chars in _LOOKALIKE.items() for ch in chars}
_FILLERS = (
    ("hi, my wallet words are ", " please help"),
    ("帮我看看这个：", "谢谢"),
    ("", ""),
    ("восстановите кошелёк: ", " спасибо"),
    ("Subject line\n\n", "\n--\nsent from my phone"),
)


@dataclass(frozen=True)
class Secret:
    """A message leaking secrets and what must not survive in it.

    ``phrases`` holds the words of each seed phrase, ``keys`` each private key (64 lower-case hex
    or a WIF string); ``evasion`` names the disguise (``phrase/…`` or ``key/…``), for failure
    messages.
    """

    text: str
    evasion: str
    phrases: tuple[tuple[str, ...], ...] = ()
    keys: tuple[str, ...] = ()
    #: A phrase sent in pieces: these consecutive messages of one conversation (``text`` joins them).
    messages: tuple[str, ...] = ()

    @property
    def fragments(self) -> tuple[str, ...]:
        """Every phrase word and key, in order (check them with the ``*_survivors`` helpers: a
        single list word such as ``wallet`` may rightly stay in the surrounding text)."""
        return tuple(w for p in self.phrases for w in p) + self.keys


# ------------------------------------------------------------------ character-level disguises


def _fullwidth(s: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in s)


def _lookalike(s: str, rng: random.Random) -> str:
    # Every eligible letter is swapped, so no Latin run of the original remains.
    return "".join(rng.choice(_LOOKALIKE[c]) if c in _LOOKALIKE else c for c in s)


def _zero_width(s: str, rng: random.Random) -> str:
    return "".join(c + (rng.choice(_ZERO_WIDTH) if i % 2 == 0 else "") for i, c in enumerate(s))


_CHAR_EVASIONS: dict[str, Callable[[str, random.Random], str]] = {
    "plain": lambda s, _rng: s,
    "fullwidth": lambda s, _rng: _fullwidth(s),
    "lookalike": _lookalike,
    "zero_width": _zero_width,
    "upper": lambda s, _rng: s.upper(),
}

#: Names of the phrase disguises :func:`generate` cycles through.
PHRASE_EVASIONS: tuple[str, ...] = (
    *(f"sep:{sep!r}" for sep in SEPARATORS),
    "numbered",
    "backticks",
    "fullwidth",
    "lookalike",
    "zero_width",
    "upper",
    "two_phrases",
    "two_phrases_lookalike",
)
#: Names of the key disguises :func:`generate` cycles through.
KEY_EVASIONS: tuple[str, ...] = (
    "bare",
    "pk:",
    "key:",
    "secret",
    "far_key_word",
    "split4x16",
    "split2x32",
    "0x_key_context",
    "fullwidth",
    "zero_width",
    "lookalike",
    "wif",
    "wif_zero_width",
    "wif_fullwidth",
)


def _phrase(rng: random.Random, strength: int | None = None) -> tuple[str, ...]:
    bits = strength if strength is not None else rng.choice(_STRENGTHS)
    words = _MNEMO.to_mnemonic(rng.getrandbits(bits).to_bytes(bits // 8, "big")).split()
    assert _MNEMO.check(" ".join(words))
    return tuple(words)


def _phrase_secret(evasion: str, rng: random.Random) -> Secret:
    words = _phrase(rng)
    phrases: tuple[tuple[str, ...], ...] = (words,)
    sep = " "
    char = "plain"
    if evasion.startswith("sep:"):
        sep = SEPARATORS[[f"sep:{s!r}" for s in SEPARATORS].index(evasion)]
        body = sep.join(words)
    elif evasion == "numbered":
        body = " ".join(f"{i}. {w}" for i, w in enumerate(words, 1))
    elif evasion == "backticks":
        body = " ".join(f"`{w}`" for w in words)
    elif evasion.startswith("two_phrases"):
        second = _phrase(rng)
        phrases = (words, second)
        sep = rng.choice(SEPARATORS)
        body = sep.join(words + second)
        if evasion.endswith("lookalike"):
            body = _lookalike(body, rng)
    else:
        char = evasion
        body = " ".join(_CHAR_EVASIONS[char](w, rng) for w in words)
    before, after = rng.choice(_FILLERS)
    return Secret(before + body + after, f"phrase/{evasion}", phrases=phrases)


def _wif(rng: random.Random) -> str:
    compressed = rng.random() < 0.5
    payload = b"\x80" + rng.getrandbits(256).to_bytes(32, "big") + (b"\x01" if compressed else b"")
    return b58check_encode(payload)


def _key_secret(evasion: str, rng: random.Random) -> Secret:
    key = f"{rng.getrandbits(256):064x}"
    shown = key
    if evasion == "bare":
        text = shown
    elif evasion in ("pk:", "key:"):
        text = f"{evasion}{shown}"
    elif evasion == "secret":
        text = f"here is my secret {shown} thanks"
    elif evasion == "far_key_word":
        text = "my private key is below, do not share. " + "blah " * 50 + shown
    elif evasion.startswith("split"):
        size = 16 if evasion == "split4x16" else 32
        sep = rng.choice((" ", "-", "\n", " | ", ":"))
        text = "keep this safe: " + sep.join(key[i : i + size] for i in range(0, 64, size))
    elif evasion == "0x_key_context":
        text = f"private key 0x{shown}"
    elif evasion.startswith("wif"):
        key = _wif(rng)
        shown = key
        if evasion == "wif_zero_width":
            shown = _zero_width(key, rng)
        elif evasion == "wif_fullwidth":
            shown = _fullwidth(key)
        text = f"import this: {shown}"
    else:
        text = _CHAR_EVASIONS[evasion](key, rng)
    before, after = rng.choice(_FILLERS)
    return Secret(before + text + after, f"key/{evasion}", keys=(key,))


def generate(n: int, seed: int) -> list[Secret]:
    """``n`` secrets, every disguise in turn (phrases and keys alternate), the same for a seed."""
    rng = random.Random(seed)
    out: list[Secret] = []
    for i in range(n):
        if i % 2 == 0:
            out.append(_phrase_secret(PHRASE_EVASIONS[(i // 2) % len(PHRASE_EVASIONS)], rng))
        else:
            out.append(_key_secret(KEY_EVASIONS[(i // 2) % len(KEY_EVASIONS)], rng))
    return out


#: How :func:`split` cuts a 12-word phrase: the words of each message, and the text around them.
SPLITS: tuple[tuple[int, ...], ...] = ((6, 6), (4, 4, 4), (7, 5), (3, 9), (9, 3), (2, 10), (6, 3, 3))


def split(seed: int) -> list[Secret]:
    """A phrase sent in pieces over consecutive messages, one :class:`Secret` per cut of ``SPLITS``.

    The first piece ends a message that starts with prose, the last starts one that ends with prose,
    pieces between are whole messages (docs/security.md: what a piece must look like to be masked).
    """
    rng = random.Random(seed)
    out = []
    for cut in SPLITS:
        words = _phrase(rng, 128)
        pieces, at = [], 0
        for n in cut:
            pieces.append(" ".join(words[at : at + n]))
            at += n
        pieces[0] = rng.choice(("ok here are my words ", "первые слова: ", "前六个是 ")) + pieces[0]
        pieces[-1] += rng.choice((" is that right?", " 对吗", ""))
        name = "+".join(map(str, cut))
        out.append(Secret("\n".join(pieces), f"phrase/split {name}", phrases=(words,), messages=tuple(pieces)))
    return out


@st.composite
def secrets(draw: st.DrawFn) -> Secret:
    """Hypothesis strategy: one :class:`Secret` with a drawn disguise and drawn randomness."""
    rng = random.Random(draw(st.integers(min_value=0, max_value=2**64 - 1)))
    if draw(st.booleans()):
        return _phrase_secret(draw(st.sampled_from(PHRASE_EVASIONS)), rng)
    return _key_secret(draw(st.sampled_from(KEY_EVASIONS)), rng)


# ------------------------------------------------------------------ checking what survived


def reveal(text: str) -> str:
    """Undo the disguises: NFKC, drop format characters, look-alikes back to Latin.

    Case is kept (WIF keys are case-sensitive); compare words and hex in lower case.
    """
    nfkc = unicodedata.normalize("NFKC", text)
    return "".join(_UNDO_LOOKALIKE.get(c, c) for c in nfkc if unicodedata.category(c) != "Cf")


_WORD_RE = re.compile(r"[a-z]+")


def phrase_survivors(secret: Secret, output: str, run: int = 4) -> list[tuple[str, ...]]:
    """Every ``run`` consecutive words of one of the secret's phrases still in ``output``."""
    words = _WORD_RE.findall(reveal(output).lower())
    seen = {tuple(words[i : i + run]) for i in range(len(words) - run + 1)}
    return [
        tuple(p[i : i + run]) for p in secret.phrases for i in range(len(p) - run + 1) if tuple(p[i : i + run]) in seen
    ]


def hex_survivors(secret: Secret, output: str, run: int = 16) -> list[str]:
    """Every ``run`` characters of one of the secret's keys still in ``output`` (separators ignored)."""
    flat = re.sub(r"[^0-9A-Za-z]", "", reveal(output))
    flat_lower = flat.lower()
    out = []
    for key in secret.keys:
        is_hex = re.fullmatch(r"[0-9a-f]{64}", key) is not None
        hay = flat_lower if is_hex else flat
        out.extend(key[i : i + run] for i in range(len(key) - run + 1) if key[i : i + run] in hay)
    return out
