"""The rule file: model, loader positions, every error at once, warnings, JSON Schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rules import Engine, RuleError, RuleSetError
from rules.loader import load
from rules.schema import render

from .conftest import rules_yaml


def errors_of(text: str) -> list[RuleError]:
    with pytest.raises(RuleSetError) as info:
        load(text, "f.yaml")
    return info.value.errors


def test_valid_document_loads() -> None:
    loaded = load(rules_yaml("  - {id: a, when: {always: true}, then: {tags: [x]}}\n"))
    assert loaded.document.rules[0].id == "a"
    assert loaded.warnings == ()


def test_error_format() -> None:
    err = RuleError("f.yaml", 3, 5, "r1", "unknown group 'x'")
    assert str(err) == "f.yaml:3:5: rule r1: unknown group 'x'"
    warning = RuleError("f.yaml", 3, 5, "r1", "never fires", "warning")
    assert str(warning) == "f.yaml:3:5: rule r1: warning: never fires"
    assert str(RuleError("f.yaml", 1, 1, None, "bad")) == "f.yaml:1:1: bad"


BAD = """\
version: 1
groups:
  - {id: general}
  - id: payments
    hours: {tz: Mars/Olympus, from: "25:00", to: "18:00"}
defaults: {group: nowhere, priority: P3}
templates:
  faq: {en: hi}
rules:
  - id: a
    when: {contains_any: [withdraw, " "]}
    then: {route: paymnts, priority: P7}
  - id: a
    when:
      - regex: '(a)\\1'
      - regex: '(?=x)'
      - regex: 'a{1001}'
      - detector: [txid, wallet]
      - {}
      - contains_anyy: [x]
    then: {tags: [x], auto_reply: nope, bogus: 1}
  - id: c
    when: {any: []}
    then: {route: general}
  - id: d
    when: {business_hours: nope}
    then: {route: general}
  - when: {contains_all: []}
    then: {tags: [x], priority: P1, raise_priority: 1}
