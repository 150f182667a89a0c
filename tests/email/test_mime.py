"""Parsing, charsets, quote stripping, loop detection and configuration: no servers needed."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from adapters.email.config import parse_config
from adapters.email.mime import (
    _DISCLAIMER_KINDS,
    decode_bytes,
    decode_header_value,
    normalize_subject,
    parse,
    strip_quotes,
)
from adapters.email.smtp import reply_references, reply_subject
from adapters.email.threads import related
from router.errors import ConfigError
from rules import Engine
from rules.intent import IntentModel
from rules.model import MessageIn


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Done, thanks.\n\nOn Tue, Jan 2, 2024 at 9:00 AM Support <s@x.test> wrote:\n> old", "Done, thanks."),
        # Gmail wraps a long attribution line.
        ("Done.\n\nOn Tue, Jan 2, 2024 at 9:00 AM Exchange Support <s@x.test>\nwrote:\n\n> old", "Done."),
        ("Still waiting.\n\n-----Original Message-----\nFrom: Support\nSent: Monday\n\nold", "Still waiting."),
        (
            "Still waiting.\n\n________________________________\nFrom: Support <s@x.test>\nSent: Monday\nTo: me",
            "Still waiting.",
        ),
        ("好的。\n\n------------------ 原始邮件 ------------------\n发件人: 客服\n发送时间: 周一", "好的。"),
        ("收到。\n\n在 2024年1月2日 周二 09:00，客服 <s@x.test> 写道：\n> 旧", "收到。"),
        ("收到。\n\n张三 于 2024年1月2日 写道:\n> 旧", "收到。"),
        ("收到。\n\n发件人：客服\n发送时间：2024年1月2日\n收件人：我\n\n旧", "收到。"),
        # The attributions and Outlook headers of the desk's other languages.
        ("Ok.\n\nEm seg., 1 de dez. de 2026 às 10:14, Suporte <s@x.test> escreveu:\n> antigo", "Ok."),
        ("Спасибо.\n\nпт, 5 дек. 2026 г. в 10:14, Support <s@x.test>:\n> старое", "Спасибо."),
        ("Не пришло.\n\n05.12.2026 10:14, Support пишет:\n> старое", "Не пришло."),
        (
            "Не пришло.\n\nОт: Support <s@x.test>\nОтправлено: 5 декабря 2026 г. 10:14\nКому: я\n\nВывод выполнен",
            "Не пришло.",
        ),
        (
            "Sigue sin llegar.\n\nDe: Soporte <s@x.test>\nEnviado el: viernes, 5 de diciembre de 2026\n\nListo",
            "Sigue sin llegar.",
        ),
        ("Tamam.\n\nSupport <s@x.test>, 5 Ara 2026 Cum, 10:14 tarihinde şunu yazdı:\n> eski", "Tamam."),
        ("Chưa nhận.\n\nVào Th 6, 5 thg 12, 2026 vào lúc 10:14 Support <s@x.test> đã viết:\n> cũ", "Chưa nhận."),
        ("아직이요.\n\n2026년 12월 5일 (금) 오전 10:14, Support <s@x.test>님이 작성:\n> 이전", "아직이요."),
        ("Noch nichts.\n\n-----Ursprüngliche Nachricht-----\nVon: Support\nGesendet: Freitag", "Noch nichts."),
        # A user quoting the scammer is telling the story routing must read: no time, no address.
        ("The 'admin' messaged me.\nOn Telegram the admin wrote:\nsend me your 2FA code\nand I did", None),
        ("Мне в личку админ написал:\nскиньте код из смс\nя скинул, и всё списали", None),
        ("Destek ekibi bana şunu yazdı:\nşifreni gönder\nben de gönderdim", None),
        ("answer one\n> question one\nanswer two\n>> deeper\n", "answer one\nanswer two"),
        ("Hello\n\n-- \nAlice\nCEO, Example", "Hello"),
        ("Hello\n\nSent from my iPhone", "Hello"),
        ("你好\n\n发自我的iPhone", "你好"),
        # Only quotes: keep the text rather than route nothing.
        ("> all quoted", "> all quoted"),
        ("I was sent from my iPhone support page\nand more\nand more\nand more\nand more", None),
        # A company's legal footer goes: its words ("unauthorised", "security") are not the request.
        (
            "How long does a SEPA deposit take?\n\nThanks\nAna\n\nThis e-mail and any attachments are "
            "confidential. If you received it in error, delete it. Unauthorised use or disclosure is "
            "prohibited. Account security is our priority.\n\nPlease consider the environment before "
            "printing this e-mail.",
            "How long does a SEPA deposit take?\n\nThanks\nAna",
        ),
        # Straight under the sign-off and wrapped at 72 columns: the lines that make it.
        (
            "My withdrawal is stuck.\nRegards,\nJohn Smith\nCFO, Foo Ltd\nCONFIDENTIALITY NOTICE: the "
            "information in this e-mail\nis meant for its addressee only. If you are not the\nintended "
            "recipient, please\nnotify the sender and delete it.",
            "My withdrawal is stuck.\nRegards,\nJohn Smith\nCFO, Foo Ltd",
        ),
        (
            "我的USDT提现三天了还没到账。\n\n王伟\n\n本邮件及其附件含有保密信息，仅限于指定收件人。如果您错收了"
            "本邮件，请立即通知发件人并删除本邮件！",
            "我的USDT提现三天了还没到账。\n\n王伟",
        ),
        (
            "No me llegó el depósito.\n\nSaludos\n\nEste mensaje es confidencial y está dirigido a su "
            "destinatario. Si lo ha recibido por error, bórrelo.",
            "No me llegó el depósito.\n\nSaludos",
        ),
        # A user's own words stay: no footer says "delete my API key" without "confidential" or
        # "intended recipient", and a first paragraph is the message whatever it says.
        (
            "Hi\n\nI did not make this withdrawal. Delete the new API key, lock the account, no "
            "disclosure of my data to anyone.\n\nJohn",
            None,
        ),
        ("Someone withdrew it all! This message is confidential: delete my card, disclose nothing.", None),
        (
            "Hello,\n\nMy KYC was rejected.\n\nI sent my passport again as an attachment. It is "
            "confidential, please delete it after the review.",
            None,
        ),
    ],
)
def test_strip_quotes(text: str, expected: str | None) -> None:
    assert strip_quotes(text) == (expected if expected is not None else text)


def test_a_legal_footer_does_not_route_a_deposit_question_to_security() -> None:
    engine = Engine.default(model=IntentModel.shipped())
    body = (
        "How long does a SEPA deposit take? I sent EUR yesterday.\n\nThanks\nAna\n\nThis e-mail and any "
        "attachments are confidential. If you received it in error, delete it. Unauthorised use or "
        "disclosure is prohibited. Account security is our priority."
    )
    whole = engine.evaluate(MessageIn(channel="email", text=body, subject="SEPA deposit"))
    routed = engine.evaluate(MessageIn(channel="email", text=strip_quotes(body), subject="SEPA deposit"))
    assert whole.priority == 1  # what the footer's words did ("unauthorised", "security")
    assert routed.group == "payments" and routed.priority > 1


def test_no_footer_pattern_matches_across_a_line_end() -> None:
    # mime._footer_line gathers a tail's kinds line by line: exact only while no pattern can match
    # a newline. A pattern written with \s, a dot, a negated class or a newline would break that.
    for kind in _DISCLAIMER_KINDS:
        assert "\\s" not in kind.pattern and "\n" not in kind.pattern and "[^" not in kind.pattern
        assert "." not in kind.pattern.replace("\\.", ""), kind.pattern


@pytest.mark.parametrize(
    ("data", "charset", "expected"),
    [
        ("镕昇".encode("gbk"), "gb2312", "镕昇"),  # GBK characters under a GB2312 label
        ("𠀀".encode("gb18030"), "GB2312", "𠀀"),  # four-byte GB18030
        ("臺灣".encode("big5"), "big5", "臺灣"),
        ("出金".encode("iso-2022-jp"), "iso-2022-jp", "出金"),
        ("€".encode("cp1252"), "iso-8859-1", "€"),  # the usual Windows mislabel
        ("提现".encode(), None, "提现"),
        ("提现".encode("gbk"), None, "提现"),  # undeclared: UTF-8 fails, GB18030 fits
        (b"plain", "x-no-such-charset", "plain"),
    ],
)
def test_decode_bytes(data: bytes, charset: str | None, expected: str) -> None:
    assert decode_bytes(data, charset) == expected


def test_headers_rfc2047_and_raw_8bit() -> None:
    word = "=?gb2312?B?" + base64.b64encode("镕基提现".encode("gbk")).decode() + "?="
    assert decode_header_value(f"{word} =?utf-8?q?_ok?=") == "镕基提现 ok"
    assert decode_header_value("=?utf-8?q?a?=\r\n =?utf-8?q?b?=") == "ab"
    raw = "提现".encode().decode("ascii", "surrogateescape")
    assert decode_header_value(raw) == "提现"


def test_subject_normalisation_and_threads() -> None:
    assert normalize_subject("Re: RE: 回复：Fwd: Withdrawal  Stuck") == "withdrawal stuck"
    assert normalize_subject("答复: AW: SV: x") == "x"
    assert related("withdrawal stuck", "withdrawal stuck - still waiting")
    assert not related("withdrawal stuck", "2fa reset")
    assert reply_subject("Re: Hi") == "Re: Hi" and reply_subject("回复：你好") == "回复：你好"
    assert reply_subject("Hi") == "Re: Hi" and reply_subject("") == "Re: your message"


def test_reply_references_are_capped_keeping_the_root() -> None:
    refs = " ".join(f"<r{i}@x>" for i in range(40))
    out = reply_references({"references": refs, "message_id": "<last@x>"}, None)
    assert len(out) == 20 and out[0] == "<r0@x>" and out[-1] == "<last@x>"


def test_nested_parts_are_numbered_like_imap() -> None:
    raw = (
        b"From: a@b.test\r\nSubject: s\r\nMessage-ID: <n@b.test>\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="m"\r\n\r\n'
        b'--m\r\nContent-Type: multipart/related; boundary="r"\r\n\r\n'
        b'--r\r\nContent-Type: multipart/alternative; boundary="a"\r\n\r\n'
        b"--a\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
        b"--a\r\nContent-Type: text/html\r\n\r\n<p>hello</p>\r\n--a--\r\n"
        b"--r\r\nContent-Type: image/png\r\nContent-ID: <logo>\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        b"iVBORw0KGgo=\r\n--r--\r\n"
        b'--m\r\nContent-Type: text/csv; name="tx.csv"\r\nContent-Disposition: attachment; filename="tx.csv"\r\n\r\n'
        b"a,b\r\n--m--\r\n"
    )
    mail = parse(raw)
    assert mail.text == "hello" and not mail.html_only
    assert [(p.section, p.name, p.type, p.size) for p in mail.attachments] == [
        ("1.2", "part-1.2", "image/png", 8),
        ("2", "tx.csv", "text/csv", 3),  # the CRLF before a boundary belongs to the boundary
    ]


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ("Auto-Submitted: auto-generated\r\n", "Auto-Submitted: auto-generated"),
        ("Auto-Submitted: no\r\n", None),
        ("Precedence: junk\r\n", "Precedence: junk"),
        ("List-Id: <news.x.test>\r\n", "mailing list"),
        ("X-Autoreply: yes\r\n", "X-Autoreply header"),
        ("Return-Path: <>\r\n", "null return path (bounce)"),
    ],
)
def test_auto_submitted_detection(headers: str, reason: str | None) -> None:
    raw = f"From: a@b.test\r\nSubject: s\r\n{headers}\r\nbody\r\n".encode()
    assert parse(raw).auto_reason == reason


def test_robot_senders() -> None:
    assert parse(b"From: postmaster@b.test\r\n\r\nx").auto_reason == "robot sender: postmaster@b.test"
    assert parse(b"From: no-reply@b.test\r\n\r\nx").auto_reason is not None


def _box(**over: Any) -> dict[str, Any]:
    box = {"name": "support", "address": "s@x.test", "imap_host": "imap.x.test", "password": "p"}
    box.update(over)
    return box


def test_config_defaults_and_table_form(monkeypatch: pytest.MonkeyPatch) -> None:
    config = parse_config({"mailboxes": {"support": {"address": "s@x.test", "imap_host": "imap.x.test"}}})
    [box] = config.mailboxes
    assert (box.name, box.imap_port_, box.smtp_port_, box.login) == ("support", 993, 587, "s@x.test")
    monkeypatch.setenv("SB_TEST_MAIL_PW", "from-env")
    assert (
        parse_config({"mailboxes": [_box(password_env="SB_TEST_MAIL_PW")]}).mailboxes[0].read_password() == "from-env"
    )


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"mailboxes": [_box(imap_tls="none")]}, "would send the password in clear"),
        ({"mailboxes": [_box(adress="typo@x.test")]}, "email.mailboxes.0.adress: Extra inputs are not permitted"),
        ({"mailboxes": [_box(address="not-an-address")]}, "email.mailboxes.0.address"),
        ({"mailboxes": [_box(), _box()]}, "mailbox names must be unique: support"),
        ({"mailboxes": [_box(imap_port=0)]}, "email.mailboxes.0.imap_port"),
    ],
)
def test_config_errors_name_the_setting(section: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match="invalid \\[email\\] configuration") as info:
        parse_config(section)
    assert message in str(info.value)


def test_missing_password_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SB_TEST_NOPE", raising=False)
    box = parse_config({"mailboxes": [_box(password=None, password_env="SB_TEST_NOPE")]}).mailboxes[0]
    with pytest.raises(ConfigError, match="SB_TEST_NOPE is not set"):
        box.read_password()
    box = parse_config({"mailboxes": [_box(password=None)]}).mailboxes[0]
    with pytest.raises(ConfigError, match=r"\[email\] support: password: not configured"):
        box.read_password()
