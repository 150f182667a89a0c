"""Soft rule decisions (``then: {soft: …}``, issue 15): the triage model may override a soft rule's
route or priority when it disagrees with at least the ``model:`` section's ``override_route_min``
(``override_priority_min``) confidence; hard rules keep full control; without a model a soft rule
is exactly a hard one.

As in test_intent_rules.py, the tiny model's probabilities are asked first and thresholds are set
at, or just above, what it says.
"""

from __future__ import annotations

import json
import re
from importlib import resources

import pytest

from rules import Engine, MessageIn, RuleSetError
from rules.intent import IntentModel, Policy, Prediction, Ruled, decide
from tests.rules.conftest import SAMPLES
from tests.rules.test_intent_rules import GROUPS, TINY, above, top

TEXT = "I want a refund for my deposit"


@pytest.fixture(scope="module")
def tiny() -> IntentModel:
    return IntentModel.load(TINY)


def other_group(tiny: IntentModel, text: str = TEXT) -> tuple[str, str, float]:
    """A group the model does not choose for ``text``, and the one it does with its probability."""
    group, p = top(tiny.predict(text).group)
    wrong = next(g for g in ("complaints", "trading", "general") if g != group)
    return wrong, group, p


def other_priority(tiny: IntentModel, text: str = TEXT) -> tuple[str, str, float]:
    prio, p = top(tiny.predict(text).priority)
    wrong = next(x for x in ("P4", "P3") if x != prio)
    return wrong, prio, p


def engine(rule_then: str, section: str, model: IntentModel | None) -> Engine:
    source = GROUPS + f"rules:\n  - {{id: topic, when: {{contains_any: [refund]}}, then: {rule_then}}}\n"
    return Engine.from_yaml(source + f"model: {section}\n", "soft.yaml", model=model)


# ---------------------------------------------------------------- the route


def test_the_model_overrides_a_soft_route_at_override_route_min_and_not_below(tiny: IntentModel) -> None:
    wrong, group, p = other_group(tiny)
    then = f"{{route: {wrong}, escalate: true, soft: [route]}}"
    d = engine(then, f"{{override_route_min: {p!r}}}", tiny).evaluate(MessageIn("sandbox", TEXT))
    assert (d.group, d.routed_by, d.escalate) == (group, "model", False)  # the rule's escalate went with it
    entry = d.trace[-1].to_dict()
    assert entry["rule"] == "model" and entry["model"]["applied"] == "override_route"
    assert entry["model"]["overrode"] == [{"decision": "route", "rule": "topic", "was": wrong, "min": p}]

    d = engine(then, f"{{override_route_min: {above(p)!r}, p1_min: 1.0}}", tiny).evaluate(MessageIn("sandbox", TEXT))
    assert (d.group, d.routed_by, d.escalate) == (wrong, "topic", True)
    assert d.trace[-1].model is not None and d.trace[-1].model.overrode == ()


def test_a_hard_route_is_never_overridden(tiny: IntentModel) -> None:
    wrong, _, _ = other_group(tiny)
    for then in (f"{{route: {wrong}}}", f"{{route: {wrong}, priority: P2, soft: [priority]}}"):
        d = engine(then, "{route_min: 0.0, override_route_min: 0.0, p1_min: 1.0}", tiny).evaluate(
            MessageIn("sandbox", TEXT)
        )
        assert (d.group, d.routed_by) == (wrong, "topic")


def test_the_model_agreeing_with_a_soft_route_overrides_nothing(tiny: IntentModel) -> None:
    _, group, _ = other_group(tiny)
    d = engine(f"{{route: {group}, soft: true}}", "{override_route_min: 0.0}", tiny).evaluate(
        MessageIn("sandbox", TEXT)
    )
    assert (d.group, d.routed_by) == (group, "topic")
    assert d.trace[-1].model is not None and d.trace[-1].model.applied == ()


# ---------------------------------------------------------------- the priority


def test_the_model_replaces_a_soft_priority_at_override_priority_min_and_not_below(tiny: IntentModel) -> None:
    wrong, prio, p = other_priority(tiny)
    then = f"{{route: complaints, priority: {wrong}, soft: [priority]}}"
    d = engine(then, f"{{override_priority_min: {p!r}}}", tiny).evaluate(MessageIn("sandbox", TEXT))
    assert (d.priority, d.group, d.routed_by) == (int(prio[1:]), "complaints", "topic")
    entry = d.trace[-1].to_dict()["model"]
    assert entry["applied"] == "override_priority"
    assert entry["overrode"] == [{"decision": "priority", "rule": "topic", "was": wrong, "min": p}]

    d = engine(then, f"{{override_priority_min: {above(p)!r}, p1_min: 1.0}}", tiny).evaluate(MessageIn("sandbox", TEXT))
    assert d.priority == int(wrong[1:])


