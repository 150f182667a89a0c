"""Parsing an inbound e-mail into what the router needs: headers, routed text, attachment metadata.

Built on the standard library's modern e-mail API (``email.policy.default``), with our own
charset handling where the stdlib is too literal for real-world mail:

- ``GB2312`` labels are decoded as GB18030: Chinese clients routinely label GBK/GB18030 text as
  GB2312, and the strict GB2312 codec turns every character outside it into U+FFFD.
- ``Big5`` is decoded as Big5-HKSCS (a superset with the Hong Kong characters), ``ISO-8859-1`` as
  windows-1252 and ``Shift_JIS``/``EUC-KR`` as their Microsoft supersets, as browsers do.
- A missing or unknown charset falls back to UTF-8, then GB18030, then windows-1252.

HTML-only mail is turned into text with html2text (blockquotes become ``> `` lines, which the
quote stripper then drops); the HTML itself is never kept, so it needs no sanitising.
"""

from __future__ import annotations

import email
import email.errors
import email.header
import email.policy
import email.utils
import re
from dataclasses import dataclass, field
from email.message import EmailMessage, Message

import html2text

__all__ = [
    "ParsedMail",
    "Part",
    "auto_submitted_reason",
    "decode_bytes",
    "decode_header_value",
    "html_to_text",
    "normalize_subject",
    "parse",
    "parse_msg_id",
    "parse_msg_ids",
    "strip_quotes",
]

# Declared charset -> the codec that decodes what such mail really contains.
_CHARSET_ALIASES = {
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "cp936": "gb18030",
    "euc-cn": "gb18030",
    "x-euc-cn": "gb18030",
    "gb_2312-80": "gb18030",
    "big5": "big5hkscs",
    "x-big5": "big5hkscs",
    "cn-big5": "big5hkscs",
    "iso-8859-1": "cp1252",
    "latin1": "cp1252",
    "us-ascii": "utf-8",  # mislabelled UTF-8 is common; pure ASCII decodes the same
    "ascii": "utf-8",
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "sjis": "cp932",
    "x-sjis": "cp932",
    "euc-kr": "cp949",
    "ks_c_5601-1987": "cp949",
    "unknown-8bit": "",
    "x-unknown": "",
}
_FALLBACKS = ("utf-8", "gb18030", "cp1252")


def decode_bytes(data: bytes, charset: str | None) -> str:
    """Decode ``data`` in its declared ``charset``, tolerant of the usual mislabelling."""
    declared = (charset or "").strip().strip('"').lower()
    codec = _CHARSET_ALIASES.get(declared, declared)
    candidates = ([codec] if codec else []) + [c for c in _FALLBACKS if c != codec]
    for candidate in candidates:
        try:
            return data.decode(candidate)
        except (LookupError, UnicodeDecodeError):
            continue
    # Only reached for bytes cp1252 leaves undefined: never lose a whole message for them.
    try:
        return data.decode(codec or "utf-8", errors="replace")
    except LookupError:
        return data.decode("utf-8", errors="replace")


_WS = re.compile(r"\s*\r?\n[ \t]+")


def decode_header_value(raw: str | None) -> str:
    """An RFC 2047 header value as text (undeclared 8-bit headers are decoded as UTF-8 or GB18030)."""
    if not raw:
        return ""
    value = _WS.sub(" ", str(raw))
    if any("\udc80" <= ch <= "\udcff" for ch in value):
        # The bytes parser keeps raw 8-bit header bytes as surrogate escapes.
        value = decode_bytes(value.encode("ascii", "surrogateescape"), None)
    try:
        chunks = email.header.decode_header(value)
    except (ValueError, email.errors.HeaderParseError):
        return value.strip()
    out: list[str] = []
    for chunk, charset in chunks:
        if isinstance(chunk, str):
            out.append(chunk)
        else:
            out.append(decode_bytes(chunk, charset))
    return "".join(out).strip()


_MSG_ID = re.compile(r"<[^<>\s]+>")


def parse_msg_ids(raw: str | None) -> list[str]:
    """Every ``<id@host>`` in a Message-ID, In-Reply-To or References value, in order, no repeats."""
    seen: dict[str, None] = {}
    for mid in _MSG_ID.findall(raw or ""):
        seen.setdefault(mid, None)
    return list(seen)


