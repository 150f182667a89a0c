"""The triage model inside the engine (issue 15): ``intent``/``urgency`` conditions, the rule set's
``model:`` section, the model's entry in the trace, and redaction before the model reads anything.

The tiny model (tests/triage/tiny-model) is weak: its probabilities sit near 1/6 (groups) and 1/4
(priorities). So no test hard-codes a probability: each first asks the model what it says about a
message and sets thresholds exactly at, or just above, that value.
"""

from __future__ import annotations

import json
import math
import re
from importlib import resources
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules import Decision, Engine, MessageIn, RuleSetError, Triage
from rules.intent import IntentModel, Prediction
from tests.rules.conftest import SAMPLES
from tests.secretgen import Secret, hex_survivors, phrase_survivors, secrets

TINY = Path(__file__).resolve().parents[1] / "triage" / "tiny-model"

GROUPS = """\
version: 1
groups:
  - {id: complaints}
  - {id: general}
  - {id: payments}
  - {id: security}
  - {id: trading}
  - {id: verification}
defaults: {group: general, priority: P3}
"""

PLAIN = "hello, a question about my account please"


class Watching:
    """The tiny model, recording what it was asked (the texts and subjects it read)."""

    def __init__(self, model: IntentModel) -> None:
        self.model = model
        self.seen: list[tuple[str, str | None]] = []

    @property
    def digest(self) -> str | None:
        return self.model.digest

    @property
    def group_labels(self) -> tuple[str, ...]:
        return self.model.group_labels

    @property
    def priority_labels(self) -> tuple[str, ...]:
        return self.model.priority_labels

    def predict(self, text: str, subject: str | None = None) -> Prediction:
        self.seen.append((text, subject))
        return self.model.predict(text, subject)


@pytest.fixture(scope="module")
def tiny() -> IntentModel:
    return IntentModel.load(TINY)


@pytest.fixture
def watching(tiny: IntentModel) -> Watching:
    return Watching(tiny)


def above(p: float) -> float:
    """The smallest threshold a probability of ``p`` does not reach."""
    return math.nextafter(p, 2.0)


def top(probs: dict[str, float]) -> tuple[str, float]:
    return Prediction.top(probs)


def rule_tags(d: Decision) -> tuple[str, ...]:
    return tuple(t for t in d.tags if not t.startswith("lang:"))


def model_entry(engine: Engine, msg: MessageIn) -> dict[str, object] | None:
    entries = [t for t in engine.evaluate(msg).to_dict()["trace"] if "model" in t]
    assert len(entries) <= 1
    return entries[0] if entries else None


# ---------------------------------------------------------------- conditions


def test_intent_and_urgency_match_at_min_and_not_just_above(tiny: IntentModel) -> None:
    p = tiny.predict(PLAIN)
    group, pg = top(p.group)
    prio, pp = top(p.priority)
    engine = Engine.from_yaml(
        GROUPS
        + f"""rules:
  - {{id: g-at, when: {{intent: {{is: {group}, min: {pg!r}}}}}, then: {{tags: [g-at]}}}}
  - {{id: g-above, when: {{intent: {{is: {group}, min: {above(pg)!r}}}}}, then: {{tags: [g-above]}}}}
  - {{id: u-at, when: {{urgency: {{is: {prio}, min: {pp!r}}}}}, then: {{tags: [u-at]}}}}
  - {{id: u-above, when: {{urgency: {{is: {prio}, min: {above(pp)!r}}}}}, then: {{tags: [u-above]}}}}
""",
        model=tiny,
    )
    tags = engine.evaluate(MessageIn("sandbox", PLAIN)).tags
    assert "g-at" in tags and "u-at" in tags
    assert "g-above" not in tags and "u-above" not in tags


