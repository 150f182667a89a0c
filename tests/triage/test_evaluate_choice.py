"""triage/evaluate.py's choice of soft rules (issue 15): a rule less precise than the model on the
training corpus becomes soft, unless the model would leave P1 messages the rule kept at P1; the
choice is written into a rule file without disturbing the rest of it."""

from __future__ import annotations

from rules.document import ModelPolicy
from rules.evaluate import default_source
from rules.loader import load
from triage.evaluate import RuleScore, differences, soft_choice, write_choice


def test_a_rule_less_precise_than_the_model_becomes_soft_but_never_at_the_cost_of_p1() -> None:
    doc = load(default_source(), "default.yaml").document
    scores = [
        RuleScore("payments-topic", "route", 100, 60, 80),  # less precise: soft
        RuleScore("payments-topic", "priority", 100, 50, 70),
        RuleScore("account-takeover", "route", 100, 90, 80),  # more precise: hard
        RuleScore("account-takeover", "priority", 100, 70, 80, rule_p1=60, model_p1=55),  # loses P1s: hard
        RuleScore("vip-sender", "priority", 10, 1, 9),  # a raise is never soft
    ]
    assert soft_choice(doc, scores) == {"payments-topic": ("priority", "route")}


def test_the_choice_written_into_the_shipped_rules_reads_back_as_chosen() -> None:
    text = default_source()
    soft = {"payments-topic": ("route",), "kyc": ("priority", "route")}
    section = ModelPolicy(route_min=0.5, p1_min=0.6, override_route_min=0.7)
    written = write_choice(text, soft, section)
    doc = load(written, "written.yaml").document
    assert differences(doc, soft, section) == []
    assert differences(load(text, "default.yaml").document, soft, section) != []
    # Everything else is as it was: only soft: lines and the model: section's lines changed.
    changed = set(text.splitlines()) ^ set(written.splitlines())
    assert all("soft:" in line or (line.startswith("  ") and "_min:" in line) for line in changed), changed
