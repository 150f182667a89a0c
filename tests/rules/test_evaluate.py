"""Evaluation semantics: every condition, every action, the built-ins and the trace."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from rules import Engine, MessageIn

SEED = "athlete mechanic twin pluck cousin physical route trend jaguar pet already around"
KEY = "49bbcc1726434a3b0e6b64ea9987d6e9171aee1861e10de84f11832ea24fd380"


def msg(text: str, **kw: object) -> MessageIn:
    kw.setdefault("channel", "telegram")
    return MessageIn(text=text, **kw)  # type: ignore[arg-type]


def fires(engine: Engine, message: MessageIn) -> list[str]:
    return [t.rule_id for t in engine.evaluate(message).trace]


def one(make_engine, when: str) -> Engine:  # type: ignore[no-untyped-def]
    return make_engine(f"  - id: r\n    when: {when}\n    then: {{tags: [hit]}}\n")  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- conditions


def test_always(make_engine) -> None:  # type: ignore[no-untyped-def]
    assert fires(one(make_engine, "{always: true}"), msg("x")) == ["r"]


def test_channel_and_account(make_engine) -> None:  # type: ignore[no-untyped-def]
    e = one(make_engine, "[{channel: [email, discord]}, {account: support@x.com}]")
    assert fires(e, msg("x", channel="email", account="support@x.com")) == ["r"]
    assert fires(e, msg("x", channel="telegram", account="support@x.com")) == []
    assert fires(e, msg("x", channel="email", account="other")) == []


def test_contains_any_word_edges_and_normalisation(make_engine) -> None:  # type: ignore[no-untyped-def]
    e = one(make_engine, "{contains_any: [withdraw, btc, 提现, вывод, straße]}")
    assert fires(e, msg("Please WITHDRAW now")) == ["r"]
    assert fires(e, msg("withdrawal pending")) == []  # inside a longer Latin word
    assert fires(e, msg("我的btc没到")) == ["r"]  # Latin keyword glued to CJK still matches
    assert fires(e, msg("我的提現没到")) == ["r"]  # Traditional -> Simplified
    assert fires(e, msg("ＢＴＣ stuck")) == ["r"]  # full-width
    assert fires(e, msg("Вывод завис")) == ["r"]  # Cyrillic case folding
    assert fires(e, msg("выводы")) == []  # Cyrillic inside a longer word
    assert fires(e, msg("STRASSE")) == ["r"]  # casefold, not lower
    assert fires(e, msg("nothing here")) == []


def test_contains_all(make_engine) -> None:  # type: ignore[no-untyped-def]
    e = one(make_engine, "{contains_all: [usdt, trc20]}")
    assert fires(e, msg("usdt on trc20")) == ["r"]
    assert fires(e, msg("usdt only")) == []
    assert fires(e, msg("trc20", subject="usdt")) == ["r"]  # across subject and text


def test_subject_conditions(make_engine) -> None:  # type: ignore[no-untyped-def]
    e = one(make_engine, "[{subject_contains_any: [refund]}, {subject_contains_all: [order, id]}]")
    assert fires(e, msg("", subject="Refund order id 5")) == ["r"]
    assert fires(e, msg("refund order id", subject="hello")) == []
    assert fires(e, msg("refund order id")) == []


def test_regex_on_normalised_text(make_engine) -> None:  # type: ignore[no-untyped-def]
    e = one(make_engine, r"{regex: 'order\s*#?\d{6}'}")
    assert fires(e, msg("ORDER #123456 missing")) == ["r"]
    assert fires(e, msg("order 12")) == []
    span = e.evaluate(msg("Hi ORDER #123456")).trace[0].matches[0]
    assert span == ("regex", "text", 3, 16)


def test_regex_also_searches_the_subject_subject_regex_only_it(make_engine) -> None:  # type: ignore[no-untyped-def]
    e = one(make_engine, "{regex: 'ab+c'}")
    assert fires(e, msg("x", subject="abbc")) == ["r"]
    e = one(make_engine, "{subject_regex: 'ab+c'}")
    assert fires(e, msg("abbc")) == []
    assert fires(e, msg("x", subject="ABBC")) == ["r"]


def test_regex_with_non_literal_prefix_is_not_gated_away(make_engine) -> None:  # type: ignore[no-untyped-def]
    e = one(make_engine, r"{regex: '\d+ ?% ?/ ?(ngày|day)'}")
    assert fires(e, msg("lãi 5%/ngày")) == ["r"]


def test_language_condition_and_hint(make_engine) -> None:  # type: ignore[no-untyped-def]
    e = one(make_engine, "{language: [ru]}")
    assert fires(e, msg("hello there friend", language="ru")) == ["r"]
    assert fires(e, msg("Здравствуйте, мой вывод завис уже третий день")) == ["r"]
    assert fires(e, msg("hello there my friend, how are you")) == []


def test_sender_attributes(make_engine) -> None:  # type: ignore[no-untyped-def]
    e = one(make_engine, "{sender: {tier: [vip, gold], region: eu}}")
    assert fires(e, msg("x", sender={"tier": "vip", "region": "eu"})) == ["r"]
    assert fires(e, msg("x", sender={"tier": "vip"})) == []
    assert fires(e, msg("x")) == []
    trace = e.evaluate(msg("x", sender={"tier": "gold", "region": "eu"})).trace[0]
    assert {m[1] for m in trace.matches} == {"sender.tier", "sender.region"}


def test_conversation(make_engine) -> None:  # type: ignore[no-untyped-def]
    e = one(make_engine, "{conversation: follow_up}")
    assert fires(e, msg("x", new_conversation=False)) == ["r"]
    assert fires(e, msg("x", new_conversation=True)) == []


def test_time_window_including_midnight_crossing(make_engine) -> None:  # type: ignore[no-untyped-def]
    e = one(make_engine, "{time: {tz: Europe/Moscow, days: [fri], from: '22:00', to: '02:00'}}")
    friday_late = datetime(2026, 11, 20, 20, 30, tzinfo=UTC)  # 23:30 Friday in Moscow
    saturday_early = datetime(2026, 11, 20, 22, 30, tzinfo=UTC)  # 01:30 Saturday: Friday's window
    saturday_late = datetime(2026, 11, 21, 20, 30, tzinfo=UTC)
    assert fires(e, msg("x", received_at=friday_late)) == ["r"]
    assert fires(e, msg("x", received_at=saturday_early)) == ["r"]
    assert fires(e, msg("x", received_at=saturday_late)) == []


def test_business_hours(make_engine) -> None:  # type: ignore[no-untyped-def]
    e = one(make_engine, "{business_hours: payments}")  # Asia/Shanghai mon-fri 09-18
    monday_10_shanghai = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
    monday_20_shanghai = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    sunday = datetime(2026, 11, 22, 2, 0, tzinfo=UTC)
    assert fires(e, msg("x", received_at=monday_10_shanghai)) == ["r"]
    assert fires(e, msg("x", received_at=monday_20_shanghai)) == []
    assert fires(e, msg("x", received_at=sunday)) == []
    e = one(make_engine, "{business_hours: general}")  # no hours: 24/7
    assert fires(e, msg("x", received_at=sunday)) == ["r"]


def test_naive_received_at_is_utc(make_engine) -> None:  # type: ignore[no-untyped-def]
    e = one(make_engine, "{time: {tz: UTC, from: '10:00', to: '11:00'}}")
    assert fires(e, msg("x", received_at=datetime(2026, 11, 23, 10, 30))) == ["r"]


def test_detector_condition(make_engine) -> None:  # type: ignore[no-untyped-def]
    e = one(make_engine, "{detector: [txid, email]}")
    txid = "a" * 8 + "0123456789abcdef" * 3 + "b" * 8
    d = e.evaluate(msg(f"tx {txid} please"))
    assert [t.rule_id for t in d.trace] == ["r"]
    assert d.trace[0].matches[0] == ("detector", "text", 3, 67)
    assert fires(e, msg("mail me at someone@example.com")) == ["r"]
    assert fires(e, msg("no hash here")) == []


def test_detector_address_shorthand(make_engine) -> None:  # type: ignore[no-untyped-def]
    e = one(make_engine, "{detector: address}")
    assert fires(e, msg("send to 0x52908400098527886E0F7030069857D2E4169EE7 ok")) == ["r"]


def test_all_any_not(make_engine) -> None:  # type: ignore[no-untyped-def]
    e = one(
        make_engine,
        "{all: [{any: [{contains_any: [deposit]}, {contains_any: [充值]}]}, {not: {contains_any: [resolved]}}]}",
    )
    assert fires(e, msg("deposit missing")) == ["r"]
    assert fires(e, msg("充值没到")) == ["r"]
    assert fires(e, msg("deposit resolved, thanks")) == []
    assert fires(e, msg("withdrawal")) == []


def test_not_alone_is_never_keyword_gated(make_engine) -> None:  # type: ignore[no-untyped-def]
    e = one(make_engine, "{not: {contains_any: [thanks]}}")
    assert fires(e, msg("help")) == ["r"]
    assert fires(e, msg("thanks")) == []


# --------------------------------------------------------------------------- actions, semantics


RULES = """\
  - id: tag-a
    when: {contains_any: [alpha]}
    then: {tags: [a, shared], priority: P3}
  - id: route-pay
    when: {contains_any: [pay]}
    then: {tags: [shared, payments], route: payments, priority: P2, auto_reply: faq}
  - id: route-sec
    when: {contains_any: [hack]}
    then: {tags: [security], route: security, escalate: true, priority: P1,
           auto_reply: {ru: "ru reply", default: "default reply"}}
  - id: vip
    when: {sender: {tier: vip}}
    then: {raise_priority: 1}
  - id: low
    when: {contains_any: [spam]}
    then: {priority: P4}
  - id: stopper
    when: {contains_any: [stop]}
    then: {tags: [stopped], stop: true}
  - id: after-stop
    when: {contains_any: [stop]}
    then: {tags: [never]}
  - id: mask
    when: {contains_any: [mail]}
    then: {redact: [email, phone]}
