"""Seed phrases and raw private keys, found through the disguises used to slip them past a filter.

Detection runs on a *skeleton* of the text, never on the text as typed (issue 13):

* Every character is decomposed (NFKD: full-width ``ａｂｃ`` and mathematical letters become ASCII,
  NBSP and U+3000 become spaces, accents come off as combining marks); combining marks (Mn, Me),
  format characters (Cf: zero-width space/joiners, word joiner, BOM, soft hyphen, bidi controls,
  tag characters) and the invisible Hangul fillers are removed; C1 controls too.
* Look-alike letters are folded to Latin by ``_LOOKALIKE``: the Cyrillic, Greek, Armenian and
  IPA/Latin-extended letters that Unicode's confusables list (UTS #39) maps to one Latin letter
  *and* that look the same in common fonts (Cyrillic ``а е о р с у х і ј ѕ һ ԁ ԛ ԝ ӏ к ү``, the
  Latin-shaped capitals of Cyrillic and Greek, Greek ``α ε ι κ ν ο ρ υ χ γ``, Armenian ``օ ս հ ո``,
  ``ı ȷ ɡ ɑ ɩ``). Why a small table and not the whole confusables file (6,000+ entries, or a
  new dependency): secrets are ASCII (BIP-39 English words, hex, base58), so only look-alikes of
  ASCII letters matter, and these are the ones keyboards and homoglyph tools produce.
* Other letters are kept. One of a space-separated script (Cyrillic, accented Latin without a
  decomposition...) glues to a Latin run, so a Latin fragment of a Cyrillic word is not a word;
  letters of scripts written without spaces (CJK, kana, Hangul, Thai...) separate words as
  punctuation does. Case is kept (base58 is case-sensitive); words and hex are matched on the
  skeleton lower-cased.

Each character is transformed on its own (one ``str.translate`` over a table built at import), so
the skeleton's positions map back to the original exactly; findings are returned in original
offsets (``Skeleton.span``), and redaction masks what was typed, disguise included.

Seed phrases: a run of >= 12 words of BIP-39's English list, separated by *any* run of characters
that are not letters (spaces of any kind and length, tab, ``- / | ; : _ +``, emoji, backticks,
numbering, CJK text). Every 12-word window of the run is checked: the run is a phrase if one
window is not prose — more than 4 of its 12 words being everyday English words that happen to be
on the list (``please check account balance``) is prose; a random phrase has ~7% such words — or,
failing that, if a 12-24-word stretch of it passes the BIP-39 checksum. A run that is a phrase
is masked whole, so two phrases in one run, phrases of 12-24 words and runs longer than 24 are
all masked (masking only the phrase-like windows would leave in clear a phrase's tail that is full
of everyday words). Up to 3 everyday words at either end stay when what remains is a whole phrase
with a valid checksum (``import my wallet: <12 words>`` masks the 12 words, not ``wallet``). The
checksum is *not* required: a mistyped phrase is still a leaked secret.

64 hex digits (the same length as a private key, a txid and a block hash) — the policy:

1. Split into chunks of >= 4 hex digits (at most 3 separator characters between chunks, e.g.
   4x16 or 2x32) that join to exactly 64, with >= 16 digits and >= 8 letters (a random key has
   ~40 and ~24; English ``face bead`` has no digits) and not two UUIDs: ``private_key``. Nobody
   splits a txid to send it to support; people split keys to get them past a filter.
2. Otherwise the label nearest before the hex (``_LABEL_BEFORE`` characters) decides: a tx label
   (``txid``, ``tx``, ``hash``, ``transaction``, an explorer ``/tx/`` URL, ``交易哈希``, ``хеш``...)
   makes it a ``txid``; a key label (``pk:``, ``key``, ``secret``, ``priv``, ``wif``, ``私钥``,
   ``ключ``...) a ``private_key``. Agents need txids to trace withdrawals, so a labelled txid stays.
3. Unlabelled: a key word anywhere in the message makes it a ``private_key``; else tx context
   anywhere in the message (the tx labels, deposit/withdrawal words, an explorer name; and for
   ``0x``-prefixed hex, an ETH-like chain name) makes it a ``txid``.
4. No context at all: ``private_key``. A bare 64-hex is as likely a key as a txid, and masking a
   txid costs an agent one question, while leaving a key costs the user the wallet.

A key sent *labelled* as a txid (``txid: <key>``) is a txid by this policy: nothing in the text
tells them apart. Longer hex runs (signatures, 128-hex seeds) are neither.
"""