def test_min_defaults_to_one_half(tiny: IntentModel) -> None:
    p = tiny.predict(PLAIN)
    group, pg = top(p.group)
    low = min(p.group, key=p.group.__getitem__)
    assert pg < 0.5  # the tiny model is never that sure
    engine = Engine.from_yaml(
        GROUPS
        + f"""rules:
  - {{id: half, when: {{intent: {{is: {group}}}}}, then: {{tags: [half]}}}}
  - {{id: nearly-nothing, when: {{intent: {{is: {low}, min: 0.0}}}}, then: {{tags: [any]}}}}
""",
        model=tiny,
    )
    assert rule_tags(engine.evaluate(MessageIn("sandbox", PLAIN))) == ("any",)


def test_without_a_model_the_conditions_never_match_and_nothing_is_traced() -> None:
    engine = Engine.from_yaml(
        GROUPS
        + """rules:
  - {id: g, when: {intent: {is: general, min: 0.0}}, then: {tags: [g]}}
  - {id: u, when: {urgency: {is: P4, min: 0.0}}, then: {tags: [u]}}
  - {id: n, when: {not: {intent: {is: general, min: 0.0}}}, then: {tags: [n]}}
model: {route_min: 0.0, priority_min: 0.0, p1_min: 0.0}
"""
    )
    d = engine.evaluate(MessageIn("sandbox", PLAIN))
    assert rule_tags(d) == ("n",) and d.group == "general" and d.priority == 3 and d.routed_by is None
    assert [t.rule_id for t in d.trace] == ["n"]


def test_the_model_is_asked_only_when_a_condition_needs_it_and_once(watching: Watching) -> None:
    engine = Engine.from_yaml(
        GROUPS
        + """rules:
  - id: refund-intent
    when: [{contains_any: [refund]}, {intent: {is: complaints, min: 0.0}}]
    then: {tags: [a]}
  - id: refund-urgency
    when: [{contains_any: [refund]}, {urgency: {is: P2, min: 0.0}}]
    then: {tags: [b]}
""",
        model=watching,
    )
    d = engine.evaluate(MessageIn("sandbox", PLAIN))
    assert watching.seen == [] and rule_tags(d) == () and all(t.rule_id != "model" for t in d.trace)
    d = engine.evaluate(MessageIn("sandbox", "I want a refund"))
    assert watching.seen == [("I want a refund", None)]
    assert rule_tags(d) == ("a", "b") and d.trace[-1].rule_id == "model"


# ---------------------------------------------------------------- the model: section

RULES = """rules:
  - {id: refund, when: {contains_any: [refund]}, then: {route: complaints, priority: P4}}
  - {id: hacked, when: {contains_any: [hacked]}, then: {priority: P1}}
  - {id: slow, when: {contains_any: [slow]}, then: {priority: P4}}
"""


def policy_engine(model: IntentModel, section: str) -> Engine:
    return Engine.from_yaml(GROUPS + RULES + f"model: {section}\n", "policy.yaml", model=model)


def test_the_model_routes_only_where_no_rule_routed(tiny: IntentModel) -> None:
    group, pg = top(tiny.predict(PLAIN).group)
    engine = policy_engine(tiny, f"{{route_min: {pg!r}}}")
    d = engine.evaluate(MessageIn("sandbox", PLAIN))
    assert (d.group, d.routed_by, d.priority) == (group, "model", 3)
    entry = model_entry(engine, MessageIn("sandbox", PLAIN))
    assert entry is not None and entry["model"]["applied"] == "route"  # type: ignore[index]

    text = "I want a refund"
    assert top(tiny.predict(text).group)[0] != "complaints"  # else the rule and the model agree
    # p1_min 1.0 (never met) makes the engine ask the model although a rule routed.
    d = policy_engine(tiny, "{route_min: 0.0, p1_min: 1.0}").evaluate(MessageIn("sandbox", text))
    assert (d.group, d.routed_by) == ("complaints", "refund")
    scores = d.trace[-1].model
    assert scores is not None and scores.applied == ()

    d = policy_engine(tiny, f"{{route_min: {above(pg)!r}}}").evaluate(MessageIn("sandbox", PLAIN))
    assert (d.group, d.routed_by) == ("general", None)