def parse_msg_id(raw: str | None) -> str:
    """The Message-ID in ``raw`` with its angle brackets; a bare id gets them added; "" if none."""
    ids = parse_msg_ids(raw)
    if ids:
        return ids[0]
    bare = (raw or "").strip()
    return f"<{bare}>" if bare and not any(ch.isspace() for ch in bare) else ""


REPLY_PREFIX = re.compile(
    r"^\s*(?:(?:re|fw|fwd|aw|wg|sv|vs|antw|r|tr|rif|回复|回覆|答复|答覆|转发|轉寄|转|回)\s*(?:\[\d+\])?\s*[:：]\s*)+",
    re.IGNORECASE,
)


def normalize_subject(subject: str) -> str:
    """The subject without reply/forward prefixes (``Re:``, ``Fwd:``, ``回复：`` ...), casefolded."""
    text = REPLY_PREFIX.sub("", subject or "")
    return " ".join(text.split()).casefold()


# -- HTML --------------------------------------------------------------------------------------

_MD_ESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!>])")


def html_to_text(html: str) -> str:
    """Readable text of an HTML body: paragraphs, lists and links kept, markup and scripts dropped."""
    conv = html2text.HTML2Text()
    conv.body_width = 0  # no hard wrapping: the routed text is matched, not displayed
    conv.ignore_images = True
    conv.ignore_emphasis = True
    conv.unicode_snob = True  # keep non-ASCII as is instead of transliterating
    conv.single_line_break = False
    text = conv.handle(html)
    # html2text writes Markdown: undo its escapes and hard-break markers, which only add noise.
    lines = [_MD_ESCAPE.sub(r"\1", line).rstrip() for line in text.splitlines()]
    return "\n".join(lines).replace("\xa0", " ").strip()


# -- quotes and signatures ---------------------------------------------------------------------

# A line that starts the quoted earlier message; everything from it on is the quote: Outlook's
# separators and "From:/Sent:" headers, and the attributions ("On …, Name <addr> wrote:"), of the
# mail clients in each language the desk serves (a quote without "> " marks, as Outlook writes it,
# would otherwise be routed as if the user had written it).
_QUOTE_SEPARATORS = [
    re.compile(
        r"^\s*-{2,}\s*(?:Original Message|Mensaje original|Mensagem original|Исходное сообщение"
        r"|Ursprüngliche Nachricht|Message d'origine|Orijinal İleti|Özgün ileti|Thư gốc|원본 메시지)\s*-{2,}\s*$",
        re.IGNORECASE,
    ),
    re.compile(r"^\s*-{2,}\s*(?:原始邮件|原始郵件|原邮件)\s*-{2,}\s*$"),  # Outlook zh, QQ Mail
]
_ATTRIBUTIONS = [
    re.compile(r"^\s*On\b.{0,300}\bwrote:\s*$", re.IGNORECASE),  # Gmail, Apple Mail, Thunderbird
    re.compile(r"^\s*在.{0,300}写道\s*[:：]\s*$"),  # Gmail / Apple Mail zh-CN: "在 … 写道："
    re.compile(r"^\s*.{0,300}\s于\s.{0,100}写道\s*[:：]\s*$"),  # Foxmail: "张三 于 2024年1月1日 写道："
    re.compile(r"^\s*在.{0,300}寫道\s*[:：]\s*$"),  # zh-TW
    re.compile(r"^\s*Le\b.{0,300}\ba écrit\s*:\s*$", re.IGNORECASE),
    re.compile(r"^\s*Am\b.{0,300}\bschrieb\b.{0,200}:\s*$", re.IGNORECASE),
    re.compile(r"^\s*El\b.{0,300}\bescribió\s*:\s*$", re.IGNORECASE),
    re.compile(r"^\s*Em\b.{0,300}\bescreveu\s*:\s*$", re.IGNORECASE),  # pt
    re.compile(
        r"^.{0,300}\d{4}\s*г\.?,?\s*в\s*\d{1,2}:\d{2}.{0,300}:\s*$"
    ),  # ru Gmail: "пт, 5 дек. 2026 г. в 10:14, …:"
    re.compile(r"^.{0,300}\b(?:написал(?:а|\(а\))?|пишет)\s*:\s*$", re.IGNORECASE),  # ru Thunderbird, Yandex
    re.compile(r"^.{0,300}\bşunu yazdı\s*:\s*$", re.IGNORECASE),  # tr
    re.compile(r"^\s*Vào\b.{0,300}\bđã viết\s*:\s*$", re.IGNORECASE),  # vi
    re.compile(r"^.{0,300}님이 작성\s*:\s*$"),  # ko
]
_FROM_LINE = re.compile(r"^\s*\*?(?:From|发件人|寄件者|От|De|Von|Kimden|Từ|보낸 사람)\s*\*?\s*[:：]", re.IGNORECASE)
_SENT_LINE = re.compile(
    r"^\s*\*?(?:Sent|Date|发送时间|日期|寄件日期|時間|Отправлено|Дата|Enviado(?: el| em)?|Enviada em|Fecha"
    r"|Data|Gesendet|Datum|Gönderildi|Gönderilme tarihi|Tarih|Đã gửi|Ngày gửi|Ngày|보낸 날짜|날짜)\s*\*?\s*[:：]",
    re.IGNORECASE,
)
_SEPARATOR = re.compile(r"^\s*(?:_{5,}|-{5,})\s*$")
# Signatures: the RFC 3676 delimiter and the mobile clients' tag lines.
_SIG_DELIM = re.compile(r"^--\s?$")
_MOBILE_SIG = re.compile(
    r"^\s*(?:Sent from my \w+|Sent from (?:Mail|Outlook) for \w+|Get Outlook for \w+"
    r"|发自我的\s*\w+|从我的\s*\w+\s*发送|來自我的\s*\w+|发自网易邮箱.*|Sent from Yahoo Mail.*)\s*$",
    re.IGNORECASE,
)