from __future__ import annotations

import bisect
import hashlib
import re
import unicodedata
from collections.abc import Iterator

from mnemonic import Mnemonic

from rules.normalize import char_class, is_word_char

__all__ = ["Skeleton", "hex_keys", "long_runs", "phrase_checksum_ok", "seed_phrases", "skeleton"]

# --------------------------------------------------------------------------- skeleton

_LOOKALIKE: dict[str, str] = {
    # Cyrillic lower case that looks Latin in common fonts.
    **dict(zip("аеорсухіјѕһԁԛԝӏкү", "aeopcyxijshdqwlky", strict=True)),
    # Cyrillic and Greek capitals shaped like Latin capitals.
    **dict(zip("АВЕЅІЈКМНОРСТХУԌԚԜ", "ABESIJKMHOPCTXYGQW", strict=True)),
    **dict(zip("ΑΒΕΖΗΙΚΜΝΟΡΤΥΧ", "ABEZHIKMNOPTYX", strict=True)),
    # Greek lower case.
    **dict(zip("αεικνορυχγ", "aeikvopuxy", strict=True)),
    # Armenian and Latin-extended/IPA letters.
    **dict(zip("օսհոıȷɡɑɩ", "ouhnijgai", strict=True)),
}
_DROPPED = frozenset({"Mn", "Me", "Cf", "Cc"})
_LETTER_CATS = frozenset({"Lu", "Ll", "Lt", "Lm", "Lo", "Mc"})
# Letters that draw nothing (category Lo, so not caught as format characters).
_INVISIBLE = frozenset("\u115f\u1160\u3164\uffa0")


def _fold(ch: str) -> str:
    """The skeleton of one character (see the module docstring)."""
    if ch in _INVISIBLE:
        return ""
    if unicodedata.category(ch)[0] == "L" and not is_word_char(ch):
        return ch  # a no-space script (NFKD would split a Hangul syllable into jamo, for nothing)
    out = []
    for c in unicodedata.normalize("NFKD", ch):
        c = _LOOKALIKE.get(c, c)
        if c.isascii() or unicodedata.category(c) not in _DROPPED:
            out.append(c)
    return "".join(out)


# Planes 0 and 1 in a list for str.translate (an int: unchanged; a str: the replacement, "" to
# delete). Beyond it (CJK extension B.., tag characters) the slow path folds per character.
_TABLE_SIZE = 0x20000


def _build_table() -> list[int | str]:
    table: list[int | str] = list(range(_TABLE_SIZE))
    for cp in range(0x80, _TABLE_SIZE):
        ch = chr(cp)
        folded = _fold(ch)
        if folded != ch:
            table[cp] = folded
    return table


_TABLE = _build_table()


