"""Published triage models (router/modelstore.py): workers route with the live version without a
restart; a broken model is refused at publish and the running one stays; a shadow changes no
routing and is scored against agents' corrections; rollback; a repeated request changes nothing.

``tests/triage/tiny-model`` is the model published here: a real one, small and nearly uniform, so
its answers differ from the shipped model's (the one the test settings configure)."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from router.audit import Audit
from router.config import RulesSettings
from router.errors import BadRequest, NotFound
from router.modelstore import ModelHolder, ModelRefused, ModelState, read_dir
from router.rulestore import EngineHolder
from router.runtime import Runtime
from router.worker import Worker
from rules import Engine, RuleSetError
from rules.intent import FORMAT, IntentModel, Prediction
from tests.router.helpers import drain, message
from tests.router.test_model_routing import RULES, TAKEOVER
from tests.router.test_rules_cli import SEED

TINY = Path(__file__).resolve().parents[1] / "triage" / "tiny-model"


def tiny_files(**changed: bytes) -> dict[str, bytes]:
    return read_dir(TINY) | changed


async def _inbound(rt: Runtime, user: str) -> tuple[str, dict[str, Any]]:
    """A user's conversation id and its first inbound history record."""
    conv_id = (await rt.client.get(rt.keys.conv_key("telegram", "bot1", user))).decode()
    [(_, fields)] = await rt.client.xrange(rt.keys.history(conv_id), count=1)
    return conv_id, json.loads(fields[b"data"])


async def test_a_published_model_routes_in_a_running_worker_without_a_restart(rt: Runtime) -> None:
    await rt.rules.publish(RULES, "admin")  # its intent rule asks the model
    worker = Worker(rt)
    await worker.rules.refresh()
    before = worker.rules.engine
    published = await rt.models.publish(tiny_files(), "alice", "tiny one")
    assert (published.number, published.author, published.comment) == (1, "alice", "tiny one")
    assert published.meta["messages"] == 120 and set(published.files) == {"triage.ftz", "words.ftz", "triage.json"}
    assert await worker.rules.refresh()  # as its loop does every rules_poll_s
    assert worker.rules.engine is not before
    await rt.inbox.append_many([message(TAKEOVER, user="victim")])
    await drain(worker)
    _, record = await _inbound(rt, "victim")
    [said] = [t["model"] for t in record["decision"]["trace"] if t["rule"] == "model"]
    tiny, shipped = IntentModel.load(TINY).predict(TAKEOVER), IntentModel.shipped().predict(TAKEOVER)
    label, p = Prediction.top(tiny.group)
    assert (said["group"][0]["label"], said["group"][0]["p"]) == (label, round(p, 3))
    # Not the configured model's answer (the tiny model is far less sure of itself):
    assert round(Prediction.top(shipped.group)[1], 3) != said["group"][0]["p"]
    await worker._heartbeat()  # says which version it routes with
    assert json.loads(await rt.client.get(rt.keys.health("worker", worker.name)))["model"] == published.number
    # Loaded once per version: the next check finds nothing new and keeps the same model.
    live = worker.triage.live
    assert not await worker.rules.refresh()
    assert worker.triage.live is live


async def test_the_live_model_is_checked_at_most_once_a_second(rt: Runtime) -> None:
    now = [0.0]
    models = ModelHolder(rt.models, lambda: rt.model)

    def fallback() -> Engine:  # no published rule set: the configured file, with the live model
        return Engine.load(rt.settings.rules.file, models.live)

    holder = EngineHolder(rt.rules, fallback(), lambda: now[0], models=models, fallback=fallback)
    first = await holder.current()
    await rt.models.publish(tiny_files(), "alice")
    now[0] = 0.9
    assert await holder.current() is first and models.live is rt.model
    now[0] = 1.0
    assert await holder.current() is not first
    assert models.state == ModelState(1, None) and models.live is not None and models.live.meta["messages"] == 120


