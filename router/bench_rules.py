"""``switchboard bench rules``: messages/second at 10 … 10,000 rules, against a naive loop.

The corpus and the rule sets are synthetic and seeded (nothing is read from disk except the
shipped default rule set): support messages in zh/en/ru/es/tr/vi/pt/ko from templates with coins,
amounts, txids, addresses and error codes. The first 10 rules are generic topic rules; every
further rule is *specific* — an error code, a coin and an action — the way real rule sets grow, so
the number of rules a message matches stays about the same as the rule count grows.

The naive baseline is the loop a first version would write: for each rule, ``kw in text`` for its
keywords and ``re.search`` for its regex, on the case-folded text. It is measured in the same run,
on fewer messages at 1,000 and 10,000 rules (it is ~100 msg/s there), which the output says.
"""

from __future__ import annotations

import functools
import gc
import json
import os
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import msgspec

from rules import Engine, MessageIn, native
from rules.intent import IntentModel, ModelError

SIZES = (10, 100, 1000, 10000)
COINS = ("usdt", "btc", "eth", "trx", "sol", "bnb", "xrp", "doge")
NETWORKS = ("TRC20", "ERC20", "BEP20", "Solana", "Bitcoin", "Arbitrum")
CODE_BASE = 10000  # synthetic rule i >= 10 handles error code E{CODE_BASE + i - 10}

# Action words per language (the specific rules use the action's words in every language).
ACTIONS: dict[str, dict[str, str]] = {
    "withdraw": {
        "zh": "提现",
        "en": "withdrawal",
        "ru": "вывод",
        "es": "retiro",
        "tr": "çekim",
        "vi": "rút",
        "pt": "saque",
        "ko": "출금",
    },
    "deposit": {
        "zh": "充值",
        "en": "deposit",
        "ru": "депозит",
        "es": "depósito",
        "tr": "yatırma",
        "vi": "nạp",
        "pt": "depósito",
        "ko": "입금",
    },
    "transfer": {
        "zh": "转账",
        "en": "transfer",
        "ru": "перевод",
        "es": "transferencia",
        "tr": "transfer",
        "vi": "chuyển",
        "pt": "transferência",
        "ko": "이체",
    },
    "convert": {
        "zh": "闪兑",
        "en": "convert",
        "ru": "конвертация",
        "es": "conversión",
        "tr": "dönüştürme",
        "vi": "quy đổi",
        "pt": "conversão",
        "ko": "환전",
    },
}
ACTION_NAMES = tuple(ACTIONS)