# A client's attribution names the time or the address it quotes; a user telling a story does
# not ("On Telegram the 'admin' wrote:", "Мне написал:", "bana şunu yazdı:" — what follows is the
# scam itself, which routing must read).
_ATTRIBUTION_SIGN = re.compile(r"\d{1,2}[:.]\d{2}|\d{4}|@")


def _quote_start(lines: list[str]) -> int | None:
    for i, line in enumerate(lines):
        # Gmail wraps a long attribution over two lines: "On …, Name <addr>" / "wrote:".
        nxt = lines[i + 1] if i + 1 < len(lines) else ">"
        joined = line if nxt.lstrip().startswith(">") else f"{line} {nxt}"
        if any(pattern.match(line) for pattern in _QUOTE_SEPARATORS):
            return i
        if line.lstrip().startswith(">"):
            continue  # a quoted attribution: the "> " filter drops it, and an answer may follow
        for pattern in _ATTRIBUTIONS:
            if pattern.match(line) and _ATTRIBUTION_SIGN.search(line):
                return i
            if pattern.match(joined) and _ATTRIBUTION_SIGN.search(joined):
                return i
        if _FROM_LINE.match(line) and any(_SENT_LINE.match(nxt) for nxt in lines[i + 1 : i + 4]):
            return i
    return None