async def test_a_corrupt_file_or_an_unknown_format_is_refused_and_the_running_model_stays(rt: Runtime) -> None:
    first = await rt.models.publish(tiny_files(), "admin")
    worker = Worker(rt)
    await worker.rules.refresh()
    live, engine = worker.triage.live, worker.rules.engine
    with pytest.raises(ModelRefused, match="the model cannot be loaded"):
        await rt.models.publish(tiny_files(**{"triage.ftz": b"\x00" * 100}), "mallory")
    meta = json.loads((TINY / "triage.json").read_text())
    unknown = json.dumps({**meta, "format": FORMAT + 1}).encode()
    with pytest.raises(ModelRefused, match=f"format {FORMAT + 1}, this version reads 2 or 3"):
        await rt.models.publish(tiny_files(**{"triage.json": unknown}), "mallory", shadow=True)
    assert await rt.models.state() == ModelState(first.number, None)
    assert [v.number for v in await rt.models.versions()] == [first.number]
    assert not await worker.rules.refresh()
    assert worker.triage.live is live and worker.rules.engine is engine


async def test_a_model_the_rule_set_in_force_cannot_use_is_refused(rt: Runtime) -> None:
    """A published rule set names the label 'vip' (fine with the model off); no model has it."""
    unfit = RULES.replace("{is: security, min: 0.5}", "{is: vip, min: 0.5}").replace(
        "{id: complaints}]", "{id: complaints}, {id: vip}]"
    )
    off = Runtime(rt.settings.model_copy(update={"rules": RulesSettings(model="off")}), rt.url)
    async with off:
        await off.rules.publish(unfit, "admin")
        with pytest.raises(ModelRefused, match="'vip' is not a label of the triage model"):
            await off.models.publish(tiny_files(), "admin")
        assert await off.models.state() == ModelState(None, None)


# The hand count below rests on these answers (top group, top priority) of the two models.
TEXTS = {
    "hacked": ("my account was hacked, unauthorized withdrawal", ("security", "P2"), ("security", "P1")),
    "deposit": ("deposit not arrived after 3 hours", ("security", "P2"), ("payments", "P2")),
    "kyc": ("KYC verification rejected again", ("security", "P2"), ("verification", "P3")),
    "fee": ("what is the trading fee", ("security", "P2"), ("general", "P4")),
    "complain": ("I want to complain about your support", ("security", "P2"), ("complaints", "P2")),
}


def _top(p: Prediction) -> tuple[str, str]:
    return Prediction.top(p.group)[0], Prediction.top(p.priority)[0]