def test_the_model_sets_a_priority_only_where_no_rule_did_and_never_lowers(tiny: IntentModel) -> None:
    prio, pp = top(tiny.predict(PLAIN).priority)
    engine = policy_engine(tiny, f"{{priority_min: {pp!r}}}")
    assert engine.evaluate(MessageIn("sandbox", PLAIN)).priority == int(prio[1:])

    text = "my account was hacked"
    prediction = tiny.predict(text)
    assert top(prediction.priority)[0] != "P1"  # the model alone would set a lower priority
    engine = policy_engine(tiny, "{route_min: 0.0, priority_min: 0.0, p1_min: 1.0}")
    d = engine.evaluate(MessageIn("sandbox", text))
    assert d.priority == 1 and d.trace[0].rule_id == "hacked"


def test_the_model_raises_to_p1_at_p1_min_and_not_below(tiny: IntentModel) -> None:
    text = "the site is slow"
    p1 = tiny.predict(text).priority["P1"]
    d = policy_engine(tiny, f"{{p1_min: {p1!r}}}").evaluate(MessageIn("sandbox", text))
    assert d.priority == 1 and d.trace[0].rule_id == "slow"
    entry = model_entry(policy_engine(tiny, f"{{p1_min: {p1!r}}}"), MessageIn("sandbox", text))
    assert entry is not None and entry["model"]["applied"] == "p1"  # type: ignore[index]
    d = policy_engine(tiny, f"{{p1_min: {above(p1)!r}}}").evaluate(MessageIn("sandbox", text))
    assert d.priority == 4


def test_the_trace_gives_the_models_best_labels_and_what_applied(tiny: IntentModel) -> None:
    p = tiny.predict(PLAIN)
    entry = model_entry(policy_engine(tiny, "{route_min: 1.0}"), MessageIn("sandbox", PLAIN))
    assert entry is not None
    scores = entry["model"]
    groups = sorted(p.group.items(), key=lambda kv: kv[1], reverse=True)[:3]
    priorities = sorted(p.priority.items(), key=lambda kv: kv[1], reverse=True)[:2]
    assert scores == {  # type: ignore[comparison-overlap]
        "group": [{"label": k, "p": round(v, 3)} for k, v in groups],
        "priority": [{"label": k, "p": round(v, 3)} for k, v in priorities],
        "applied": "none",
    }
    assert entry["rule"] == "model" and entry["matches"] == []
    json.dumps(entry)  # JSON-able, as the routed record stores it


def _default_without_model_section() -> str:
    """The shipped rules with their ``model:`` section taken out."""
    text = resources.files("rules").joinpath("default.yaml").read_text(encoding="utf-8")
    stripped = re.sub(r"\nmodel:\n(?:  .*\n)+", "\n", text)
    assert "route_min" in text and "route_min" not in stripped
    return stripped


def test_a_section_without_a_model_changes_nothing() -> None:
    text = _default_without_model_section()
    plain = Engine.from_yaml(text)
    with_section = Engine.from_yaml(text + "\nmodel: {route_min: 0.0, priority_min: 0.0, p1_min: 0.0}\n")
    for body in (PLAIN, "my account was hacked, withdraw everything", "我的USDT提现还没到账"):
        a, b = plain.evaluate(MessageIn("sandbox", body)), with_section.evaluate(MessageIn("sandbox", body))
        assert {**a.to_dict(), "rules_version": ""} == {**b.to_dict(), "rules_version": ""}


def test_rules_without_model_use_decide_the_same_with_an_idle_model_on_the_samples(watching: Watching) -> None:
    from router.rules_samples import message_from_json

    if not SAMPLES.exists():
        pytest.skip("samples not available")
    # Rules with no intent/urgency condition and no model: section (the shipped ones without
    # theirs): a model given to them is never asked, and every decision is the one without it.
    text = _default_without_model_section()
    plain, idle = Engine.from_yaml(text), Engine.from_yaml(text, model=watching)
    for line in SAMPLES.read_text(encoding="utf-8").splitlines():
        msg = message_from_json(json.loads(line))
        assert plain.evaluate(msg) == idle.evaluate(msg)
    assert watching.seen == []