def test_a_hard_priority_is_never_lowered_by_an_override() -> None:
    """A soft P1 and a hard P2: the model's P4 replaces the soft P1, but only down to the hard P2."""
    prediction = Prediction({"general": 1.0}, {"P4": 0.9, "P1": 0.0, "P2": 0.05, "P3": 0.05})
    policy = Policy(override_priority_min=0.5, p1_min=0.99)
    ruled = Ruled("security", False, 1, 2, "hard-p2", "soft-p1")
    assert ruled.priority_soft
    assert decide(ruled, prediction, policy).priority == 2
    # Where the hard rule's priority is the one reached, the soft rule decided nothing.
    assert not Ruled("security", False, 2, 2, "hard-p2", "hard-p2").priority_soft
    assert decide(Ruled("security", False, 2, 2), prediction, policy).priority is None


def test_the_p1_raise_still_applies_over_a_soft_priority() -> None:
    prediction = Prediction({"general": 1.0}, {"P3": 0.5, "P1": 0.45, "P2": 0.05})
    policy = Policy(p1_min=0.4, override_priority_min=0.5)
    verdict = decide(Ruled("payments", True, 4, None, "topic", "topic"), prediction, policy)
    assert (verdict.priority, verdict.applied) == (1, ("override_priority", "p1"))


def test_a_raise_priority_after_a_soft_priority_fixes_it(tiny: IntentModel) -> None:
    wrong, _, _ = other_priority(tiny)
    source = (
        GROUPS
        + f"""rules:
  - {{id: topic, when: {{contains_any: [refund]}}, then: {{priority: {wrong}, soft: true}}}}
  - {{id: vip, when: {{contains_any: [refund]}}, then: {{raise_priority: 1}}}}
model: {{override_priority_min: 0.0}}
"""
    )
    d = Engine.from_yaml(source, model=tiny).evaluate(MessageIn("sandbox", TEXT))
    assert d.priority == int(wrong[1:]) - 1  # the raise is hard: the model is not even asked
    assert all(t.rule_id != "model" for t in d.trace)


# ---------------------------------------------------------------- without a model


def _without_soft(text: str) -> str:
    stripped = re.sub(r"\n +soft: \[[a-z, ]+\]", "", text)
    assert "soft:" not in stripped
    return stripped


def test_the_shipped_soft_rules_decide_as_hard_ones_without_a_model() -> None:
    from router.rules_samples import message_from_json

    if not SAMPLES.exists():
        pytest.skip("samples not available")
    text = resources.files("rules").joinpath("default.yaml").read_text(encoding="utf-8")
    assert "soft: [" in text
    soft, hard = Engine.from_yaml(text), Engine.from_yaml(_without_soft(text))
    for line in SAMPLES.read_text(encoding="utf-8").splitlines():
        msg = message_from_json(json.loads(line))
        assert {**soft.evaluate(msg).to_dict(), "rules_version": ""} == {
            **hard.evaluate(msg).to_dict(),
            "rules_version": "",
        }


# ---------------------------------------------------------------- validation


def test_validate_refuses_a_soft_part_the_rule_does_not_decide() -> None:
    source = (
        GROUPS
        + """rules:
  - id: a
    when: {contains_any: [x]}
    then: {tags: [a], soft: [route]}
  - id: b
    when: {contains_any: [x]}
    then: {raise_priority: 1, soft: [priority]}
  - id: c
    when: {contains_any: [x]}
    then: {tags: [c], soft: true}
  - id: d
    when: {contains_any: [x]}
    then: {route: general, soft: [group]}
model: {override_route_min: 1.5}
"""
    )
    with pytest.raises(RuleSetError) as err:
        Engine.from_yaml(source, "bad.yaml")
    found = [(e.rule_id, e.reason) for e in err.value.errors]
    assert [rule for rule, _ in found] == ["a", "b", "c", "d", None]
    assert "soft: route needs route" in found[0][1]
    assert "soft: priority needs priority (a raise_priority is never soft)" in found[1][1]
    assert "soft needs route or priority" in found[2][1]
    assert "then.soft[0]: Input should be 'route' or 'priority'" in found[3][1]
    assert "less than or equal to 1" in found[4][1]


def test_a_soft_rule_without_its_override_threshold_is_warned_about() -> None:
    source = (
        GROUPS + "rules:\n  - {id: a, when: {contains_any: [x]}, then: {route: general, priority: P2, soft: true}}\n"
    )
    engine = Engine.from_yaml(source + "model: {override_route_min: 0.5}\n", "w.yaml")
    assert [(w.line, w.rule_id, w.reason) for w in engine.warnings] == [
        (11, "a", "soft priority changes nothing without model.override_priority_min")
    ]
    assert Engine.from_yaml(source + "model: {override_route_min: 0.5, override_priority_min: 0.5}\n").warnings == ()


def test_a_model_that_could_override_to_a_missing_group_is_refused(tiny: IntentModel) -> None:
    source = GROUPS.replace("  - {id: trading}\n", "")
    with pytest.raises(RuleSetError, match=r"model.override_route_min: the triage model's groups \['trading'\]"):
        Engine.from_yaml(source + "model: {override_route_min: 0.5}\n", model=tiny)
