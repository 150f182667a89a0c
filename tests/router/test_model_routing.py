"""Workers route with the shipped triage model (``rules.model``): a published rule set's ``intent:``
conditions and ``model:`` section act on live traffic; one that does not fit the model is refused at
publish and the running version stays."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from router.config import RulesSettings
from router.errors import ConfigError
from router.runtime import Runtime
from router.worker import Worker
from rules import Engine, MessageIn, RuleSetError
from rules.evaluate import default_source
from rules.intent import Prediction
from tests.router.helpers import drain, message

GROUPS = "[{id: general}, {id: payments}, {id: security}, {id: trading}, {id: verification}, {id: complaints}]"
RULES = f"""\
version: 1
groups: {GROUPS}
defaults: {{group: general}}
rules:
  - id: takeover
    when: {{intent: {{is: security, min: 0.5}}}}
    then: {{route: security, priority: P1}}
"""
TAKEOVER = "someone logged into my account from another country and withdrew everything"


async def _history(rt: Runtime, user: str) -> dict[str, object]:
    conv_id = (await rt.client.get(rt.keys.conv_key("telegram", "bot1", user))).decode()
    [(_, fields)] = await rt.client.xrange(rt.keys.history(conv_id), count=1)
    record: dict[str, object] = json.loads(fields[b"data"])
    return record


async def test_a_published_intent_rule_routes_live_traffic(rt: Runtime) -> None:
    await rt.rules.publish(RULES, "admin")
    await rt.inbox.append_many([message(TAKEOVER, user="victim"), message("what is the trading fee", user="q")])
    worker = Worker(rt)
    # As its loop does every rules_poll_s (the appends' P1 precheck, on the same holder, may have
    # taken the published version up already).
    await worker.rules.refresh()
    assert worker.rules.engine.version == (await rt.engine(fresh=True)).version
    await drain(worker)
    taken = (await _history(rt, "victim"))["decision"]
    asked = (await _history(rt, "q"))["decision"]
    assert isinstance(taken, dict) and isinstance(asked, dict)
    assert (taken["group"], taken["priority"], taken.get("routed_by")) == ("security", "P1", "takeover")
    assert asked["group"] != "security"
    # The trace says what the model thought.
    model_entry = [t for t in taken["trace"] if t["rule"] == "model"]
    assert model_entry and model_entry[0]["model"]["group"][0]["label"] == "security"


async def test_a_rule_set_the_model_cannot_serve_is_refused_and_the_running_one_stays(rt: Runtime) -> None:
    first = await rt.rules.publish(RULES, "admin")
    unfit = RULES.replace("{is: security, min: 0.5}", "{is: vip, min: 0.5}").replace(
        "{id: complaints}]", "{id: complaints}, {id: vip}]"
    )
    with pytest.raises(RuleSetError, match="'vip' is not a label of the triage model"):
        await rt.rules.publish(unfit, "admin")
    assert await rt.rules.active_number() == first.number


async def test_model_off_and_a_bad_model_directory(rt: Runtime, tmp_path: Path) -> None:
    off = Runtime(rt.settings.model_copy(update={"rules": RulesSettings(model="off")}), rt.url)
    async with off:
        assert off.model is None
        engine = off.compile(RULES, "rules.yaml")
        assert engine.evaluate(MessageIn(channel="telegram", text=TAKEOVER)).group == "general"
    broken = Runtime(rt.settings.model_copy(update={"rules": RulesSettings(model=tmp_path)}), rt.url)
    async with broken:
        with pytest.raises(ConfigError, match=r"rules.model: .*no readable triage.json"):
            _ = broken.model


async def test_the_shipped_rules_let_the_shipped_model_decide_where_no_rule_did(rt: Runtime) -> None:
    """The default rule set's `model:` section: a message no keyword routes goes where the model says
    (routed_by "model"); a hard rule that routed keeps its group although the model disagrees, and
    a soft one (`trading-topic`) gives way to the model when it is confident."""
    assert rt.model is not None
    engine = Engine.load(None, rt.model)  # as the runtime builds it
    text = "balance shows 0.0003 BTC, yesterday 1.4"  # no keyword of the shipped rules
    unruled = engine.evaluate(MessageIn(channel="telegram", text=text))
    said = Prediction.top(rt.model.predict(text).group)
    assert (unruled.group, unruled.routed_by) == (said[0], "model") and said[0] != engine.default_group
    [scores] = [t.model for t in unruled.trace if t.rule_id == "model"]
    assert scores is not None and not scores.overrode
    # Which shipped rules are hard is chosen again with each retraining (triage/evaluate.py): the
    # hard rule here is the test's own, first in the shipped set.
    pinned = default_source().replace(
        "\nrules:\n", "\nrules:\n  - {id: pinned, when: {contains_any: [新手]}, then: {route: general}}\n", 1
    )
    beginner = MessageIn(channel="telegram", text="新手 怎么买 usdt 提现")  # the model says payments
    hard = Engine.from_yaml(pinned, "pinned.yaml", rt.model).evaluate(beginner)
    assert (hard.group, hard.routed_by) == ("general", "pinned")
    [scores] = [t.model for t in hard.trace if t.model]
    # Confident enough that it would override a soft rule: a hard one keeps its group all the same.
    assert engine.policy is not None
    assert scores.group[0][0] == "payments" and scores.group[0][1] >= engine.policy.override_route_min
    fee = engine.evaluate(MessageIn(channel="telegram", text="what is the trading fee"))
    scores = fee.trace[-1].model
    assert (fee.group, fee.routed_by) == ("general", "model") and scores is not None
    assert ("route", "trading-topic", "trading", engine.policy.override_route_min) in scores.overrode


def test_rules_validate_knows_the_models_labels(tmp_path: Path) -> None:
    import io

    from router import rules_cli
    from rules.intent import IntentModel

    unfit = tmp_path / "unfit.yaml"
    unfit.write_text(
        RULES.replace("{is: security, min: 0.5}", "{is: vip}").replace(
            "{id: complaints}]", "{id: complaints}, {id: vip}]"
        )
    )
    out = io.StringIO()
    assert rules_cli.validate(str(unfit), out) == 0  # the rules alone are valid
    out = io.StringIO()
    assert rules_cli.validate(str(unfit), out, IntentModel.shipped()) == 1
    assert f"{unfit}:1:1: rule takeover: intent 'vip' is not a label of the triage model" in out.getvalue()


def test_model_eval_prints_rules_alone_model_alone_and_both(tmp_path: Path) -> None:
    import io

    from router import rules_cli
    from router.rules_samples import LISTINGS
    from rules.intent import IntentModel, Prediction
    from tests.rules.conftest import SAMPLES

    lines = [line for line in SAMPLES.read_text(encoding="utf-8").splitlines() if "secret" not in line][:30]
    samples = tmp_path / "s.jsonl"
    samples.write_text("\n".join(lines) + "\n", encoding="utf-8")
    model = IntentModel.shipped()
    out = io.StringIO()
    assert rules_cli.model_eval(None, str(samples), True, out, model) == 0
    tables = json.loads(out.getvalue())
    assert set(tables) == {"rules", "model", "both"}
    # "Model alone" is the model's best group for every message, whatever the rules say.
    expected = [json.loads(line) for line in lines]
    accepted = [g if isinstance(g := e["expect"]["group"], list) else [g] for e in expected]  # alternatives
    right = sum(
        Prediction.top(model.predict(e["text"], e.get("subject")).group)[0] in ok
        for e, ok in zip(expected, accepted, strict=True)
    )
    assert tables["model"]["group_accuracy"] == pytest.approx(right / len(lines), abs=1e-4)  # rounded to 4 places
    assert rules_cli.model_eval(None, str(samples), False, io.StringIO(), None) == 1  # [rules] model = "off"
    figures = io.StringIO()
    assert rules_cli.model_eval(None, str(samples), True, figures, model, only_figures=True) == 0
    only = json.loads(figures.getvalue())
    assert only == {name: {k: v for k, v in t.items() if k not in LISTINGS} for name, t in tables.items()}


async def test_the_console_runtime_shares_the_engine_and_the_model(rt: Runtime) -> None:
    """One triage model and one compiled rule set per process: the console's runtime (a pool of its
    own) reads its parent's instead of loading and compiling them again."""
    async with rt.for_console(rt.settings.web) as console:
        assert console.client is not rt.client
        assert console.engines is rt.engines and console.model is rt.model