# ---------------------------------------------------------------- validation


def test_validate_refuses_unknown_labels_with_their_position() -> None:
    with pytest.raises(RuleSetError) as err:
        Engine.from_yaml(
            GROUPS
            + """rules:
  - id: a
    when: {intent: {is: vip, min: 0.8}}
    then: {tags: [a]}
  - id: b
    when: {urgency: {is: P5}}
    then: {tags: [b]}
  - id: c
    when: {intent: {is: general, min: 1.5}}
    then: {tags: [c]}
model: {route_min: -0.1}
""",
            "bad.yaml",
        )
    found = [(e.line, e.col, e.rule_id, e.reason) for e in err.value.errors]
    assert found[0][:3] == (12, 25, "a") and "unknown group 'vip'" in found[0][3]
    assert found[1][:3] == (15, 26, "b") and "bad priority 'P5'" in found[1][3]
    assert found[2][:3] == (18, 39, "c") and "less than or equal to 1" in found[2][3]
    assert found[3][:2] == (20, 20) and "greater than or equal to 0" in found[3][3]
    assert len(found) == 4


def test_a_model_without_a_group_a_condition_names_is_refused(tiny: IntentModel) -> None:
    source = GROUPS.replace("  - {id: trading}\n", "  - {id: trading}\n  - {id: vip}\n")
    source += "rules:\n  - {id: v, when: {intent: {is: vip}}, then: {tags: [v]}}\n"
    Engine.from_yaml(source)  # the rules alone are valid
    with pytest.raises(RuleSetError, match=r"rule v: intent 'vip' is not a label of the triage model"):
        Engine.from_yaml(source, model=tiny)


def test_a_model_that_could_route_to_a_missing_group_is_refused(tiny: IntentModel) -> None:
    source = GROUPS.replace("  - {id: trading}\n", "")
    Engine.from_yaml(source + "model: {p1_min: 0.5}\n", model=tiny)  # it never routes: fine
    with pytest.raises(RuleSetError, match=r"the triage model's groups \['trading'\] are not groups of the rule set"):
        Engine.from_yaml(source + "model: {route_min: 0.5}\n", model=tiny)


# ---------------------------------------------------------------- redaction before the model


@settings(max_examples=80, deadline=None)
@given(secret=secrets(), in_subject=st.booleans())
def test_the_model_never_reads_a_secret(tiny: IntentModel, secret: Secret, in_subject: bool) -> None:
    seeing = Watching(tiny)
    # Every message consults the model (p1_min applies to all).
    engine = Engine.from_yaml(GROUPS + "model: {p1_min: 0.9}\n", model=seeing)
    msg = (
        MessageIn("email", "see the subject", subject=secret.text)
        if in_subject
        else MessageIn("email", secret.text, subject="help")
    )
    engine.evaluate(msg)
    engine.precheck(msg, model=True)  # the ingest precheck's prediction, carried to the router
    assert len(seeing.seen) == 2
    for seen in seeing.seen:
        read = "\n".join(x for x in seen if x)
        assert "[redacted:" in read
        assert not phrase_survivors(secret, read) and not hex_survivors(secret, read), (secret.evasion, read)


def test_a_misspelt_threshold_or_test_gets_a_suggestion() -> None:
    source = GROUPS + "rules:\n  - {id: a, when: {intent: {is: general, mn: 0.8}}, then: {tags: [a]}}\n"
    with pytest.raises(RuleSetError, match=r"unknown field 'mn' \(did you mean 'min'\?\)"):
        Engine.from_yaml(source + "model: {route_min: 0.5}\n")
    with pytest.raises(RuleSetError, match=r"unknown field 'route_mn' \(did you mean 'route_min'\?\)"):
        Engine.from_yaml(GROUPS + "model: {route_mn: 0.5}\n")