# {act} = an action word, {coin}, {amount}, {net}, {txid}, {addr}; {code} is appended or inserted.
TEMPLATES: dict[str, Sequence[str]] = {
    "zh": (
        "我的{coin}{act}已经两个小时了还没到账，金额{amount}，网络{net}，交易哈希{txid}",
        "你好，{act}{amount} {coin}一直显示处理中，地址是{addr}，麻烦帮忙查一下",
        "实名认证一直审核不通过，身份证照片已经重新上传了三次",
        "我的账户被盗了！有人登录了我的账号，请马上冻结",
        "合约爆仓了但是价格根本没到强平价，要求赔偿",
        "API下单一直报错，签名错误，请问怎么解决",
    ),
    "en": (
        "My {coin} {act} of {amount} is still pending after 3 hours. Network {net}, txid {txid}",
        "Hi, I sent {amount} {coin} to {addr} but the {act} has not arrived yet, please check",
        "KYC verification failed again, my passport photo was rejected for blur",
        "Someone logged into my account and changed my 2FA, I think I was hacked!!",
        "The futures position got liquidated at a price that never happened, I want a refund",
        "API order endpoint returns invalid signature since this morning",
    ),
    "ru": (
        "Мой {act} {amount} {coin} висит уже три часа, сеть {net}, хэш {txid}",
        "Здравствуйте, отправил {amount} {coin} на {addr}, {act} до сих пор не пришёл",
        "Верификация не проходит, фото паспорта отклонили",
        "Мой аккаунт взломали, кто-то вошёл и поменял 2FA, заблокируйте срочно",
        "Ликвидировали позицию по цене, которой не было, требую компенсацию",
        "API возвращает ошибку подписи при размещении ордера",
    ),
    "es": (
        "Mi {act} de {amount} {coin} sigue pendiente, red {net}, hash {txid}",
        "Hola, envié {amount} {coin} a {addr} y el {act} no llega, ayuda por favor",
        "La verificación de identidad fue rechazada otra vez, la foto salió borrosa",
        "Alguien entró en mi cuenta y cambió el 2FA, me hackearon",
        "Me liquidaron la posición a un precio que nunca existió, quiero un reembolso",
        "La API da error de firma al crear órdenes",
    ),
    "tr": (
        "{coin} {act} işlemim {amount} hâlâ beklemede, ağ {net}, txid {txid}",
        "Merhaba, {addr} adresine {amount} {coin} gönderdim ama {act} gelmedi",
        "Kimlik doğrulamam yine reddedildi, fotoğraf bulanık dediler",
        "Hesabım hacklendi, biri giriş yapıp 2FA değiştirdi, acil dondurun",
        "Pozisyonum olmayan bir fiyattan likide edildi, iade istiyorum",
        "API emir verirken imza hatası veriyor",
    ),
    "vi": (
        "Lệnh {act} {amount} {coin} của mình vẫn đang chờ, mạng {net}, txid {txid}",
        "Chào bạn, mình gửi {amount} {coin} tới {addr} mà {act} chưa về",
        "Xác minh KYC bị từ chối vì ảnh bị mờ, chụp lại vẫn vậy",
        "Tài khoản của mình bị hack, có người đăng nhập và đổi 2FA",
        "Vị thế bị thanh lý ở mức giá không hề có, mình muốn hoàn tiền",
        "API báo lỗi chữ ký khi đặt lệnh",
    ),
    "pt": (
        "Meu {act} de {amount} {coin} está pendente há horas, rede {net}, hash {txid}",
        "Olá, enviei {amount} {coin} para {addr} e o {act} não caiu",
        "Minha verificação foi recusada de novo, disseram que a foto está borrada",
        "Invadiram minha conta e trocaram o 2FA, bloqueiem por favor",
        "Fui liquidado num preço que nunca existiu, quero reembolso",
        "A API retorna erro de assinatura ao criar ordens",
    ),
    "ko": (
        "{coin} {act} {amount} 가 3시간째 대기 중입니다. 네트워크 {net}, txid {txid}",
        "안녕하세요, {addr} 주소로 {amount} {coin} 보냈는데 {act}이 안 됩니다",
        "신분 인증이 또 거절되었습니다. 사진이 흐리다고 합니다",
        "계정이 해킹당했어요. 누가 로그인해서 2FA를 바꿨어요",
        "존재하지 않는 가격에 청산당했습니다. 환불을 요구합니다",
        "API 주문 시 서명 오류가 납니다",
    ),
}
CODE_PHRASES = (
    "error E{code}",
    "错误代码 E{code}",
    "код ошибки E{code}",
    "código E{code}",
    "hata kodu E{code}",
    "mã lỗi E{code}",
    "erro E{code}",
    "오류 코드 E{code}",
)

# The 10 generic rules (also the first 10 rules of every larger set).
GENERIC_RULES = (
    (
        "security",
        ["被盗", "hacked", "взломали", "hackearon", "hacklendi", "bị hack", "invadiram", "해킹", "2fa"],
        None,
        "P1",
    ),
    (
        "withdraw-stuck",
        ["未到账", "还没到账", "pending", "висит", "pendiente", "beklemede", "đang chờ", "pendente", "대기"],
        None,
        "P2",
    ),
    (
        "not-arrived",
        ["not arrived", "no llega", "gelmedi", "chưa về", "não caiu", "не пришёл", "안 됩니다"],
        None,
        "P2",
    ),
    (
        "kyc",
        [
            "实名认证",
            "kyc",
            "verification",
            "верификация",
            "verificación",
            "doğrulama",
            "xác minh",
            "verificação",
            "인증",
        ],
        None,
        "P3",
    ),
    (
        "liquidation",
        ["爆仓", "liquidated", "ликвидировали", "liquidaron", "likide", "thanh lý", "liquidado", "청산"],
        None,
        "P2",
    ),
    ("refund", ["赔偿", "refund", "компенсацию", "reembolso", "iade", "hoàn tiền", "환불"], None, "P3"),
    ("api", ["api"], r"(signature|签名|подпис|firma|imza|chữ ký|assinatura|서명)", "P3"),
    ("txid", None, "txid", None),
    ("urgent", ["urgent", "срочно", "马上", "acil", "ngay"], None, "P2"),
    ("network", ["trc20", "erc20", "bep20"], None, None),
)


