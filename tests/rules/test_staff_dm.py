"""The default rules' ``staff-dm-report`` (issue 18): "an admin DMed me" goes to security as P1."""

from __future__ import annotations

import pytest

from rules import Engine, MessageIn

ENGINE = Engine.default()


def decide(text: str) -> tuple[str, int, bool]:
    d = ENGINE.evaluate(MessageIn(channel="discord", text=text))
    return d.group, d.priority, "staff-dm-report" in {t.rule_id for t in d.trace}


@pytest.mark.parametrize(
    "text",
    [
        "an admin DMed me and asked for my recovery phrase to fix my withdrawal",
        "someone from support sent me a DM saying my account will be closed",
        "管理员私聊我说我的账户有风险，让我验证钱包",
        "客服私信我要我的助记词",
        "админ написал мне в личку и просит данные для входа",
        "un administrador me escribió al privado pidiendo mi frase",
        "bir yönetici bana özelden yazdı, cüzdanımı doğrulamamı istiyor",
        "quản trị viên nhắn riêng cho tôi bảo cung cấp cụm từ khôi phục",
        "관리자가 디엠으로 복구 문구를 달라고 했어요",
    ],
)
def test_a_staff_dm_report_is_security_p1(text: str) -> None:
    group, priority, fired = decide(text)
    assert (group, priority, fired) == ("security", 1, True)


def test_a_user_who_did_nothing_and_asks_if_it_is_real_stays_a_p2_phishing_report() -> None:
    # As the samples grade it (pub-091): no action taken yet, a question whether it is official.
    group, priority, fired = decide("an admin DMed me a link to an 'upgraded app', is this you? I didn't click it")
    assert (group, priority, fired) == ("security", 2, False)


@pytest.mark.parametrize(
    "text",
    [
        "how do I DM an admin about my KYC?",
        "the support team is slow",
        "I sent a private message to support and nobody replied",
        "escribí al soporte por privado y nadie responde",
        "написал в лс поддержке, никто не отвечает",
        "tôi đã nhắn riêng cho hỗ trợ nhưng chưa ai trả lời",
        "destek ekibine özelden yazdım",
    ],
)
def test_staff_or_dm_alone_is_not_a_staff_dm_report(text: str) -> None:
    assert decide(text)[2] is False
