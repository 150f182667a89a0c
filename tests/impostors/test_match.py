"""The matcher (impostors/): folding, verdicts, staff by id, and the labelled pairs' figures."""

from __future__ import annotations

import pytest

from impostors import Matcher, Name, StaffMember, compare, fold, skeleton
from impostors.evaluate import PARTS, load, score

STAFF = [
    StaffMember("telegram", "100", ("David Chen", "davidchen_coinly")),
    StaffMember("discord", "200", ("Coinly Support",)),
]


def verdict(staff: str, candidate: str) -> str:
    return compare(Name.of(staff), Name.of(candidate)).level


@pytest.mark.parametrize(
    ("lookalike", "original"),
    [
        ("Ðavid", "David"),
        ("Ιvan", "Ivan"),
        ("Dаvid", "David"),
        ("ＤａｖｉｄＣｈｅｎ", "DavidChen"),
        ("C0inly", "Coinly"),
    ],
)
def test_lookalikes_fold_to_the_original(lookalike: str, original: str) -> None:
    # A name has two looks (the skeleton before and after case folding); one in common is a match.
    assert set(fold(lookalike).looks) & set(fold(original).looks)
    assert fold(lookalike).plain != fold(original).plain or "compatibility characters" in fold(lookalike).tricks


def test_the_skeleton_follows_unicode_confusables() -> None:
    # Greek capital iota and Latin capital I are both "l" in TR39; Cyrillic а is a.
    assert skeleton("Ι") == skeleton("I") == "l"
    assert skeleton("а") == "a"


def test_invisible_characters_and_what_was_undone_are_named() -> None:
    folded = fold("Ivan\u200bPetrov\u202e")
    assert folded.plain == ("ivanpetrov",)
    assert "invisible characters" in folded.tricks
    assert "mixed scripts" in fold("Dаvid").tricks  # Cyrillic а among Latin letters
    assert "digits for letters" in fold("Dav1d").tricks
    assert not fold("Nguyễn Thị Lan").tricks


@pytest.mark.parametrize(
    ("staff", "candidate", "level"),
    [
        ("Coinly Support", "CoinlySupport", "impostor"),  # spacing
        ("Coinly Support", "Coinly Supprot", "impostor"),  # a staff word misspelt
        ("Coinly Support", "Coinly 客服", "impostor"),
        ("张伟", "张伟客服", "impostor"),  # a staff word glued on in a script without spaces
        ("Kate", "Kate | Mod", "impostor"),
        ("Kate", "Kate Wilson", "ok"),  # a namesake with a surname
        ("Kate", "Kate Wilson Support", "review"),  # ... who adds a staff word
        ("Maria Ivanova", "Maria Ivanovna", "ok"),  # a real near name: not worth a moderator's time
        ("Trần Minh Tuấn", "Trần Minh Tuân", "ok"),  # tone marks are letters in Vietnamese
        ("Sofia Garcia", "Sofía García", "impostor"),  # accents added to an unaccented name
        ("Coinly Support", "Coinly fan", "ok"),
        ("Omar", "Omer", "ok"),
    ],
)
def test_verdicts(staff: str, candidate: str, level: str) -> None:
    assert verdict(staff, candidate) == level


def test_staff_are_known_by_id_never_by_name() -> None:
    matcher = Matcher(STAFF)
    assert matcher.check("telegram", "100", ["Dаvid Chen Support"]).level == "ok"  # staff, any name
    flagged = matcher.check("telegram", "999", ["David Chen"])  # the very name, another id
    assert flagged.level == "impostor"
    assert flagged.staff == STAFF[0]
    assert flagged.staff_name == "David Chen"
    # The same id on another platform is another account: names are compared across platforms.
    assert matcher.check("discord", "100", ["Coinly Suppοrt"]).staff == STAFF[1]
    assert matcher.staff_member("discord", "200") == STAFF[1]
    assert matcher.staff_member("telegram", "200") is None


def test_every_name_of_a_member_is_checked_and_the_worst_verdict_wins() -> None:
    matcher = Matcher(STAFF)
    verdict = matcher.check("telegram", "5", ["Alice", "davidchen_coinly_support"])
    assert verdict.level == "impostor"
    assert verdict.name == "davidchen_coinly_support"
    assert matcher.check("telegram", "5", ["Alice", "alice99"]).level == "ok"


def test_the_labelled_pairs_meet_the_acceptance() -> None:
    """>= 200 pairs; on each part >= 95% of impostors flagged, <= 2% of innocents (docs/impostors.md)."""
    parts = {part: load(part) for part in PARTS}
    assert sum(map(len, parts.values())) >= 200
    for part, pairs in parts.items():
        result = score(part, pairs)
        assert result.impostors >= 50 and result.innocents >= 50
        assert result.catch_rate >= 0.95, (part, [p.candidate for p, _ in result.misses])
        assert result.false_alarm_rate <= 0.02, (part, [p.candidate for p, _ in result.alarms])


def test_a_bad_pair_file_names_its_line(tmp_path: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    from impostors import evaluate

    monkeypatch.setattr(evaluate, "PAIRS", tmp_path)
    (tmp_path / "x.jsonl").write_text('{"staff": "a", "candidate": "b", "label": "impostor"}\n{"staff": "a"}\n')
    with pytest.raises(ValueError, match=r"x.jsonl:2: not a name pair"):
        load("x")