def strip_quotes(text: str) -> str:
    """The new part of a reply: quoted earlier messages, their headers and signatures removed.

    Handles top posting (cut at the quote header), interleaved ``> `` quoting (the quoted lines
    go, the answers stay) and ``-- `` / mobile signatures. When nothing would be left (a forward
    of a quote, say) the text is returned whole, so the router never gets an empty message.
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    cut = _quote_start(lines)
    if cut is not None:
        lines = lines[:cut]
        while lines and (_SEPARATOR.match(lines[-1]) or not lines[-1].strip()):
            lines.pop()
    lines = [line for line in lines if not line.lstrip().startswith(">")]
    for i, line in enumerate(lines):
        if _SIG_DELIM.match(line):
            lines = lines[:i]
            break
    # Mobile tag lines count only near the end: "Sent from my iPhone" mid-text is content.
    tail_start = max(0, len(lines) - 4)
    for i in range(tail_start, len(lines)):
        if _MOBILE_SIG.match(lines[i]):
            lines = lines[:i]
            break
    result = _tidy(_without_disclaimer("\n".join(lines)))
    return result or _tidy(text)


# A company's legal footer ("This e-mail and any attachments are confidential… if you received it
# in error, notify the sender and delete it… unauthorised use is prohibited") says nothing about
# the request, yet its words are the ones routing reads as urgent: "unauthorised", "security",
# "delete". It is recognised by the kinds of statement such footers make, in the languages the
# desk serves: a trailing paragraph (or the trailing lines of the last one) making at least three
# of them, one of them confidentiality or the intended recipient, is cut with everything after
# it. User prose rarely makes three in one paragraph at a message's end; what was cut still
# reaches the agent in the whole body (imap.py: full_body).
_DISCLAIMER_KINDS = tuple(
    re.compile(kind, re.IGNORECASE)
    for kind in (
        # confidential, privileged
        r"confidential|privileged|vertraulich|confidencial|riservat|конфиденциальн|保密|机密|機密|gizli"
        r"|bảo mật|기밀",
        # the intended recipient, the addressee
        r"intended recipient|addressee|destinatari|destinatário|empfänger|адресат|получател|收件人|收件者"
        r"|alıcı|người nhận|수신인|수신자",
        # received in error: notify the sender, delete it
        r"\bin error\b|by mistake|notify the sender|\bdelete\b|\bdestroy|irrtümlich|löschen|por error"
        r"|por engano|elimin|apague|borre|по ошибке|удалит|уничтож|错收|誤收|误收|删除|刪除|yanlışlıkla"
        r"|\bsil(?:in|iniz)\b|nhầm|xóa|xoá|잘못 수신|삭제",
        # use, disclosure, copying prohibited
        r"prohibited|forbidden|\bdisclos|dissemination|distribution|untersagt|prohibid|proibid|запрещ"
        r"|разглаш|禁止|yasak|nghiêm cấm|금지",
        # this e-mail (and its attachments)
        r"this (?:e-?mail|message|communication|transmission)|(?:any|all|its) attachments|diese (?:e-?mail|nachricht)"
        r"|este (?:correo|e-?mail|mensaje)|esta mensagem|это (?:письмо|сообщение)|本邮件|此邮件|本郵件"
        r"|此郵件|bu (?:e-?posta|mesaj)|email này|thư này|이 (?:메일|이메일)|첨부|before printing",
    )
)
_DISCLAIMER_MIN_KINDS = 3
# Confidential, the intended recipient: the two that only a footer makes (a user who asks to
# delete a key or forbid a withdrawal makes neither).
_FOOTER_ONLY = frozenset({0, 1})


def _kinds(text: str) -> frozenset[int]:
    """The kinds of statement ``text`` makes (their places in ``_DISCLAIMER_KINDS``). No pattern
    matches across a line's end (none holds a newline, a dot or a whitespace class), so a text's
    kinds are the union of its lines' kinds."""
    return frozenset(i for i, kind in enumerate(_DISCLAIMER_KINDS) if kind.search(text))


def _is_footer(kinds: frozenset[int]) -> bool:
    """Three kinds of statement, one of them confidentiality or the intended recipient."""
    return len(kinds) >= _DISCLAIMER_MIN_KINDS and not kinds.isdisjoint(_FOOTER_ONLY)


def _footer_paragraph(paragraphs: list[str]) -> int | None:
    """The first trailing paragraph of a footer: one that makes three kinds of statement, under
    which each paragraph makes at least one ("Please consider the environment before printing
    this e-mail"). Never the first paragraph: then it is the message."""
    start = None
    for i in range(len(paragraphs) - 1, 0, -1):
        kinds = _kinds(paragraphs[i])
        if not kinds:
            break
        if _is_footer(kinds):
            start = i
    return start