# Letters of space-separated scripts other than ASCII (Cyrillic, Greek, accented Latin, Arabic,
# Indic...): a Latin run touching one is a fragment of a longer word, not a word. Plane 0 only, so
# the regex engine tests a class with a bitmap (a class reaching past U+FFFF is tested range by
# range: 30 vs 1 µs a message); letters beyond are rare and count as separators.
_LETTERS = "a-z" + char_class(
    [cp for cp in range(0x80, 0x10000) if unicodedata.category(chr(cp))[:2] in _LETTER_CATS and is_word_char(chr(cp))]
)
# Characters whose skeleton differs in a way detection can see: one that folds to an ASCII letter
# or digit, or disappears. A text with none (most Chinese and Korean text, and Cyrillic without
# look-alikes) is its own skeleton: no translate, positions as they are. Anything past U+FFFF
# (emoji, mathematical letters, tag characters) takes the translate path. One class, not two
# alternatives: a pattern that starts with a class lets the engine skip ahead to a member (an
# alternation of classes tries a match at every character: 0.46 vs 0.82 µs a non-ASCII message);
# its part past U+FFFF is a single range, tested after the plane-0 bitmap.
_SEEN_FOLD_RE = re.compile(
    "["
    + char_class(
        [
            cp
            for cp in range(0x80, 0x10000)
            if isinstance(_TABLE[cp], str) and (_TABLE[cp] == "" or re.search("[0-9A-Za-z]", str(_TABLE[cp])))
        ]
    )
    + "\U00010000-\U0010ffff]"
)

# Marks for the way back: "\x01" for a character whose skeleton is not exactly one character
# (deleted or expanded). A translate and a one-character class beat a class of the 2,961 such
# characters, which the regex engine tests range by range (30 vs 1 µs a message). Characters
# past the table stay as they are, so they are marked too (and folded one by one).
_MARKS = "".join("\x01" if isinstance(e, str) and len(e) != 1 else "\x00" for e in _TABLE)
_RESHAPING_RE = re.compile("[^\x00]")
_PAST_TABLE_RE = re.compile(f"[{chr(_TABLE_SIZE)}-\U0010ffff]")


class Skeleton:
    """The skeleton of a text (``text``, case kept; ``lower``; ``lower_bytes``) and the way back
    to the original."""

    __slots__ = ("_breaks", "lower", "lower_bytes", "original", "text")

    def __init__(self, original: str) -> None:
        self.original = original
        if original.isascii() or _SEEN_FOLD_RE.search(original) is None:
            text = original
        else:
            text = original.translate(_TABLE)
            if _PAST_TABLE_RE.search(text) is not None:
                text = "".join(_fold(c) if ord(c) >= _TABLE_SIZE else c for c in text)
        self.text = text
        # 1:1: the one character lower() expands, U+0130, is folded to "I" (it sends a text to
        # the translate path).
        self.lower = text.lower()
        # ``lower`` as ASCII bytes, every other character as one "?": same positions, and the
        # pre-checks below (the ASCII letters, digits, hex and alphanumeric runs that a secret
        # needs) are a bytes translate plus count or ``in``, one C loop each, where a regex tries
        # a match at every letter. lower() keeps ASCII ASCII and the rest not ASCII on skeleton
        # characters (the two it would fold into ASCII, U+0130 and U+212A, are folded already),
        # so these bytes are also ``text``'s, lower-cased.
        self.lower_bytes = self.lower.encode("ascii", "replace")
        self._breaks: tuple[list[int], list[int], list[int]] | None = None

    def span(self, start: int, end: int) -> tuple[int, int]:
        """``[start, end)`` of the skeleton as the span of the original characters it came from.

        The span runs from the original character of the first skeleton character to that of the
        last, whole (a ligature half in the span is in it); characters the skeleton dropped are
        inside when they are between the two, outside when before or after.
        """
        if self.text is self.original:
            return start, end
        if end <= start:
            return self._orig(start), self._orig(start)
        return self._orig(start), self._orig(end - 1) + 1

    def _orig(self, pos: int) -> int:
        # Between reshaping characters (deleted or expanded) the skeleton maps 1:1, shifted: a
        # list of those characters is built once, and a position is found by bisection (cheaper
        # than a full offsets table, which costs more than the detection itself).
        sk_starts, origs, lengths = self._reshaping()
        k = bisect.bisect_right(sk_starts, pos) - 1
        if k < 0:
            return pos
        if pos < sk_starts[k] + lengths[k]:
            return origs[k]
        return origs[k] + 1 + pos - sk_starts[k] - lengths[k]

    def _reshaping(self) -> tuple[list[int], list[int], list[int]]:
        if self._breaks is None:
            sk_starts: list[int] = []
            origs: list[int] = []
            lengths: list[int] = []
            shift = 0
            for m in _RESHAPING_RE.finditer(self.original.translate(_MARKS)):
                i = m.start()
                n = len(_fold(self.original[i]))
                sk_starts.append(i + shift)
                origs.append(i)
                lengths.append(n)
                shift += n - 1
            self._breaks = (sk_starts, origs, lengths)
        return self._breaks


