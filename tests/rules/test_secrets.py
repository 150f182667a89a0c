"""Tests for rules.secrets: the skeleton and its way back to the original, the checksum."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mnemonic import Mnemonic

from router.bench_rules import corpus
from rules import redact_secrets
from rules.detectors import SECRET_KINDS, detect
from rules.secrets import _RUN_RE, long_runs, phrase_checksum_ok, skeleton
from tests.rules.conftest import SAMPLES
from tests.rules.test_secret_evasions import KEY, PHRASE, PHRASE_DISGUISES
from tests.secretgen import Secret, phrase_survivors, split

CORPUS = Path(__file__).resolve().parents[2] / "triage" / "corpus"


def test_mask_covers_the_original_span_of_a_disguised_phrase() -> None:
    disguised = PHRASE_DISGUISES["zero_width"]
    text = f"前文 {disguised} 后文"
    (f,) = detect(text, frozenset({"seed_phrase"}))
    # From the first letter to the last: the zero-width joiner before it is left (invisible).
    assert text[f.start : f.end] == disguised.removeprefix("\u200d")
    sk = skeleton(text)
    assert sk.lower == f"前文 {PHRASE} 后文"


def test_skeleton_is_the_text_for_ascii() -> None:
    sk = skeleton("Plain ASCII")
    assert sk.text == "Plain ASCII" and sk.lower == "plain ascii" and sk.span(2, 5) == (2, 5)


def test_skeleton_folds_disguises_and_maps_back() -> None:
    text = "ＡＢＣ\u200bdеf 🔥 ﬁ x"  # full-width, zero-width, Cyrillic е, emoji, ligature
    sk = skeleton(text)
    assert sk.text == "ABCdef 🔥 fi x"
    assert sk.lower == "abcdef 🔥 fi x"
    # "def" in the skeleton is "dеf" in the text; "fi" both come from the ligature.
    assert text[slice(*sk.span(3, 6))] == "dеf"
    assert text[slice(*sk.span(10, 11))] == "ﬁ"
    assert text[slice(*sk.span(9, 10))] == "ﬁ"
    assert sk.span(12, 13) == (len(text) - 1, len(text))


def test_skeleton_beyond_the_table() -> None:
    # A tag character (plane 14, Cf) is dropped; a CJK extension B ideograph is kept.
    text = "a\U000e0041b \U00020000"
    assert skeleton(text).text == "ab \U00020000"


def test_checksum_matches_the_reference() -> None:
    mnemo = Mnemonic("english")
    for words in (PHRASE.split(), [*PHRASE.split()[:11], "zoo"], [*["abandon"] * 11, "about"], ["zoo"] * 24):
        assert phrase_checksum_ok(words) == mnemo.check(" ".join(words)), words


# Kept, deleted (zero-width, tag, Hangul filler), expanded (ligature), folded (full-width,
# Cyrillic, NBSP), decomposed (precomposed and combining accents), past the table (U+20000).
_PIECES = st.sampled_from(
    (
        *("a", "Z", " ", "\u200b", "\ufb01", "\uff41", "\u0430", "中", "ё", "\U000e0041"),
        *("\u00e9", "e\u0301", "한", "🔥\ufe0f", "\U00020000", "\u00a0", "\u3164"),
    )
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_PIECES, max_size=30))
def test_every_skeleton_character_maps_back_to_the_one_it_came_from(pieces: list[str]) -> None:
    text = "".join(pieces)
    sk = skeleton(text)
    previous = 0
    for p in range(len(sk.text)):
        a, b = sk.span(p, p + 1)
        assert b == a + 1 and a >= previous
        # The character alone, as it is (fast path) or folded (a zero-width space forces the
        # translate path): the text took one of the two.
        assert sk.text[p] in text[a] + skeleton(text[a] + "\u200b").text
        previous = a
    if sk.text:
        assert sk.span(0, len(sk.text))[1] <= len(text)


@pytest.mark.parametrize("secret", split(seed=13), ids=lambda s: s.evasion)
def test_a_phrase_sent_in_pieces_is_masked_piece_by_piece(secret: Secret) -> None:
    # Each message is masked on its own, as the inbox does on append; afterwards no 4 consecutive
    # words of the phrase remain in clear in any message, nor across two consecutive ones.
    outputs = [redact_secrets(m) for m in secret.messages]
    assert "[redacted:seed_phrase]" in "".join(outputs)
    for a, b in itertools.pairwise(["", *outputs]):
        assert not phrase_survivors(secret, f"{a}\n{b}"), (a, b)


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("my first words: absorb abstract absurd abuse", "my first words: [redacted:seed_phrase]"),
        ("absorb abstract absurd abuse, then?", "[redacted:seed_phrase], then?"),  # "then": everyday
        ("帮我看 absorb abstract absurd abuse 谢谢", "帮我看 [redacted:seed_phrase] 谢谢"),
        ("«absorb abstract absurd abuse» 谢谢", "«[redacted:seed_phrase]» 谢谢"),  # non-ASCII around
        ("zzz: absorb abstract absurd abuse😀", "zzz: [redacted:seed_phrase]😀"),  # only the tail's
        ("absorb abstract absurd", "[redacted:seed_phrase]"),  # a whole message of 3
        ("absorb abstract about absurd abuse", "[redacted:seed_phrase]"),  # 1 everyday word in 5
        ("absorb abstract absurd about", "absorb abstract absurd about"),  # 3 and everyday: not whole
        ("crazy pump today", "crazy pump today"),  # 3 with an everyday word: a sentence
        ("my withdrawal is still pending since today", "my withdrawal is still pending since today"),
        ("gas fee very high", "gas fee very high"),  # 2 everyday words in 4
        # Chinese between the words: prose in two languages, not a piece.
        (
            "我的 withdrawal 被 reject 了，reason 写的 risk control，钱还卡着",
            "我的 withdrawal 被 reject 了，reason 写的 risk control，钱还卡着",
        ),
        ("I wrote abandon ability able about in my notes", "I wrote abandon ability able about in my notes"),
    ],
)
def test_pieces_at_the_edges(text: str, masked: str) -> None:
    assert redact_secrets(text) == masked


def test_pieces_are_rare_in_what_people_write() -> None:
    # The rule for pieces must not mask what people write. Of the 220 samples, 5,000 bench messages
    # and the 9,083 messages of the triage corpus (about 14,900 texts with the subjects), none
    # holding a whole phrase (no run of 12 list words), 5 corpus texts have a piece, all English
    # made of 3-5 common list words at an end or alone: "… 'under review'. amazing service,
    # truly", "'on hold' since this morning", and three e-mail subjects, "Final notice before small
    # claims", "Final notice before legal action", "Remove old device". One in 2,500 texts or more
    # would be a regression (the bound grows with the corpus, the rate may not).
    texts = [json.loads(line)["text"] for line in SAMPLES.read_text(encoding="utf-8").splitlines() if line.strip()]
    texts += [m.text for m in corpus(5000, seed=7)]
    for path in sorted(CORPUS.glob("*/*.jsonl")):
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        texts += [r["text"] for r in rows] + [r["subject"] for r in rows if r.get("subject")]
    pieces = [
        t
        for t in texts
        if "[redacted:" not in t and detect(t, frozenset({"seed_phrase"})) and not _RUN_RE.search(skeleton(t).lower)
    ]
    assert len(texts) > 5220 + 9000
    assert len(pieces) < len(texts) / 2500, pieces


# ---------------------------------------------------------------- pre-checks: what is just enough
# Every scan has a cheap pre-check that rules out the texts that cannot hold what it looks for.
# These texts are at a pre-check's limit: a stricter one would miss them.


def test_a_phrase_glued_by_digits_from_the_first_character_is_found() -> None:
    # The first word at offset 0 (nothing before it), a digit, not a space, before every other.
    # Four everyday words: still a phrase, but too many for a piece at the message's start, so
    # only the search for whole phrases can find it.
    words = "athlete mechanic account pluck balance physical check trend coin pet already around"
    text = "".join(f"{w}{i}" for i, w in enumerate(words.split(), 1))
    found = detect(text, SECRET_KINDS)
    assert [(f.kind, f.start, f.end) for f in found] == [("seed_phrase", 0, len(text) - 2)]


# 64 hex digits of which exactly 16 are digits, one at the head of each 4-digit chunk.
KEY_16_DIGITS = "".join(f"{i % 10}{'abcdef'[i % 6]}{'fedcba'[i % 6]}{'cafebe'[i % 6]}" for i in range(16))


@pytest.mark.parametrize("sep", [" - ", "-", "、", "\u3000\u3000", " / "])
def test_a_key_in_the_smallest_chunks_with_the_most_separators_is_found(sep: str) -> None:
    # Chunks of 4, the least a chunk may have; 3 separator characters, the most between two; a
    # non-ASCII separator; only the 16 digits a split key needs.
    assert sum(c.isdigit() for c in KEY_16_DIGITS) == 16 and len(KEY_16_DIGITS) == 64
    text = sep.join(KEY_16_DIGITS[i : i + 4] for i in range(0, 64, 4))
    found = detect(f"here: {text}", SECRET_KINDS)
    assert [(f.kind, f.start, f.end) for f in found] == [("private_key", 6, 6 + len(text))]


def test_a_disguised_address_of_the_shortest_length_is_found() -> None:
    # 14 characters, the shortest segwit address (BIP-350's own), typed full-width: the run the
    # pre-check looks for is in the skeleton, not in the text as typed.
    addr = "BC1SW50QGDZ25J"
    typed = "".join(chr(ord(c) + 0xFEE0) for c in addr)
    found = detect(f"addr {typed} thanks")
    assert [(f.kind, f.start, f.end) for f in found] == [("btc_address", 5, 5 + len(typed))]


def test_no_skeleton_character_changes_ascii_ness_when_lower_cased() -> None:
    # Skeleton.lower_bytes stands for the skeleton's text too (detectors look for address runs in
    # it): lower() must keep ASCII ASCII and the rest not. The characters it would not keep so are
    # folded by the skeleton.
    crossing = [chr(cp) for cp in range(0x80, 0x110000) if chr(cp).lower().isascii() or len(chr(cp).lower()) != 1]
    assert crossing == ["\u0130", "\u212a"]
    for ch in crossing:
        assert skeleton(f"a{ch}b").text.isascii()


def test_the_nearest_label_decides_when_a_key_word_comes_first() -> None:
    assert [f.kind for f in detect(f"lost my keys, the txid is {KEY}")] == ["txid"]
    assert [f.kind for f in detect(f"txid? no, my key: {KEY}")] == ["private_key"]


@pytest.mark.parametrize("prose", ["la " * 200, "我的提现一直没到账 " * 40])
def test_pieces_at_the_edges_of_a_long_message(prose: str) -> None:
    # Past the 432 characters looked at from each end: the run of list words is read from the
    # edge inwards and stops at the first word of prose.
    piece = "absorb abstract absurd abuse"
    assert redact_secrets(f"{piece}, {prose}") == f"[redacted:seed_phrase], {prose}"
    assert redact_secrets(f"{prose} {piece}") == f"{prose} [redacted:seed_phrase]"


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab 1é", max_size=60), st.integers(min_value=1, max_value=6))
def test_long_runs_are_what_the_regex_finds(text: str, least: int) -> None:
    # The runs of ASCII letters and digits, as the address scan looks for them.
    alnum = bytes(ord("a") if chr(b).isalnum() and b < 128 else ord(" ") for b in range(256))
    view = text.encode("ascii", "replace").translate(alnum)
    expected = [m.span() for m in re.finditer(f"[0-9A-Za-z]{{{least},}}", text)]
    assert list(long_runs(view, b"a" * least)) == expected