# ---------------------------------------------------------------- the prediction carried from ingest


def sample_messages() -> list[MessageIn]:
    rows = [json.loads(line) for line in SAMPLES.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [MessageIn(r["channel"], r["text"], subject=r.get("subject")) for r in rows]


@pytest.fixture(scope="module")
def shipped() -> IntentModel:
    return IntentModel.shipped()


def test_a_carried_prediction_decides_exactly_as_predicting_again(shipped: IntentModel) -> None:
    """Over the public samples with the shipped rules and model: the precheck's prediction, carried
    (through JSON, as in the inbox), gives the very decision (trace and scores included) that the
    engine gives predicting itself, and the model is not asked again."""
    watching = Watching(shipped)
    engine = Engine.default(watching)
    caught = 0
    for msg in sample_messages():
        fresh = engine.evaluate(msg)
        checked = engine.precheck(msg, model=True)
        # Carried also where a P1 rule caught the message (the router would ask the model anyway).
        assert checked.triage is not None, msg.text
        caught += engine.precheck(msg).suspect  # the rules' part alone
        triage = msgspec.json.decode(msgspec.json.encode(checked.triage), type=Triage)
        asked = len(watching.seen)
        assert engine.evaluate(msgspec.structs.replace(msg, triage=triage)) == fresh, msg.text
        assert len(watching.seen) == asked
    assert caught >= 20  # of 220: the P1 rules' messages are among those carried


def test_a_prediction_of_another_model_or_shape_is_not_used(tiny: IntentModel, shipped: IntentModel) -> None:
    watching = Watching(tiny)
    engine = Engine.from_yaml(GROUPS + "model: {route_min: 0.0, priority_min: 0.0, p1_min: 0.9}\n", model=watching)
    msg = MessageIn("sandbox", PLAIN)
    fresh = engine.evaluate(msg)
    assert len(watching.seen) == 1
    six, four = (0.0, 0.0, 0.0, 0.0, 0.0, 1.0), (1.0, 0.0, 0.0, 0.0)
    assert shipped.digest is not None and tiny.digest is not None and shipped.digest != tiny.digest
    for triage in (
        Triage(shipped.digest, six, four),  # another model's
        Triage(tiny.digest, six[:5], four),  # this model's digest, not its labels
        Triage(tiny.digest, six, four[:3]),
    ):
        assert engine.evaluate(msgspec.structs.replace(msg, triage=triage)) == fresh
    assert len(watching.seen) == 4  # each time asked again
    # This model's, of its shape: used as it is (P1 certain, every group at 0 but the last).
    d = engine.evaluate(msgspec.structs.replace(msg, triage=Triage(tiny.digest, six, four)))
    assert (d.group, d.priority) == (tiny.group_labels[-1], 1) and len(watching.seen) == 4


def test_a_model_without_files_carries_no_prediction(tiny: IntentModel) -> None:
    import fasttext

    views = [fasttext.load_model(str(TINY / name)) for name in ("triage.ftz", "words.ftz")]
    unnamed = IntentModel(tiny.meta, views)  # as training makes one
    engine = Engine.from_yaml(GROUPS + "model: {p1_min: 0.9}\n", model=unnamed)
    checked = engine.precheck(MessageIn("sandbox", PLAIN), model=True)
    assert checked.suspect is False and checked.triage is None
    assert engine.precheck(MessageIn("sandbox", PLAIN)).triage is None  # model=False: not asked


def test_the_digest_names_the_files(tmp_path: Path, tiny: IntentModel) -> None:
    import shutil

    copy = tmp_path / "m"
    shutil.copytree(TINY, copy)
    assert IntentModel.load(copy).digest == tiny.digest
    meta = json.loads((copy / "triage.json").read_text(encoding="utf-8"))
    meta["group"]["temperature"] = meta["group"]["temperature"] * 2
    (copy / "triage.json").write_text(json.dumps(meta), encoding="utf-8")
    assert IntentModel.load(copy).digest != tiny.digest