"""


def test_every_error_at_once_with_positions() -> None:
    errors = errors_of(BAD)
    got = {(e.line, e.col, e.rule_id): e.reason for e in errors}

    def find(line: int, rule: str | None, needle: str) -> None:
        hits = [r for (ln, _c, rid), r in got.items() if ln == line and rid == rule]
        assert any(needle in r for r in hits), (line, rule, needle, got)

    find(5, None, "unknown time zone 'Mars/Olympus' (an IANA name such as Europe/Berlin)")
    find(5, None, "bad time '25:00'")
    find(6, None, "unknown group 'nowhere'")
    find(11, "a", "empty keyword")
    find(12, "a", "unknown group 'paymnts'")
    find(12, "a", "bad priority 'P7'")
    find(13, "a", "duplicate rule id 'a'")
    find(15, "a", "backreferences")
    find(16, "a", "lookahead/lookbehind")
    find(17, "a", "repeat counts over 1000")
    find(18, "a", "unknown detector kind 'wallet'")
    find(19, "a", "empty condition")
    find(20, "a", "unknown condition 'contains_anyy' (did you mean 'contains_any'?)")
    find(21, "a", "unknown template 'nope'")
    find(21, "a", "unknown field 'bogus'")
    find(23, "c", "empty condition")
    find(26, "d", "unknown group 'nope'")
    find(28, "#5", "missing field id")
    find(28, "#5", "empty keyword list")
    find(29, "#5", "priority and raise_priority are exclusive")
    assert [e.line for e in errors] == sorted(e.line for e in errors)


def test_columns_point_at_the_value() -> None:
    (err,) = errors_of(rules_yaml("  - {id: a, when: {always: true}, then: {route: nope}}\n"))
    line = rules_yaml("  - {id: a, when: {always: true}, then: {route: nope}}\n").splitlines()[err.line - 1]
    assert line[err.col - 1 :].startswith("nope")


def test_unknown_field_points_at_the_key() -> None:
    text = rules_yaml("  - {id: a, when: {always: true}, then: {tagz: [x]}}\n")
    (err,) = errors_of(text)
    assert text.splitlines()[err.line - 1][err.col - 1 :].startswith("tagz")
    assert "did you mean 'tags'" in err.reason


def test_yaml_syntax_error_has_position() -> None:
    (err,) = errors_of("version: 1\ngroups: [\n")
    assert err.reason.startswith("invalid YAML")
    assert err.line >= 2


def test_not_a_mapping() -> None:
    (err,) = errors_of("- a\n- b\n")
    assert "mapping" in err.reason


def test_duplicate_yaml_key_is_an_error() -> None:
    errors = errors_of(
        rules_yaml("  - id: a\n    when: {always: true}\n    when: {channel: x}\n    then: {tags: [x]}\n")
    )
    assert any("duplicate key 'when'" in e.reason and e.rule_id == "a" for e in errors)


def test_duplicate_group_id() -> None:
    text = "version: 1\ngroups: [{id: g}, {id: g}]\ndefaults: {group: g}\n"
    assert any("duplicate group id 'g'" in e.reason for e in errors_of(text))


def test_more_than_one_key_in_a_condition() -> None:
    (err,) = errors_of(rules_yaml("  - {id: a, when: {channel: x, account: y}, then: {tags: [t]}}\n"))
    assert "exactly one key" in err.reason


def test_escalate_needs_route() -> None:
    (err,) = errors_of(rules_yaml("  - {id: a, when: {always: true}, then: {escalate: true}}\n"))
    assert "escalate needs route" in err.reason


def test_yaml_12_booleans_keep_no_as_a_keyword() -> None:
    # Under YAML 1.1 `no` (Spanish/Portuguese "no") would be False and refused as a keyword.
    loaded = load(rules_yaml("  - {id: a, when: {contains_any: [no, yes, on]}, then: {tags: [x]}}\n"))
    cond = loaded.document.rules[0].when
    assert cond.contains_any == ["no", "yes", "on"]  # type: ignore[union-attr]


def test_numbers_are_keywords_and_unquoted_times_work() -> None:
    text = BASE_HOURS.replace("FROM", "09:00").replace("TO", "18:00")
    loaded = load(text + "  - {id: a, when: {contains_any: [10001]}, then: {tags: [x]}}\n")
    assert loaded.document.groups[0].hours is not None
    assert loaded.document.groups[0].hours.end == "18:00"
    assert loaded.document.rules[0].when.contains_any == ["10001"]  # type: ignore[union-attr]


BASE_HOURS = """\
version: 1
groups:
  - {id: g, hours: {tz: UTC, from: FROM, to: TO}}
defaults: {group: g}
rules:
"""


def test_warning_for_rules_after_an_unconditional_stop() -> None:
    loaded = load(
        rules_yaml(
            "  - {id: first, when: {channel: x}, then: {tags: [a], stop: true}}\n"
            "  - {id: all-stop, when: [{always: true}], then: {tags: [b], stop: true}}\n"
            "  - {id: dead1, when: {channel: y}, then: {tags: [c]}}\n"
            "  - {id: dead2, when: {channel: z}, then: {tags: [d]}}\n"
        ),
        "f.yaml",
    )
    assert [w.rule_id for w in loaded.warnings] == ["dead1", "dead2"]
    assert all(w.severity == "warning" and "never fires" in w.reason for w in loaded.warnings)


def test_a_bad_file_never_replaces_a_running_engine(make_engine) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine("  - {id: a, when: {always: true}, then: {tags: [x]}}\n")
    with pytest.raises(RuleSetError):
        engine = Engine.from_yaml("version: 2\n", "bad.yaml")
    assert engine.rule_count == 1  # the old object is untouched


def test_committed_schema_is_generated() -> None:
    committed = (Path(__file__).resolve().parents[2] / "rules" / "schema.json").read_text("utf-8")
    assert committed == render(), "regenerate: switchboard rules schema > rules/schema.json"


def test_schema_describes_conditions() -> None:
    schema = json.loads(render())
    assert schema["$schema"].endswith("2020-12/schema")
    assert {"Always", "ContainsAny", "Regex", "Detector", "Not", "Then"} <= set(schema["$defs"])
    assert schema["$defs"]["Then"]["additionalProperties"] is False