"""


@pytest.fixture
def engine(make_engine) -> Engine:  # type: ignore[no-untyped-def]
    return make_engine(RULES)  # type: ignore[no-any-return]


def test_defaults_when_nothing_matches(engine: Engine) -> None:
    d = engine.evaluate(msg("hello there my friend, how are you today"))
    assert (d.group, d.priority, d.routed_by, d.auto_reply, d.escalate) == (
        "general",
        3,
        None,
        None,
        False,
    )
    assert d.tags == ("lang:en",)
    assert d.rules_version == engine.version and len(engine.version) == 12


def test_tags_accumulate_deduplicated_in_first_seen_order(engine: Engine) -> None:
    d = engine.evaluate(msg("alpha pay", language="en"))
    assert d.tags == ("a", "shared", "payments", "lang:en")


def test_priority_is_the_highest_any_rule_sets(engine: Engine) -> None:
    assert engine.evaluate(msg("alpha pay")).priority == 2
    assert engine.evaluate(msg("pay alpha")).priority == 2  # order of words irrelevant
    assert engine.evaluate(msg("spam")).priority == 4  # a rule may set a lower priority
    assert engine.evaluate(msg("spam alpha")).priority == 3


def test_raise_priority_from_reached_or_default(engine: Engine) -> None:
    assert engine.evaluate(msg("x", sender={"tier": "vip"})).priority == 2  # default P3 -> P2
    assert engine.evaluate(msg("pay", sender={"tier": "vip"})).priority == 1
    assert engine.evaluate(msg("hack", sender={"tier": "vip"})).priority == 1  # never above P1


def test_first_routing_rule_sets_the_group(engine: Engine) -> None:
    d = engine.evaluate(msg("pay hack"))
    assert (d.group, d.routed_by, d.escalate) == ("payments", "route-pay", False)
    d = engine.evaluate(msg("hack"))
    assert (d.group, d.routed_by, d.escalate) == ("security", "route-sec", True)


def test_first_auto_reply_per_language(engine: Engine) -> None:
    assert engine.evaluate(msg("pay", language="zh")).auto_reply == "请看常见问题"
    assert engine.evaluate(msg("pay", language="ko")).auto_reply == "FAQ"  # default
    assert engine.evaluate(msg("hack", language="ru")).auto_reply == "ru reply"
    assert engine.evaluate(msg("hack", language="en")).auto_reply == "default reply"
    # The first matching rule's template wins, even though it has no ru text.
    assert engine.evaluate(msg("pay hack", language="ru")).auto_reply == "FAQ"


def test_auto_reply_falls_back_to_en(make_engine) -> None:  # type: ignore[no-untyped-def]
    e = make_engine("  - {id: r, when: {always: true}, then: {auto_reply: {en: hi}}}\n")
    assert e.evaluate(msg("x", language="tr")).auto_reply == "hi"


def test_stop_ends_evaluation(engine: Engine) -> None:
    d = engine.evaluate(msg("stop pay"))
    assert "stopped" in d.tags and "never" not in d.tags
    assert [t.rule_id for t in d.trace] == ["route-pay", "stopper"]


def test_redact_action_masks_detected_kinds(engine: Engine) -> None:
    d = engine.evaluate(msg("mail me at bob@example.com"))
    assert d.text == "mail me at [redacted:email]"
    (r,) = d.redactions
    assert (r.field, r.kind, r.start, r.end, r.mask) == ("text", "email", 11, 26, "[redacted:email]")
    assert engine.evaluate(msg("write to bob@example.com")).text == "write to bob@example.com"


def test_seed_phrase_always_redacted_and_tagged(engine: Engine) -> None:
    d = engine.evaluate(msg(f"is this ok? {SEED}", subject=f"phrase {SEED}"))
    assert SEED not in d.text and SEED not in (d.subject or "")
    assert "secret-leak" in d.tags
    assert {(r.field, r.kind) for r in d.redactions} == {
        ("text", "seed_phrase"),
        ("subject", "seed_phrase"),
    }
    assert d.text == "is this ok? [redacted:seed_phrase]"


def test_private_key_always_redacted(make_engine) -> None:  # type: ignore[no-untyped-def]
    e = make_engine("")  # no rules at all
    d = e.evaluate(msg(f"my private key is {KEY}"))
    assert KEY not in json.dumps(d.to_dict())
    assert d.redactions[0].kind == "private_key"
    assert "secret-leak" in d.tags


def test_trace_positions_are_in_the_original_text(engine: Engine) -> None:
    text = "Straße ＰＡＹ"
    d = engine.evaluate(msg(text))
    (entry,) = [t for t in d.trace if t.rule_id == "route-pay"]
    condition, field, start, end = entry.matches[0]
    assert (condition, field) == ("contains_any[0]", "text")
    assert text[start:end] == "ＰＡＹ"


def test_lang_tag_and_language(engine: Engine) -> None:
    d = engine.evaluate(msg("Здравствуйте, мой вывод завис уже третий день"))
    assert d.language == "ru" and "lang:ru" in d.tags
    assert engine.evaluate(msg("x", language="zh")).tags[-1] == "lang:zh"


def test_to_dict_is_json_and_deterministic(engine: Engine) -> None:
    m = msg("alpha pay hack bob@example.com", sender={"tier": "vip"})
    first = engine.evaluate(m).to_dict()
    assert json.loads(json.dumps(first)) == first
    assert first["priority"] == "P1"
    assert all(engine.evaluate(m).to_dict() == first for _ in range(5))


def test_engine_properties(engine: Engine) -> None:
    assert set(engine.groups) == {"general", "security", "payments"}
    assert engine.groups["payments"].hours is not None
    assert engine.default_group == "general"
    assert engine.warnings == ()


def test_default_rule_set_loads() -> None:
    e = Engine.default()
    assert e.rule_count > 0
    d = e.evaluate(msg(f"这是我的助记词：{SEED}"))
    assert "secret-leak" in d.tags and SEED not in d.text