def _footer_line(lines: list[str]) -> int | None:
    """The first line of a footer straight under the sign-off, in one paragraph: the shortest tail
    of lines that makes three kinds of statement together (a footer wrapped at 72 columns spreads
    them over its lines), and the lines above it that make one each. Never the first line. The
    tail's kinds are gathered line by line: one pass, however long the paragraph."""
    tail: frozenset[int] = frozenset()
    for i in range(len(lines) - 1, 0, -1):
        tail |= _kinds(lines[i])
        if _is_footer(tail):
            while i > 1 and _kinds(lines[i - 1]):
                i -= 1
            return i
    return None


def _without_disclaimer(text: str) -> str:
    """``text`` less a legal footer at its end: whole paragraphs, or else the last paragraph's
    trailing lines."""
    paragraphs = re.split(r"\n[ \t]*\n", text.strip())
    cut = _footer_paragraph(paragraphs)
    if cut is not None:
        return "\n\n".join(paragraphs[:cut])
    lines = paragraphs[-1].split("\n")
    cut = _footer_line(lines)
    if cut is None:
        return text
    return "\n\n".join([*paragraphs[:-1], "\n".join(lines[:cut])])


_BLANKS = re.compile(r"\n{3,}")


def _tidy(text: str) -> str:
    text = "\n".join(line.rstrip() for line in text.replace("\r\n", "\n").split("\n"))
    return _BLANKS.sub("\n\n", text).strip()


# -- auto-replies and bounces ------------------------------------------------------------------

_ROBOT_LOCALPARTS = {"mailer-daemon", "postmaster", "noreply", "no-reply", "donotreply", "do-not-reply"}


def auto_submitted_reason(msg: Message, from_addr: str) -> str | None:
    """Why this message is machine-generated and must never be answered automatically, or None."""
    auto = (msg.get("Auto-Submitted") or "").strip().lower()
    if auto and not auto.startswith("no"):
        return f"Auto-Submitted: {auto}"
    precedence = (msg.get("Precedence") or "").strip().lower()
    if precedence in {"bulk", "junk", "list", "auto_reply"}:
        return f"Precedence: {precedence}"
    if msg.get("X-Autoreply") or msg.get("X-Autorespond") or msg.get("X-Auto-Response"):
        return "X-Autoreply header"
    if msg.get("List-Id") or msg.get("List-Unsubscribe"):
        return "mailing list"
    if msg.get_content_type() == "multipart/report":
        return f"report: {msg.get_param('report-type') or 'unknown'}"
    localpart = from_addr.rpartition("@")[0].lower()
    if localpart in _ROBOT_LOCALPARTS:
        return f"robot sender: {from_addr}"
    if (msg.get("Return-Path") or "").strip() == "<>":
        return "null return path (bounce)"
    return None


# -- the whole message -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Part:
    """A non-body MIME part: metadata only, addressed by its IMAP section number."""

    section: str
    name: str
    type: str
    size: int


@dataclass(slots=True)
class ParsedMail:
    message_id: str
    in_reply_to: list[str]
    references: list[str]
    subject: str
    from_addr: str
    from_name: str
    reply_to: str
    to: str
    cc: str
    date: float | None
    body: str  # the whole text body (HTML converted), quotes included
    text: str  # the routed text: quotes and signature stripped
    html_only: bool
    language: str | None
    auto_reason: str | None
    attachments: list[Part] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)
    reply_to_name: str = ""


def _addresses(msg: Message, name: str) -> list[tuple[str, str]]:
    raw = [v for k, v in msg.raw_items() if k.lower() == name.lower()]
    out: list[tuple[str, str]] = []
    for display, addr in email.utils.getaddresses([decode_header_value(r) if "=?" not in r else r for r in raw]):
        if addr:
            out.append((decode_header_value(display), addr.strip()))
    return out


def _raw_header(msg: Message, name: str) -> str:
    for key, value in msg.raw_items():
        if key.lower() == name.lower():
            return str(value)
    return ""


def _part_text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    return decode_bytes(payload, part.get_content_charset())


def _leaves(part: Message, section: str) -> list[tuple[str, Message]]:
    """Leaf parts with their IMAP section numbers (RFC 3501 6.4.5); attached messages are leaves."""
    if part.get_content_maintype() == "multipart" and part.is_multipart():
        out: list[tuple[str, Message]] = []
        subparts = part.get_payload()
        assert isinstance(subparts, list)
        for i, sub in enumerate(subparts, 1):
            out.extend(_leaves(sub, f"{section}.{i}" if section else str(i)))
        return out
    return [(section or "1", part)]