def skeleton(text: str) -> Skeleton:
    """The skeleton of ``text`` (see the module docstring)."""
    return Skeleton(text)


def long_runs(view: bytes, least: bytes) -> Iterator[tuple[int, int]]:
    """``[start, end)`` of each run of at least ``least`` in ``view``, in order: what a regex
    ``[class]{n,}`` finds in a text whose ``view`` is its bytes (``Skeleton.lower_bytes``)
    translated to ``least``'s symbol for the class and " " for the rest. ``bytes.find`` looks for
    them in C where the regex tries a match at every member of the class."""
    pos = view.find(least)
    while pos >= 0:
        # ``pos`` starts its run: one more symbol before it would have been found first.
        end = view.find(b" ", pos + len(least))
        if end < 0:
            end = len(view)
        yield pos, end
        pos = view.find(least, end)


# --------------------------------------------------------------------------- seed phrases

_MNEMO = Mnemonic("english")
_INDEX: dict[str, int] = {w: i for i, w in enumerate(_MNEMO.wordlist)}
_VALID_LENGTHS = (12, 15, 18, 21, 24)
_WINDOW = 12
_MAX_EVERYDAY = 4  # of 12: more is prose
_MAX_TRIM = 3
_MAX_RESCUE = 48  # words: two 24-word phrases
# A run of >= 12 words of 3-8 letters (every BIP-39 word is 3-8 letters) separated by anything
# but letters; scanned in C, so prose (1-2 and 9+ letter words, other scripts) costs little. The
# quantifiers are possessive: a word is a whole letter run and a gap a whole non-letter run, so
# backtracking into them could never succeed, and a failed attempt ends at once.
# It starts with a letter class, not a look-behind, so the engine skips ahead to letters.
_RUN_RE = re.compile(
    rf"[a-z](?<![{_LETTERS}][a-z])[a-z]{{2,7}}+(?:[^{_LETTERS}]++[a-z]{{3,8}}+(?![{_LETTERS}])){{11,}}+"
)
_WORD_RE = re.compile(r"[a-z]+")
# Pre-check: 12 words of 3+ ASCII letters anywhere (every word of a _RUN_RE run is a whole run of
# 3-8 letters), counted on ``lower_bytes`` with the letters as "a" and the rest as " ": such a
# word starts the text or follows a " ". 275 of 2,220 bench and sample messages pass; the count
# costs 0.7 µs a message where the regex that walked the text for it cost 1.1.
_LETTER_BYTES = bytes(ord("a") if ord("a") <= b <= ord("z") else ord(" ") for b in range(256))
# Everyday English words that are also BIP-39 words; prose made of them is not a phrase.
_EVERYDAY: frozenset[str] = frozenset(_INDEX) & frozenset(
    """
        that have you this they say will one all there what about when make can like time just know
        people into year good other then now only come over also use two work first way want because
        any give day again please help account balance check address still where hello thank order
        price fee deposit after before still today need next last long little own right same tell
        very why ask call try leave put mean keep let begin seem show hear play run move live
        believe bring happen write provide sit stand lose pay meet include continue set learn change
        lead understand watch follow stop create speak read allow add spend grow open walk win offer
        remember love consider appear buy wait serve die send expect build stay fall cut reach kill
        remain suggest raise pass sell require report decide pull never always also maybe sure okay
        wrong correct valid invalid found find lost phone wallet fund money coin token transfer
        withdraw trade market network system problem issue question answer reason support team
        """.split()  # noqa: SIM905
)
# The shortest run: 12 words of 3 letters and 11 one-character gaps.
_MIN_PHRASE_CHARS = 12 * 3 + 11


