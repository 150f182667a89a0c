"""Property tests: secrets never leave the engine; evaluation is deterministic and gating-exact."""

from __future__ import annotations

import json
import logging

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mnemonic import Mnemonic

from rules import Engine, MessageIn

from .conftest import rules_yaml, ungated

MNEMONIC = Mnemonic("english")
RULES = rules_yaml("""\
  - id: kw
    when: {contains_any: [wallet, phrase, 助记词, seed, 私钥, key]}
    then: {tags: [security], route: security, priority: P1}
  - id: re
    when: {regex: '[a-z]+ [a-z]+ [a-z]+'}
    then: {tags: [words]}
  - id: det
    when: {detector: [seed_phrase, private_key, txid, address, email, phone]}
    then: {tags: [detected], redact: [email, phone]}
  - id: not
    when: {not: {contains_any: [thanks]}}
    then: {raise_priority: 1}
""")
ENGINE = Engine.from_yaml(RULES, "prop.yaml")

filler = st.text(alphabet=st.sampled_from(list("abc xyz 我的助记词是：,.\n1234 Привет ÉŞ🙂")), max_size=40)
# Real phrases (valid BIP-39 checksum, 12 or 24 words), as wallets generate them.
seed_phrases = st.sampled_from([16, 32]).flatmap(lambda n: st.binary(min_size=n, max_size=n)).map(MNEMONIC.to_mnemonic)
private_keys = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)


@st.composite
def leaking_messages(draw: st.DrawFn) -> tuple[MessageIn, str]:
    secret_kind = draw(st.sampled_from(["seed", "key"]))
    if secret_kind == "seed":
        secret = draw(seed_phrases)
        lead = draw(st.sampled_from(["", "my seed phrase: ", "这是我的助记词："]))
    else:
        secret = draw(private_keys)
        lead = draw(st.sampled_from(["my private key ", "私钥 ", "private key: "]))
    before, after = draw(filler), draw(filler)
    text = f"{before} {lead}{secret} {after}"
    in_subject = draw(st.booleans())
    message = MessageIn(
        channel="telegram",
        text="help" if in_subject else text,
        subject=text if in_subject else draw(st.none() | filler),
    )
    return message, secret


def fragments(secret: str) -> list[str]:
    if " " in secret:
        words = secret.split()
        return [" ".join(words[i : i + 4]) for i in range(len(words) - 3)]
    return [secret[i : i + 24] for i in range(0, 41, 8)]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(leaking_messages())
def test_a_secret_never_leaves_the_engine(case: tuple[MessageIn, str]) -> None:
    message, secret = case
    decision = ENGINE.evaluate(message)
    dumped = json.dumps(decision.to_dict(), ensure_ascii=False)
    assert "secret-leak" in decision.tags
    for fragment in fragments(secret):
        assert fragment not in dumped
    for r in decision.redactions:  # the decision keeps positions, never the value
        assert set(r.to_dict()) == {"field", "kind", "start", "end", "mask"}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(leaking_messages())
def test_a_secret_never_reaches_the_logs(caplog: pytest.LogCaptureFixture, case: tuple[MessageIn, str]) -> None:
    message, secret = case
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="switchboard.rules"):
        ENGINE.evaluate(message)
        Engine.from_yaml(RULES, "prop.yaml")
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert logged  # the engine does log at DEBUG...
    for fragment in fragments(secret):
        assert fragment not in logged  # ...but never message text


messages = st.builds(
    MessageIn,
    channel=st.sampled_from(["telegram", "email"]),
    text=st.text(alphabet=st.sampled_from(list("wallet seed key thanks 助记词私钥 abc ")), max_size=60),
    subject=st.none() | st.text(max_size=20),
    language=st.sampled_from(["en", "zh", None]),
)


@settings(max_examples=150, deadline=None)
@given(messages)
def test_deterministic(message: MessageIn) -> None:
    assert ENGINE.evaluate(message) == ENGINE.evaluate(message)


@settings(max_examples=150, deadline=None)
@given(messages)
def test_keyword_gating_never_changes_a_decision(message: MessageIn) -> None:
    brute = ungated(ENGINE)
    assert ENGINE.evaluate(message) == brute.evaluate(message)


@settings(max_examples=100, deadline=None)
@given(messages)
def test_trace_spans_lie_inside_their_field(message: MessageIn) -> None:
    d = ENGINE.evaluate(message)
    for entry in d.trace:
        for _cond, field, start, end in entry.matches:
            if start is None or end is None:
                continue
            source = message.text if field == "text" else (message.subject or "")
            assert 0 <= start <= end <= len(source)
