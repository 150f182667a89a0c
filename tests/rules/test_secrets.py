"""Tests for rules.secrets: the skeleton and its way back to the original, the checksum."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from mnemonic import Mnemonic

from rules.detectors import detect
from rules.secrets import phrase_checksum_ok, skeleton
from tests.rules.test_secret_evasions import PHRASE, PHRASE_DISGUISES


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