async def test_a_shadow_changes_no_routing_and_is_scored_against_corrections(rt: Runtime) -> None:
    tiny, shipped = IntentModel.load(TINY), IntentModel.shipped()
    for text, tiny_says, shipped_says in TEXTS.values():
        assert (_top(tiny.predict(text)), _top(shipped.predict(text))) == (tiny_says, shipped_says), text
    worker = Worker(rt)
    await rt.inbox.append_many([message(text, user=f"before-{name}") for name, (text, _, _) in TEXTS.items()])
    await drain(worker)
    shadow = await rt.models.publish(tiny_files(), "alice", shadow=True)
    assert await rt.models.state() == ModelState(None, shadow.number)
    await worker.rules.refresh()
    assert worker.triage.shadow is not None and worker.triage.live is rt.model
    await rt.inbox.append_many([message(text, user=name) for name, (text, _, _) in TEXTS.items()])
    await drain(worker)

    convs: dict[str, str] = {}
    for name in TEXTS:
        _, without = await _inbound(rt, f"before-{name}")
        convs[name], with_shadow = await _inbound(rt, name)
        assert with_shadow["decision"] == without["decision"]  # the shadow routes nothing
        assert "model" not in json.dumps(without["decision"]["trace"])  # rules.yaml never asks a model
    observed = await rt.models.observed()
    assert [(o["shadow_group"], o["shadow_prio"], o["live_group"], o["live_prio"]) for o in observed] == [
        (*t, *s) for _, t, s in TEXTS.values()
    ]

    # Agents' corrections (each the right answer for its message), and one conversation closed as routed.
    await rt.conversations.transfer(convs["kyc"], "verification", "agent1")  # right: verification P3
    await rt.conversations.set_priority(convs["fee"], 4, "agent1")  # right: general P4
    await rt.conversations.set_priority(convs["deposit"], 3, "agent1")  # right: payments P3
    await rt.conversations.close(convs["hacked"], "agent1")  # routed security P1, never corrected
    status = await rt.models.status()
    # By hand, from TEXTS and the routed decisions (kyc general P3, fee general P3, deposit payments P2):
    #            group: kyc fee deposit            priority: kyc fee deposit
    # shadow            -   -   -   = 0                      -   -   -     = 0
    # live (shipped)    +   +   +   = 3                      +   +   -     = 2
    # routed            -   +   +   = 2                      +   -   -     = 1
    assert status["corrected"] == {
        "messages": 3,
        "shadow": {"group": 0, "priority": 0},
        "live": {"group": 3, "priority": 2},
        "routed": {"group": 2, "priority": 1},
    }
    # "hacked" closed as routed (security P1): the shadow said security P2, the shipped model agreed.
    assert status["closed_uncorrected"] == {
        "messages": 1,
        "shadow": {"group": 1, "priority": 0},
        "live": {"group": 1, "priority": 1},
        "routed": {"group": 1, "priority": 1},
    }
    assert (status["live"], status["shadow"], status["observed"]) == (None, shadow.number, 5)


async def test_live_shadow_and_rollback(rt: Runtime) -> None:
    one = await rt.models.publish(tiny_files(), "alice")
    two = await rt.models.publish(tiny_files(), "bob", shadow=True)
    assert await rt.models.state() == ModelState(one.number, two.number)
    await rt.models.make_live(two.number, "bob")
    assert await rt.models.state() == ModelState(two.number, None)  # a promoted shadow is no longer one
    with pytest.raises(BadRequest, match="live already"):
        await rt.models.make_live(two.number, "bob")  # twice on the list, rollback would stay on it
    worker = Worker(rt)
    await worker.rules.refresh()
    promoted = worker.triage.live
    back = await rt.models.rollback("carol")
    assert back is not None and back.number == one.number
    assert await rt.models.state() == ModelState(one.number, None)
    assert await worker.rules.refresh() and worker.triage.live is not promoted
    assert await rt.models.rollback("carol") is None  # before any: the configured model
    assert await worker.rules.refresh() and worker.triage.live is rt.model
    with pytest.raises(NotFound, match="nothing to roll back"):
        await rt.models.rollback("carol")
    log = [(e["action"], e["number"], e["author"]) for e in reversed(await rt.models.log())]
    assert log == [
        ("publish", "1", "alice"),
        ("publish", "2", "bob"),
        ("live", "2", "bob"),
        ("rollback", "1", "carol"),
        ("rollback", "", "carol"),
    ]


async def test_a_publish_sent_twice_with_one_request_id_makes_one_version_and_one_audit_entry(rt: Runtime) -> None:
    first = await rt.models.publish(tiny_files(), "alice", request_id="req-1")
    again = await rt.models.publish(tiny_files(), "alice", request_id="req-1")
    assert again == first
    other = await rt.models.publish(tiny_files(), "alice", shadow=True, request_id="req-3")
    await rt.models.make_live(other.number, "bob", request_id="req-4")
    await rt.models.make_live(other.number, "bob", request_id="req-4")
    assert [v.number for v in await rt.models.versions()] == [1, 2]
    entries = await Audit(rt.client, rt.keys, 100).recent()
    assert [(e.action, e.actor, e.target) for e in reversed(entries)] == [
        ("model.publish", "alice", f"version 1 ({first.digest})"),
        ("model.publish", "alice", f"version 2 ({other.digest})"),
        ("model.live", "bob", f"version 2 ({other.digest})"),
    ]