def phrase_checksum_ok(words: list[str]) -> bool:
    """True when ``words`` (BIP-39 English list words) are a phrase with a valid checksum."""
    n = len(words)
    if n not in _VALID_LENGTHS:
        return False
    bits = 0
    for w in words:
        bits = bits << 11 | _INDEX[w]
    cs_bits = n // 3
    entropy = (bits >> cs_bits).to_bytes((n * 11 - cs_bits) // 8, "big")
    return hashlib.sha256(entropy).digest()[0] >> (8 - cs_bits) == bits & ((1 << cs_bits) - 1)


def _is_phrase(words: list[str]) -> bool:
    """A run of list words is a phrase when one 12-word window is not prose, or checksums."""
    everyday = [w in _EVERYDAY for w in words]
    count = sum(everyday[:_WINDOW])
    if count <= _MAX_EVERYDAY:
        return True
    for k in range(_WINDOW, len(words)):  # the window sliding by one word
        count += everyday[k] - everyday[k - _WINDOW]
        if count <= _MAX_EVERYDAY:
            return True
    # A long run of everyday words is prose; the bound keeps a hostile 100 KB of them linear.
    if len(words) > _MAX_RESCUE:
        return False
    return any(phrase_checksum_ok(words[k : k + size]) for size in _VALID_LENGTHS for k in range(len(words) - size + 1))


def _trim(words: list[str]) -> tuple[int, int]:
    """The run without everyday words at its ends when a whole checksummed phrase remains."""
    n = len(words)
    if phrase_checksum_ok(words):
        return 0, n
    best: tuple[int, int, int] | None = None
    for la in range(_MAX_TRIM + 1):
        if la and words[la - 1] not in _EVERYDAY:
            break
        for lb in range(_MAX_TRIM + 1):
            if lb and words[n - lb] not in _EVERYDAY:
                break
            if (best is None or la + lb < best[0]) and phrase_checksum_ok(words[la : n - lb]):
                best = (la + lb, la, n - lb)
    return (0, n) if best is None else (best[1], best[2])


def seed_phrases(sk: Skeleton) -> Iterator[tuple[int, int]]:
    """Spans of seed phrases, and of phrase pieces at a message's ends, in ``sk.lower``."""
    low = sk.lower
    letters = sk.lower_bytes.translate(_LETTER_BYTES)
    phrases = list(_phrases(low, letters))
    yield from phrases
    for a, b in _fragments(low, letters):
        if not any(a < pb and pa < b for pa, pb in phrases):
            yield a, b


def _phrases(low: str, letters: bytes) -> Iterator[tuple[int, int]]:
    if len(low) < _MIN_PHRASE_CHARS or letters.count(b" aaa") + letters.startswith(b"aaa") < _WINDOW:
        return
    for run in _RUN_RE.finditer(low):
        tokens = [(m.start(), m.end(), m.group()) for m in _WORD_RE.finditer(run.group())]
        base = run.start()
        i = 0
        while i < len(tokens):
            if tokens[i][2] not in _INDEX:
                i += 1
                continue
            j = i
            while j < len(tokens) and tokens[j][2] in _INDEX:
                j += 1
            if j - i >= _WINDOW:
                words = [t[2] for t in tokens[i:j]]
                if _is_phrase(words):
                    a, b = _trim(words)
                    yield base + tokens[i + a][0], base + tokens[i + b - 1][1]
            i = j


# A phrase sent in pieces ("here are the first words: …" then the rest): each piece alone is too
# short to be a phrase, and a message already stored cannot be unsent from the AOF. So a piece is
# masked by its own shape, before it is written: a run of >= 4 list words that starts or ends the
# message (only non-letters beyond it) with at most one everyday word in four, rounded up from a
# half (4-5 words: 1, 6-9: 2), or a whole message of 3 list words none of them everyday. A random
# piece passes 97.5% of the time at 4 words, 99.5% at 6; prose rarely ends with such a run (3 of
# 14,234 texts, tests/rules/test_secrets.py counts them). What stays in clear is a piece of
# <= 3 words or one of the rare pieces with more everyday words: too little to recover a phrase.
_EDGE_MIN = 4
_WHOLE_MIN = 3
_EDGE_CHARS = _MAX_RESCUE * 9  # the longest run worth looking at from each end
_EDGE_WORD_RE = re.compile(rf"[{_LETTERS}]+")
_GAP_LETTER_RE = re.compile(r"[^\W\d_]")  # a letter of any script


_Word = tuple[int, int, str]  # start, end, the word


def _edge_run(low: str, words: Iterator[_Word]) -> tuple[list[_Word], bool]:
    """The list words that ``words`` (from the edge inwards) start with, less the everyday ones at
    either end of them (``please <4 words> thanks``), and whether that is all of ``words``. Words
    with text of another script between them are prose, not a piece (``我的 withdrawal 被 reject
    了，reason 写的 risk control``). ``words`` is read no further than the first word past the
    run: the edge of most messages is prose, so one or two words, not the 432 characters."""
    run: list[_Word] = []
    complete = True
    for word in words:
        if word[2] not in _INDEX or (
            run and _GAP_LETTER_RE.search(low, min(run[-1][1], word[1]), max(run[-1][0], word[0]))
        ):
            complete = False
            break
        run.append(word)
    lo, hi = 0, len(run)
    while lo < hi and run[lo][2] in _EVERYDAY:
        lo += 1
    while hi > lo and run[hi - 1][2] in _EVERYDAY:
        hi -= 1
    return run[lo:hi], complete and lo == 0 and hi == len(run)


def _piece(words: list[_Word], whole: bool) -> bool:
    everyday = sum(w[2] in _EVERYDAY for w in words)
    if len(words) >= _EDGE_MIN:
        return everyday <= (len(words) + 2) // 4
    return whole and len(words) >= _WHOLE_MIN and not everyday


def _head_words(low: str, start: int) -> Iterator[_Word]:
    for m in _EDGE_WORD_RE.finditer(low, start, _EDGE_CHARS):
        yield m.start(), m.end(), m.group()


def _tail_words(low: str) -> Iterator[_Word]:
    """The words of the last ``_EDGE_CHARS`` characters, last first: found in that window
    reversed, where a word is the same run of letters, so they come lazily from the end."""
    n = len(low)
    base = max(0, n - _EDGE_CHARS)
    window = low[: base - 1 : -1] if base else low[::-1]
    cut = len(window) if base else -1
    for m in _EDGE_WORD_RE.finditer(window):
        a, b = m.span()
        if b == cut:
            return  # cut by the window: not a word
        yield n - b, n - a, m.group()[::-1]


def _fragments(low: str, letters: bytes) -> Iterator[tuple[int, int]]:
    """Spans of phrase pieces at the start and the end of a lower-cased skeleton, whose ASCII
    letters are the "a" of ``letters`` (one byte per character)."""
    if len(low) < _WHOLE_MIN * 4 - 1:  # 3 words of 3 letters
        return
    # Most messages neither start nor end with a list word. A list word is ASCII letters with no
    # letter beside it: as the first (last) word, it is the first (last) run of "a" in
    # ``letters``, so two finds rule most messages out before any regex runs.
    start = letters.find(b"a")
    if start < 0:
        return  # no ASCII letter, no list word
    end = letters.find(b" ", start)
    if low[start : end if end >= 0 else len(low)] in _INDEX:
        first = _EDGE_WORD_RE.search(low)
        if first is not None and first.group() in _INDEX:
            piece, all_words = _edge_run(low, _head_words(low, first.start()))
            whole = all_words and len(low) <= _EDGE_CHARS
            if _piece(piece, whole):
                yield piece[0][0], piece[-1][1]
            if whole:
                return
    end = letters.rfind(b"a") + 1
    if low[letters.rfind(b" ", 0, end) + 1 : end] not in _INDEX:
        return  # the run read from the end would start with a word that is not on the list
    piece, _ = _edge_run(low, _tail_words(low))
    if _piece(piece, False):
        yield piece[-1][0], piece[0][1]


# --------------------------------------------------------------------------- 64 hex

# Whole runs of hex digits, 64 or more (hex_keys keeps exactly 64), found with long_runs in
# ``lower_bytes`` with hex digits as "h" and the rest as " " (2.6 µs a bench message with a txid
# for the regex that did it, which tried a match at every hex digit).
_HEX_RUN_BYTES = bytes(ord("h") if chr(b) in "0123456789abcdef" else ord(" ") for b in range(256))
_HEX64 = b"h" * 64
_CHUNKS_RE = re.compile(
    rf"(?<![0-9a-z])[0-9a-f]{{4,}}+(?:[^0-9{_LETTERS}]{{1,3}}+[0-9a-f]{{4,}}+){{1,15}}+(?![0-9a-z])"
)
_CHUNK_RE = re.compile(r"[0-9a-f]+")
# Pre-checks of _CHUNKS_RE on ``lower_bytes``, in C: 16 digits (a split key has them), and two
# chunks in a row: 4 hex digits, 1-3 separators, 4 more, with hex digits as "h", the letters past
# "f" as "z" and anything else as " " (a non-ASCII letter is no separator: taking it for one only
# lets more texts through to the regex).
_DIGITS = b"0123456789"
_HEX_BYTES = bytes(
    ord("h") if chr(b) in "0123456789abcdef" else ord("z") if ord("g") <= b <= ord("z") else ord(" ")
    for b in range(256)
)
_CHUNK_PAIRS = (b"hhhh hhhh", b"hhhh  hhhh", b"hhhh   hhhh")
_UUID_SHAPE = (8, 4, 4, 4, 12)
_LABEL_BEFORE = 48
# Matched on the original lower-cased (Traditional and Simplified Chinese both written out). No
# alternative starts with \b: then the engine skips ahead by first character (1.1 vs 9.3 µs on a
# bench message); a word matched inside another (``monkey``) only leans towards masking.
_TX_WORDS = (
    r"txid|txhash|tx\s*(?:id|hash)|txn?\b|hash\b|transaction|/tx/|交易|哈希|區塊|区块|хеш|хэш|транзакц"
    r"|트랜잭션|해시|işlem|giao\s+dịch|transacci|transaç"
)
_KEY_WORDS = (
    r"pk\b|keys?\b|priv|secret|wif\b|私[钥鑰]|密[钥鑰]|秘[钥鑰]|秘密鍵|ключ"
    r"|clave|chave|clé\b|chiave|schl[üu]ssel|anahtar|kh[óo]a|키"
)
# One flat alternation, tx words first: a group around each list would hide the first characters
# from the engine, which then tries every alternative at every position (1.9 vs 4.3 µs on the 48
# characters before a bench txid). Which list a match came from is asked afterwards, at its start.
_LABEL_RE = re.compile(f"{_TX_WORDS}|{_KEY_WORDS}")
_TX_LABEL_RE = re.compile(_TX_WORDS)
_KEY_ANY_RE = re.compile(_KEY_WORDS)
_TX_ANY_RE = re.compile(
    rf"{_TX_WORDS}|deposit|withdraw|transfer|credited|explorer|etherscan|tronscan|bscscan"
    r"|blockchair|mempool|blockstream|充值|充币|提现|提币|转账|到账|入金|出金|입금|출금|депозит|вывод|перевод"
    r"|yatır|retiro|depósito|saque"
)
_ETH_RE = re.compile(r"eth\b|ethereum|erc-?20|bsc\b|bep-?20|polygon|arbitrum|optimism|usdt|usdc")
# A mask written by an earlier pass is not key context ("[redacted:private_key]").
_MASK_RE = re.compile(r"\[redacted:[a-z_]+\]")


def _context(text: str) -> str:
    # Lower-cased only: NFKC would catch a disguised *label*, but a disguise there only makes a
    # txid look unlabelled, i.e. a key (the safe side). Masks from an earlier pass are no context.
    low = text.lower()
    return _MASK_RE.sub(" ", low) if "[redacted:" in low else low


def _hex_kind(original: str, orig_start: int, prefixed: bool, whole: list[str]) -> str:
    before = _context(original[max(0, orig_start - _LABEL_BEFORE) : orig_start])
    label: re.Match[str] | None = None
    for m in _LABEL_RE.finditer(before):
        label = m
    if label is not None:
        # The alternation takes a tx word wherever one matches, so the nearest label is a tx
        # label exactly when a tx word matches at its start.
        return "txid" if _TX_LABEL_RE.match(before, label.start()) else "private_key"
    if not whole:
        whole.append(_context(original))
    if _KEY_ANY_RE.search(whole[0]):
        return "private_key"
    if _TX_ANY_RE.search(whole[0]) or (prefixed and _ETH_RE.search(whole[0])):
        return "txid"
    return "private_key"


def _split_key(chunks: list[str]) -> bool:
    joined = "".join(chunks)
    digits = sum(c.isdigit() for c in joined)
    if digits < 16 or len(joined) - digits < 8:
        return False
    lengths = tuple(len(c) for c in chunks)
    return not (len(chunks) == 10 and lengths[:5] == _UUID_SHAPE and lengths[5:] == _UUID_SHAPE)


def _split_keys(low: str, lower_bytes: bytes) -> Iterator[tuple[int, int]]:
    if len(lower_bytes) - len(lower_bytes.translate(None, _DIGITS)) < 16:
        return
    hexes = lower_bytes.translate(_HEX_BYTES)
    if not any(pair in hexes for pair in _CHUNK_PAIRS):
        return
    for seq in _CHUNKS_RE.finditer(low):
        chunks = list(_CHUNK_RE.finditer(seq.group()))
        base = seq.start()
        for i in range(len(chunks)):
            total = 0
            for j in range(i, len(chunks)):
                total += chunks[j].end() - chunks[j].start()
                if total >= 64:
                    if total == 64 and j > i and _split_key([c.group() for c in chunks[i : j + 1]]):
                        yield base + chunks[i].start(), base + chunks[j].end()
                    break


def hex_keys(sk: Skeleton, whole: bool = True) -> Iterator[tuple[str, int, int]]:
    """``(kind, start, end)`` in the original for every 64-hex value: ``txid`` or ``private_key``.

    ``whole=False`` (the caller saw no alphanumeric run of 64+ in ``sk.text``) looks only for
    split values.
    """
    low = sk.lower
    context: list[str] = []  # the message lower-cased, on first need
    for a, b in long_runs(sk.lower_bytes.translate(_HEX_RUN_BYTES), _HEX64) if whole else ():
        if b - a != 64:
            continue
        prefixed = low[a - 2 : a] == "0x"
        start, end = sk.span(a - 2 if prefixed else a, b)
        yield _hex_kind(sk.original, start, prefixed, context), start, end
    for a, b in _split_keys(low, sk.lower_bytes):
        start, end = sk.span(a, b)
        yield "private_key", start, end
