"""Articles from Markdown files with front matter: loading, refusals with their reasons, export."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kb import KBError, KnowledgeBase, export_dir, load_dir
from tests.kb.conftest import FIXTURES, GROUPS

GOOD = """---
id: memo-tag
lang: en
title: "Memo, tag: what they are"
tags: [memo, tag]
groups: [payments]
auto: true
---
Some coins need a memo.
"""


def test_fixture_kb_loads_with_its_variants(fixture_kb: KnowledgeBase) -> None:
    assert fixture_kb.ids() == ("api-keys", "p2p-disputes", "password-reset", "withdrawal-times")
    a = fixture_kb.get("password-reset")
    assert list(a.variants) == ["zh-Hant", "en", "ko"]  # LANGS order
    assert a.groups == ("security", "general") and a.tags == ("password", "reset") and a.auto
    assert a.variants["ko"].title == "비밀번호 재설정"
    assert not fixture_kb.get("p2p-disputes").auto
    # The body keeps its paragraphs, without the separator's newline.
    assert fixture_kb.get("withdrawal-times").variants["en"].body.startswith("A withdrawal usually")
    assert "\n\nIf it shows completed" in fixture_kb.get("withdrawal-times").variants["en"].body


def test_variant_falls_back_to_the_related_chinese_then_english(fixture_kb: KnowledgeBase) -> None:
    a = fixture_kb.get("password-reset")
    assert a.variant("zh").lang == "zh-Hant"
    assert a.variant("ru").lang == "en"
    assert fixture_kb.get("withdrawal-times").variant("zh-Hant").lang == "zh"


def test_export_round_trips_byte_for_byte(tmp_path: Path, fixture_kb: KnowledgeBase) -> None:
    written = export_dir(fixture_kb, tmp_path)
    assert len(written) == 9
    again = load_dir(tmp_path, GROUPS)
    assert again == fixture_kb and again.digest == fixture_kb.digest
    for path in written:
        original = FIXTURES / "kb" / path.relative_to(tmp_path)
        assert path.read_text(encoding="utf-8") == original.read_text(encoding="utf-8"), path


def test_export_quotes_what_yaml_would_misread(tmp_path: Path) -> None:
    (tmp_path / "src" / "memo-tag").mkdir(parents=True)
    (tmp_path / "src" / "memo-tag" / "en.md").write_text(GOOD, encoding="utf-8")
    base = load_dir(tmp_path / "src", GROUPS)
    export_dir(base, tmp_path / "out")
    assert (tmp_path / "out" / "memo-tag" / "en.md").read_text(encoding="utf-8") == GOOD
    assert base.get("memo-tag").variants["en"].title == "Memo, tag: what they are"


def _kb_with(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / "kb" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return tmp_path / "kb"


def _errors(directory: Path) -> list[str]:
    with pytest.raises(KBError) as info:
        load_dir(directory, GROUPS)
    return info.value.errors


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("no front matter here\n", "no front matter"),
        ("---\nid: [unclosed\n---\nbody\n", "front matter is not valid YAML"),
        ("---\n- a list\n---\nbody\n", "front matter must be a mapping"),
        (GOOD.replace("auto: true\n", ""), "missing field 'auto'"),
        (GOOD.replace("auto: true\n", "auto: true\nauthor: me\n"), "unknown field 'author'"),
        (GOOD.replace("groups: [payments]", "groups: [payments, kyc]"), "unknown group(s) kyc"),
        (GOOD.replace("groups: [payments]", "groups: []"), "groups must be a non-empty list"),
        (GOOD.replace("auto: true", "auto: maybe"), "auto must be true or false"),
        (GOOD.replace("lang: en", "lang: fr"), "lang 'fr' is not one of"),
        (GOOD.replace("tags: [memo, tag]", "tags: [memo tag]"), "tags must be a list of words"),
        (GOOD.replace('title: "Memo, tag: what they are"', 'title: ""'), "title must be a non-empty text"),
        (GOOD.replace("Some coins need a memo.\n", "\n  \n"), "empty body"),
        (GOOD.replace("id: memo-tag", "id: Memo Tag"), "must be lowercase letters"),
    ],
)
def test_a_bad_file_is_refused_with_its_reason(tmp_path: Path, text: str, reason: str) -> None:
    errors = _errors(_kb_with(tmp_path, {"memo-tag/en.md": text}))
    assert any(reason in e and "memo-tag/en.md" in e for e in errors), errors


def test_file_and_folder_names_must_match_the_front_matter(tmp_path: Path) -> None:
    errors = _errors(_kb_with(tmp_path, {"memo/en.md": GOOD, "memo-tag/ru.md": GOOD}))
    assert any("id 'memo-tag' differs from its folder's name 'memo'" in e for e in errors), errors
    assert any("lang 'en' differs from the file's name 'ru.md'" in e for e in errors), errors


def test_variants_disagreeing_on_metadata_are_refused(tmp_path: Path) -> None:
    ru = GOOD.replace("lang: en", "lang: ru").replace("auto: true", "auto: false").replace("[memo, tag]", "[memo]")
    errors = _errors(_kb_with(tmp_path, {"memo-tag/en.md": GOOD, "memo-tag/ru.md": ru}))
    assert errors == [
        f"{tmp_path}/kb/memo-tag/ru.md: tags, auto differ from en.md's (variants of an article must agree)"
    ]


def test_every_problem_is_reported_and_nothing_is_loaded(tmp_path: Path) -> None:
    shutil.copytree(FIXTURES / "kb", tmp_path / "kb")
    (tmp_path / "kb" / "api-keys" / "ko.md").write_text("oops\n", encoding="utf-8")
    bad = (tmp_path / "kb" / "password-reset" / "en.md").read_text(encoding="utf-8").replace("[security,", "[nope,")
    (tmp_path / "kb" / "password-reset" / "en.md").write_text(bad, encoding="utf-8")
    errors = _errors(tmp_path / "kb")
    # Both files' problems, in both articles (a refused file is not compared with its siblings).
    assert len(errors) == 2, errors
    assert "api-keys/ko.md: no front matter" in errors[0]
    assert "password-reset/en.md: unknown group(s) nope" in errors[1]


def test_an_empty_or_missing_directory_is_refused(tmp_path: Path) -> None:
    assert _errors(tmp_path) == [f"{tmp_path}: no articles (expected <id>/<lang>.md files)"]
    assert _errors(tmp_path / "absent") == [f"{tmp_path / 'absent'}: not a directory"]