MASKING = """\
version: 1
groups: [{id: general}, {id: payments}, {id: security}]
defaults: {group: general}
rules:
  - {id: contact-details, when: {detector: [email]}, then: {redact: [email]}}
  - {id: sure-takeover, when: {intent: {is: security, min: 0.999}}, then: {route: security}}
"""


async def test_the_shadow_is_asked_about_the_masked_text(rt: Runtime) -> None:
    """The models never see a secret: they are asked about the decision's text, where a seed phrase
    (masked at ingest already) and what a rule redacts are ``[redacted:KIND]``. The shipped model,
    published as the shadow, answers each raw and masked text differently (group or confidence), so its recorded answer
    tells which one it was asked about. The rules ask the live model (an ``intent:`` rule): its
    answer is in the trace, but asked before the rule's redaction: the live model is asked again."""
    texts = {
        f"my wallet phrase is {SEED} is that safe": "my wallet phrase is [redacted:seed_phrase] is that safe",
        "contact: anna@mail.ru my deposit": "contact: [redacted:email] my deposit",
    }
    shipped = IntentModel.shipped()
    expected = []
    for raw, masked in texts.items():
        on_masked, on_raw = Prediction.top(shipped.predict(masked).group), Prediction.top(shipped.predict(raw).group)
        answer = (on_masked[0], f"{on_masked[1]:.3f}")
        assert answer != (on_raw[0], f"{on_raw[1]:.3f}"), raw  # the recorded answer tells which was asked
        expected.append((*answer, on_masked[0]))
    await rt.rules.publish(MASKING, "admin")
    await rt.models.publish(read_dir(Path(str(resources.files("rules") / "models"))), "alice", shadow=True)
    worker = Worker(rt)
    await worker.rules.refresh()
    await rt.inbox.append_many([message(raw, user=f"u{i}") for i, raw in enumerate(texts)])
    await drain(worker)
    seen = await rt.models.observed()
    assert [(o["shadow_group"], o["shadow_p"], o["live_group"]) for o in seen] == expected


async def test_a_rule_set_is_validated_against_the_live_published_model(rt: Runtime) -> None:
    """A process that never routed (the CLI) follows the published live model before it validates
    a rule set: 'vip' is no label of the live model, though the configured one ("off") knows none."""
    off = rt.settings.model_copy(update={"rules": RulesSettings(model="off")})
    async with Runtime(off, rt.url) as admin:
        await admin.models.publish(tiny_files(), "admin")
    unfit = RULES.replace("{is: security, min: 0.5}", "{is: vip, min: 0.5}").replace(
        "{id: complaints}]", "{id: complaints}, {id: vip}]"
    )
    async with Runtime(off, rt.url) as cli:
        with pytest.raises(RuleSetError, match="'vip' is not a label of the triage model"):
            await cli.rules.publish(unfit, "admin")


async def test_a_live_version_a_worker_cannot_load_is_skipped_and_its_model_stays(rt: Runtime) -> None:
    """E.g. during an upgrade, a newer release made live a format this one does not read."""
    first = await rt.models.publish(tiny_files(), "admin")
    worker = Worker(rt)
    await worker.rules.refresh()
    live, engine = worker.triage.live, worker.rules.engine
    second = await rt.models.publish(tiny_files(), "admin", shadow=True)
    meta = json.loads((TINY / "triage.json").read_text())
    await rt.client.hset(rt.keys.model_files(second.number), "triage.json", json.dumps({**meta, "format": FORMAT + 1}))
    await rt.client.set(rt.keys.model_live, second.number)  # as the newer release's `model live 2` did
    assert not await worker.rules.refresh()
    assert worker.triage.live is live and worker.rules.engine is engine
    assert worker.triage.state == ModelState(first.number, None)