def _attached(part: Message) -> Message | None:
    """The message inside a message/rfc822 part."""
    inner = part.get_payload()
    if isinstance(inner, list) and inner and isinstance(inner[0], Message):
        return inner[0]
    return None


def _part_size(part: Message) -> int:
    if part.get_content_type() == "message/rfc822" or part.is_multipart():
        inner = _attached(part)
        return len(inner.as_bytes()) if inner is not None else 0
    payload = part.get_payload(decode=True)
    return len(payload) if isinstance(payload, bytes) else 0


def _part_name(part: Message, section: str) -> str:
    try:
        name = part.get_filename()
    except (ValueError, LookupError):
        name = None
    if name:
        return decode_header_value(name) if "=?" in name else name
    if part.get_content_type() == "message/rfc822":
        inner = _attached(part)
        if inner is not None:
            subject = decode_header_value(_raw_header(inner, "Subject"))
            return f"{subject or 'message'}.eml"
    return f"part-{section}"


def parse(raw: bytes) -> ParsedMail:
    """Parse a whole RFC 5322 message (as fetched with ``BODY.PEEK[]``)."""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    senders = _addresses(msg, "From") or _addresses(msg, "Sender")
    from_name, from_addr = senders[0] if senders else ("", "")
    reply_to = _addresses(msg, "Reply-To")
    date: float | None = None
    try:
        parsed_date = email.utils.parsedate_to_datetime(_raw_header(msg, "Date"))
        date = parsed_date.timestamp() if parsed_date.tzinfo else None
    except (TypeError, ValueError, IndexError):
        date = None

    leaves = _leaves(msg, "")
    body_part: Message | None = None
    try:
        body_part = msg.get_body(preferencelist=("plain", "html"))
    except (KeyError, ValueError):
        body_part = None
    body = ""
    html_only = False
    if body_part is not None:
        if body_part.get_content_type() == "text/html":
            html_only = True
            body = html_to_text(_part_text(body_part))
        else:
            body = _part_text(body_part)
            if not body.strip():
                # An empty text/plain beside an HTML alternative: take the HTML.
                html = next((p for _, p in leaves if p.get_content_type() == "text/html"), None)
                if html is not None:
                    html_only = True
                    body = html_to_text(_part_text(html))
    body = _tidy(body)

    # Parts that are the body or an alternative rendering of it are not attachments.
    alternatives: set[int] = set()
    if body_part is not None:
        alternatives.add(id(body_part))
        for _, p in leaves:
            inline = p.get_content_disposition() != "attachment" and not p.get_filename()
            if inline and p.get_content_type() in ("text/plain", "text/html"):
                alternatives.add(id(p))
    attachments = [
        Part(section, _part_name(p, section), p.get_content_type(), _part_size(p))
        for section, p in leaves
        if id(p) not in alternatives
    ]
    language = (msg.get("Content-Language") or "").split(",")[0].strip().split("-")[0].lower() or None
    return ParsedMail(
        message_id=parse_msg_id(_raw_header(msg, "Message-ID")),
        in_reply_to=parse_msg_ids(_raw_header(msg, "In-Reply-To")),
        references=parse_msg_ids(_raw_header(msg, "References")),
        subject=decode_header_value(_raw_header(msg, "Subject")),
        from_addr=from_addr,
        from_name=from_name,
        reply_to=reply_to[0][1] if reply_to else "",
        to=", ".join(addr for _, addr in _addresses(msg, "To")),
        cc=", ".join(addr for _, addr in _addresses(msg, "Cc")),
        date=date,
        body=body,
        text=strip_quotes(body) if body else "",
        html_only=html_only,
        language=language if language and language.isalpha() and len(language) == 2 else None,
        auto_reason=auto_submitted_reason(msg, from_addr),
        attachments=attachments,
        defects=[type(d).__name__ for d in msg.defects],
        reply_to_name=reply_to[0][0] if reply_to else "",
    )
