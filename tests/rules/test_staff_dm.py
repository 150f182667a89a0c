"""The default rules' ``staff-dm-report`` (issue 18): "an admin DMed me" goes to security as P1."""

from __future__ import annotations

import pytest

from rules import Engine, MessageIn

ENGINE = Engine.default()


def decide(text: str, rule: str = "staff-dm-report") -> tuple[str, int, bool]:
    d = ENGINE.evaluate(MessageIn(channel="discord", text=text))
    return d.group, d.priority, rule in {t.rule_id for t in d.trace}


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


@pytest.mark.parametrize(
    "text",
    [
        # Someone who only said they were support, and a code handed over: scam-with-loss, P1.
        "destek diye yazan biri google authenticator kodumu aldı, bakiyem sıfırlandı",
        "Có người nhắn tự xưng là hỗ trợ, tôi đưa mã 2FA và giờ không đăng nhập được",
        "alguien me escribió diciendo que era soporte y le di mi código de Google Authenticator",
        "a guy claiming to be support called, I read out the code from the SMS and my USDT is gone",
        "자칭 고객센터 직원한테 인증번호 알려줬는데 로그인이 안 돼요",
    ],
)
def test_a_code_handed_to_someone_who_said_they_were_support_is_security_p1(text: str) -> None:
    assert decide(text, "scam-with-loss") == ("security", 1, True)


@pytest.mark.parametrize(
    "text",
    [
        "gave my UID to someone who said he was support before I realised. no codes. am I at risk?",
        "Sàn yêu cầu tôi quay video cầm CCCD và đọc mã số để mở khóa chức năng rút",
        "지인이 알려줬는데 텔레그램에 제 이름을 쓴 사칭 계정이 있대요. 제 계정은 문제 없어요",
    ],
)
def test_a_uid_a_kyc_video_or_a_friends_tip_is_not_a_handed_over_code(text: str) -> None:
    assert decide(text, "scam-with-loss")[2] is False
