"""Issue 13, finding 10: hostile rule drafts are refused with a reason before they cost anything.

YAML alias bombs, recursive aliases and deep nesting (rules/loader.py), and regex sizes per
pattern, per rule and per rule set (rules/regex.py); the shipped rule set stays within them.
"""

from __future__ import annotations

import importlib.resources

import pytest

from rules import Engine, MessageIn, RuleSetError
from rules.regex import MAX_PATTERN_CHARS, MAX_RULE_PATTERN_CHARS, MAX_RULESET_PATTERN_CHARS

HEAD = "version: 1\ngroups:\n  - id: general\ndefaults: {group: general, priority: P3}\n"


def alias_bomb(levels: int) -> str:
    """The draft of the finding: each level a list of nine aliases of the level below."""
    lines = ['x0: &x0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels + 1):
        lines.append(f"x{i}: &x{i} [" + ", ".join([f"*x{i - 1}"] * 9) + "]")
    return HEAD + "\n".join(lines) + "\nrules: []\n"


def rules_with(patterns: list[str]) -> str:
    body = "".join(
        f"  - id: r{k}\n    when: {{regex: '{p}'}}\n    then: {{tags: [t{k}]}}\n" for k, p in enumerate(patterns)
    )
    return HEAD + "rules:\n" + body


def refusal(source: str) -> str:
    with pytest.raises(RuleSetError) as caught:
        Engine.from_yaml(source, "draft.yaml")
    return str(caught.value)


def test_nested_aliases_are_refused_before_they_expand() -> None:
    source = alias_bomb(9)  # ~9^10 nodes once expanded; 13.5 s and 1.15 GB before the limit
    assert len(source) < 1000
    assert "the YAML aliases expand to" in refusal(source)


def test_a_recursive_alias_is_refused() -> None:
    assert "refers to a node that contains it" in refusal(HEAD + "loop: &a [*a]\nrules: []\n")


def test_nesting_beyond_the_limit_is_refused() -> None:
    assert "nested more than" in refusal(HEAD + "deep: " + "[" * 100 + "]" * 100 + "\nrules: []\n")


def test_a_few_shared_aliases_are_still_fine() -> None:
    source = HEAD + (
        "rules:\n"
        "  - id: a\n    when: {contains_any: &words [hacked, stolen]}\n    then: {tags: [a]}\n"
        "  - id: b\n    when: {contains_any: *words}\n    then: {tags: [b]}\n"
    )
    decision = Engine.from_yaml(source, "draft.yaml").evaluate(MessageIn(channel="telegram", text="I was hacked"))
    assert set(decision.tags) >= {"a", "b"}


def test_a_thousand_word_alternation_is_refused_with_the_reason() -> None:
    words = "|".join(f"word{i}" for i in range(1000))
    text = refusal(rules_with([f"\\b({words})\\b"] * 50))
    assert f"at most {MAX_PATTERN_CHARS:,}" in text and "use a contains_any condition" in text
    assert "draft.yaml:" in text and "rule r0" in text


def test_pattern_budget_per_rule_and_per_rule_set() -> None:
    half = "a" * (MAX_PATTERN_CHARS - 10)
    per_rule = HEAD + (
        "rules:\n  - id: two\n    when:\n      all:\n"
        + "".join(f"        - regex: '{half}{i}'\n" for i in range(MAX_RULE_PATTERN_CHARS // len(half) + 1))
        + "    then: {tags: [x]}\n"
    )
    assert f"at most {MAX_RULE_PATTERN_CHARS:,} per rule" in refusal(per_rule)
    many = [f"{half}{i}" for i in range(MAX_RULESET_PATTERN_CHARS // len(half) + 1)]
    assert f"at most {MAX_RULESET_PATTERN_CHARS:,}" in refusal(rules_with(many))


def test_the_shipped_rule_set_is_well_within_the_limits() -> None:
    source = (importlib.resources.files("rules") / "default.yaml").read_text(encoding="utf-8")
    assert Engine.from_yaml(source, "default.yaml").groups