@dataclass(frozen=True)
class NaiveRule:
    """One rule as the naive loop sees it: all of these keyword groups (any of each), a regex."""

    groups: tuple[tuple[str, ...], ...]
    regex: re.Pattern[str] | None


# --------------------------------------------------------------------------- corpus


def _hex(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789abcdef") for _ in range(n))


def _address(rng: random.Random) -> str:
    # Shaped like real addresses (the detectors validate checksums; these mostly fail them,
    # which is the common case for mistyped addresses anyway).
    b58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
    kind = rng.randrange(3)
    if kind == 0:
        return "0x" + _hex(rng, 40)
    if kind == 1:
        return "T" + "".join(rng.choice(b58) for _ in range(33))
    return "bc1q" + "".join(rng.choice("023456789acdefghjklmnpqrstuvwxyz") for _ in range(38))


def code_profile(code: int) -> tuple[str, str]:
    """The coin and action the specific rule for ``code`` is about."""
    return COINS[code % len(COINS)], ACTION_NAMES[(code // len(COINS)) % len(ACTION_NAMES)]


def corpus(n: int, seed: int) -> list[MessageIn]:
    """``n`` realistic support messages; 40% carry an error code, as users paste them."""
    rng = random.Random(seed)
    langs = tuple(TEMPLATES)
    out: list[MessageIn] = []
    for _ in range(n):
        lang = rng.choice(langs)
        coin, action = rng.choice(COINS), rng.choice(ACTION_NAMES)
        code = None
        if rng.random() < 0.4:
            code = CODE_BASE + rng.randrange(10000)
            if rng.random() < 0.5:  # the message is about what the code is about
                coin, action = code_profile(code)
        text = rng.choice(TEMPLATES[lang]).format(
            coin=coin.upper() if rng.random() < 0.5 else coin,
            act=ACTIONS[action][lang],
            amount=f"{rng.uniform(10, 50000):.2f}",
            net=rng.choice(NETWORKS),
            txid=("0x" if rng.random() < 0.3 else "") + _hex(rng, 64),
            addr=_address(rng),
        )
        if code is not None:
            phrase = rng.choice(CODE_PHRASES).format(code=code)
            text = f"{text} {phrase}" if rng.random() < 0.7 else f"{phrase}: {text}"
        channel = rng.choice(("telegram", "discord", "email"))
        out.append(MessageIn(channel=channel, text=text, sender={"tier": rng.choice(("vip", ""))}))
    return out


# --------------------------------------------------------------------------- rule sets


def _flow(items: Sequence[str]) -> str:
    return "[" + ", ".join(json.dumps(i, ensure_ascii=False) for i in items) + "]"


def synthetic_rules(size: int) -> tuple[str, list[NaiveRule]]:
    """A rule file of ``size`` rules (YAML text) and the same rules for the naive loop."""
    lines = [
        "version: 1",
        "groups:",
        "  - {id: general}",
        "  - {id: security}",
        "  - {id: payments}",
        "  - {id: verification}",
        "  - {id: trading}",
        "defaults: {group: general, priority: P3}",
        "rules:",
    ]
    naive: list[NaiveRule] = []
    routes: dict[str, str] = {
        "security": "security",
        "kyc": "verification",
        "liquidation": "trading",
        "api": "trading",
        "withdraw-stuck": "payments",
        "not-arrived": "payments",
    }
    for rid, keywords, regex, priority in GENERIC_RULES[:size]:
        conds = []
        if keywords:
            conds.append(f"{{contains_any: {_flow(keywords)}}}")
        if regex:
            conds.append(f"{{regex: {json.dumps(regex, ensure_ascii=False)}}}")
        then = [f"tags: [{rid}]"]
        if priority:
            then.append(f"priority: {priority}")
        if rid in routes:
            then.append(f"route: {routes[rid]}")
        lines.append(f"  - {{id: {rid}, when: [{', '.join(conds)}], then: {{{', '.join(then)}}}}}")
        naive.append(
            NaiveRule(
                (tuple(k.casefold() for k in keywords),) if keywords else (),
                re.compile(regex) if regex else None,
            )
        )
    for i in range(len(GENERIC_RULES), size):
        code = CODE_BASE + i - len(GENERIC_RULES)
        coin, action = code_profile(code)
        words = sorted(set(ACTIONS[action].values()))
        regex = f"e{code}\\D" if i % 10 == 0 else None
        conds = [f"{{contains_any: [e{code}]}}", f"{{contains_any: [{coin}]}}", f"{{contains_any: {_flow(words)}}}"]
        if regex:
            conds.append(f"{{regex: {json.dumps(regex)}}}")
        actions = f"{{tags: [code-{code}], raise_priority: 1}}"
        lines.append(f"  - {{id: code-{code}, when: [{', '.join(conds)}], then: {actions}}}")
        naive.append(
            NaiveRule(
                ((f"e{code}",), (coin,), tuple(w.casefold() for w in words)),
                re.compile(regex) if regex else None,
            )
        )
    return "\n".join(lines) + "\n", naive


def _naive_message(rules: Sequence[NaiveRule], message: MessageIn) -> int:
    return naive_match(rules, message.text)


def naive_match(rules: Sequence[NaiveRule], text: str) -> int:
    """The baseline: every rule, every keyword, in Python. Returns how many rules matched."""
    folded = text.casefold()
    matched = 0
    for rule in rules:
        if all(any(k in folded for k in group) for group in rule.groups) and (
            rule.regex is None or rule.regex.search(folded)
        ):
            matched += 1
    return matched


# --------------------------------------------------------------------------- measuring


def _rate(fn: Callable[[MessageIn], Any], messages: Sequence[MessageIn]) -> float:
    return _rates({"fn": fn}, messages)["fn"]


def _rates(
    fns: dict[str, Callable[[MessageIn], Any]], messages: Sequence[MessageIn], chunk: int = 2000
) -> dict[str, float]:
    """Messages per CPU-second of each function, measured interleaved.

    The functions take turns on 2,000-message chunks (order reversed every chunk) and the process's
    CPU time is counted, so a change of load on a shared machine falls on every contender alike
    instead of on whichever was measured at the time.
    """
    for fn in fns.values():
        for msg in messages[:200]:  # warm caches (regex, language model pages)
            fn(msg)
    # As in the router worker (router.rulestore.settle_heap): the compiled engines are frozen out
    # of the cyclic collector, which would otherwise rescan them on every full collection.
    gc.collect()
    gc.freeze()
    spent = dict.fromkeys(fns, 0.0)
    items = list(fns.items())
    try:
        for turn, i in enumerate(range(0, len(messages), chunk)):
            part = messages[i : i + chunk]
            for name, fn in items if turn % 2 == 0 else reversed(items):
                gc.collect()
                start = time.process_time()
                for msg in part:
                    fn(msg)
                spent[name] += time.process_time() - start
    finally:
        gc.unfreeze()
    return {name: len(messages) / max(seconds, 1e-9) for name, seconds in spent.items()}


def _pin_one_core() -> None:
    # "One core": keep the measurement from spreading over the other cores.
    if hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpus[-1]})


def measure(messages: int = 20000, seed: int = 1) -> dict[str, Any]:
    """Run the whole benchmark and return the figures (see ``run`` for the keys)."""
    _pin_one_core()
    msgs = corpus(messages, seed)
    result: dict[str, Any] = {
        "messages": messages,
        "seed": seed,
        "compiled": native.compiled(),  # the engine's modules as mypyc built them (setup.py), or pure Python
        "msgs_per_s": {},
        "naive_msgs_per_s": {},
        "naive_messages": {},
        "avg_rules_matched": {},
        "build_s": {},
    }
    engines: dict[str, Callable[[MessageIn], Any]] = {}
    for size in SIZES:
        text, naive = synthetic_rules(size)
        start = time.perf_counter()
        engine = Engine.from_yaml(text, f"synthetic-{size}.yaml")
        result["build_s"][str(size)] = round(time.perf_counter() - start, 3)
        engines[str(size)] = engine.evaluate
        matched = sum(len(engine.evaluate(m).trace) for m in msgs)
        result["avg_rules_matched"][str(size)] = round(matched / len(msgs), 3)
        # The naive loop costs O(rules) per message: fewer messages keep the run short.
        n_naive = max(200, min(messages, messages * 100 // size))
        result["naive_messages"][str(size)] = n_naive
        result["naive_msgs_per_s"][str(size)] = round(_rate(functools.partial(_naive_message, naive), msgs[:n_naive]))
    try:
        # As the router runs it: with the shipped triage model (its `model:` section asks it about
        # every message); and without, the baseline of the same run.
        default = Engine.default(model=IntentModel.shipped())
        without = Engine.default()
    except (FileNotFoundError, ModelError):
        pass  # a source tree without the shipped rule set or model: no default figure
    else:
        result["default_rules"] = default.rule_count
        engines["default"] = default.evaluate
        engines["default_no_model"] = without.evaluate
        # As the router sees a message that went through the P1 lane's ingest precheck: with the
        # model's prediction carried (made here, untimed; timed on its own as the precheck, which
        # the appending process runs).
        carried = {id(m): msgspec.structs.replace(m, triage=default.precheck(m, model=True).triage) for m in msgs}
        engines["default_carried"] = lambda m: default.evaluate(carried[id(m)])
        engines["precheck"] = functools.partial(default.precheck, model=True)
    rates = _rates(engines, msgs)
    for size in SIZES:
        result["msgs_per_s"][str(size)] = round(rates[str(size)])
    result["default_msgs_per_s"] = round(rates["default"]) if "default" in rates else None
    result["default_no_model_msgs_per_s"] = round(rates["default_no_model"]) if "default" in rates else None
    result["default_carried_msgs_per_s"] = round(rates["default_carried"]) if "default" in rates else None
    result["precheck_msgs_per_s"] = round(rates["precheck"]) if "default" in rates else None
    result["redos_ms"] = round(_redos_ms(), 3)
    result["ratio_10000_vs_10"] = round(result["msgs_per_s"]["10000"] / result["msgs_per_s"]["10"], 3)
    return result


def _redos_ms() -> float:
    """One evaluation of a 100 KB message against an admin's ``(a+)+$`` (RE2: linear time)."""
    text, _ = synthetic_rules(10)
    text += '  - {id: redos, when: {regex: "(a+)+$"}, then: {tags: [redos]}}\n'
    engine = Engine.from_yaml(text, "redos.yaml")
    message = MessageIn(channel="telegram", text="a" * 100_000 + "!")
    start = time.perf_counter()
    engine.evaluate(message)
    return (time.perf_counter() - start) * 1000


def run(as_json: bool, out: TextIO, messages: int = 20000, seed: int = 1) -> int:
    """``switchboard bench rules [--json]``: print the figures; exit 0."""
    r = measure(messages, seed)
    if as_json:
        out.write(json.dumps(r) + "\n")
        return 0
    print(
        f"rules engine benchmark: {messages} synthetic messages (seed {seed}), one core, CPU time, "
        "engines interleaved in 2,000-message chunks",
        file=out,
    )
    print(
        f"{'rules':>6} {'build s':>8} {'engine msg/s':>13} {'naive msg/s':>12} "
        f"{'(naive msgs)':>13} {'avg matched':>12}",
        file=out,
    )
    for size in SIZES:
        k = str(size)
        print(
            f"{size:>6} {r['build_s'][k]:>8.3f} {r['msgs_per_s'][k]:>13,} "
            f"{r['naive_msgs_per_s'][k]:>12,} {r['naive_messages'][k]:>13} "
            f"{r['avg_rules_matched'][k]:>12.2f}",
            file=out,
        )
    print(f"10,000 rules vs 10: {r['ratio_10000_vs_10']:.2f}x the throughput", file=out)
    if r["default_msgs_per_s"] is None:
        print("default rule set: rules/default.yaml not found", file=out)
    else:
        print(
            f"default rule set ({r['default_rules']} rules, language detection included): "
            f"{r['default_msgs_per_s']:,} msg/s with the triage model, "
            f"{r['default_no_model_msgs_per_s']:,} without; "
            f"{r['default_carried_msgs_per_s']:,} with the model's prediction carried from the ingest "
            f"precheck (which runs at {r['precheck_msgs_per_s']:,} msg/s in the appending process)",
            file=out,
        )
    print(f"(a+)+$ on a 100 KB message: {r['redos_ms']:.1f} ms for one evaluation", file=out)
    print(
        "engine = Engine.evaluate (normalise, keywords, detectors, language, rules, redaction);"
        " naive = keyword/regex loop only",
        file=out,
    )
    return 0
