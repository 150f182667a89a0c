"""Tests for rules.detectors: encoders/validators, detection, and the labelled samples."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mnemonic import Mnemonic

from rules.detectors import (
    KINDS,
    SECRET_KINDS,
    Finding,
    _convertbits,
    _valid_segwit,
    b58check_decode,
    b58check_encode,
    bech32_decode,
    bech32_encode,
    detect,
    eip55_checksum,
    keccak256,
)

from .conftest import SAMPLES

B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


def kinds(text: str) -> list[tuple[str, str]]:
    return [(f.kind, text[f.start : f.end]) for f in detect(text)]


def _flip(s: str, i: int, alphabet: str) -> str:
    c = s[i]
    repl = alphabet[(alphabet.index(c) + 1) % len(alphabet)]
    return s[:i] + repl + s[i + 1 :]


# ---------------------------------------------------------------- known vectors


def test_keccak_vectors() -> None:
    assert keccak256(b"").hex() == ("c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470")
    assert keccak256(b"a" * 200)[:4] != keccak256(b"a" * 201)[:4]  # multi-block path


def test_eip55_vectors() -> None:
    for addr in (
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",  # EIP-55's own list (40 hex digits)
        "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
        "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
        "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
    ):
        assert eip55_checksum(addr.lower()) == addr
        assert kinds(f"send to {addr} pls") == [("eth_address", addr)]
    bad = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD"  # last letter's case flipped
    assert kinds(f"send to {bad}") == []
    lower = "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed"
    assert kinds(lower) == [("eth_address", lower)]
    upper = "0x" + lower[2:].upper()
    assert kinds(upper) == [("eth_address", upper)]
    # The same vector with one digit missing (39 hex digits) is not an address.
    assert kinds("0x5aAeb6053F3E94C9b9A09f3669435E7Ef1BeAed") == []


def test_known_base58_addresses() -> None:
    assert kinds("1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa") == [("btc_address", "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa")]
    assert kinds("到 3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy 了") == [("btc_address", "3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy")]
    assert kinds("TRC20: TLa2f6VPqDgRE67v1736s7bJ8Ray5wYjU7.") == [
        ("tron_address", "TLa2f6VPqDgRE67v1736s7bJ8Ray5wYjU7")
    ]
    assert kinds(_flip("1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa", 10, B58)) == []
    assert kinds(_flip("TLa2f6VPqDgRE67v1736s7bJ8Ray5wYjU7", 5, B58)) == []


BIP173_VALID = (
    "BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3T4",
    "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4",
    "bc1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3qccfmv3",
)
BIP350_VALID = (
    "bc1pw508d6qejxtdg4y5r3zarvary0c5xw7kw508d6qejxtdg4y5r3zarvary0c5xw7kt5nd6y",
    "BC1SW50QGDZ25J",
    "bc1zw508d6qejxtdg4y5r3zarvaryvaxxpcs",
    "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0",
)
BIP350_INVALID = (
    "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqh2y7hd",  # bech32 instead of m
    "BC1S0XLXVLHEMJA6C4DQV22UAPCTQUPFHLXM9H8Z3K2E72Q4K9HCZ7VQ54WELL",  # bech32 for v16
    "bc1zw508d6qejxtdg4y5r3zarvaryvqyzf3du",  # invalid padding
    "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kemeawh",  # bech32m for v0
    "bc1rw5uspcuh",  # program too short
    "bc10w508d6qejxtdg4y5r3zarvary0c5xw7kw508d6qejxtdg4y5r3zarvary0c5xw7kw5rljs90",  # too long
    "BC1QR508D6QEJXTDG4Y5R3ZARVARYV98GJ9P",  # v0 program of 16 bytes
    "bc1gmk9yu",  # empty data
)


@pytest.mark.parametrize("addr", BIP173_VALID + BIP350_VALID)
def test_bip173_350_valid(addr: str) -> None:
    assert _valid_segwit(addr)
    assert kinds(f"addr {addr} thanks") == [("btc_address", addr)]


@pytest.mark.parametrize("addr", BIP350_INVALID)
def test_bip350_invalid(addr: str) -> None:
    assert not _valid_segwit(addr)


def test_mixed_case_bech32_rejected() -> None:
    assert bech32_decode("bc1qW508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4") is None


# ---------------------------------------------------------------- generated values


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=20, max_size=20), st.sampled_from([0x00, 0x05]), st.data())
def test_generated_btc_legacy(h160: bytes, version: int, data: st.DataObject) -> None:
    addr = b58check_encode(bytes([version]) + h160)
    assert b58check_decode(addr) == bytes([version]) + h160
    assert kinds(f"sent to {addr}") == [("btc_address", addr)]
    i = data.draw(st.integers(min_value=1, max_value=len(addr) - 1))
    assert kinds(f"sent to {_flip(addr, i, B58)}") == []


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=20, max_size=20), st.data())
def test_generated_tron(h160: bytes, data: st.DataObject) -> None:
    addr = b58check_encode(b"\x41" + h160)
    assert addr.startswith("T") and len(addr) == 34
    assert kinds(f"地址{addr}充值") == [("tron_address", addr)]
    i = data.draw(st.integers(min_value=1, max_value=33))
    assert kinds(_flip(addr, i, B58)) == []


@settings(max_examples=60, deadline=None)
@given(
    st.one_of(
        st.tuples(st.just(0), st.binary(min_size=20, max_size=20)),
        st.tuples(st.just(0), st.binary(min_size=32, max_size=32)),
        st.tuples(st.integers(1, 16), st.binary(min_size=2, max_size=40)),
    ),
    st.data(),
)
def test_generated_segwit(spec: tuple[int, bytes], data: st.DataObject) -> None:
    version, program = spec
    five = _convertbits(list(program), 8, 5, True)
    assert five is not None
    addr = bech32_encode("bc", [version, *five], 1 if version == 0 else 0x2BC830A3)
    assert _valid_segwit(addr)
    assert kinds(f"withdraw to {addr}") == [("btc_address", addr)]
    i = data.draw(st.integers(min_value=3, max_value=len(addr) - 1))
    assert not _valid_segwit(_flip(addr, i, BECH32))


@settings(max_examples=30, deadline=None)
@given(st.binary(min_size=20, max_size=20))
def test_generated_eth(raw: bytes) -> None:
    addr = eip55_checksum("0x" + raw.hex())
    assert kinds(f"to {addr}") == [("eth_address", addr)]
    letters = [i for i, c in enumerate(addr) if c.isalpha() and i > 1]
    if len(letters) >= 2 and addr[2:] != addr[2:].lower() and addr[2:] != addr[2:].upper():
        i = letters[0]
        bad = addr[:i] + addr[i].swapcase() + addr[i + 1 :]
        if bad[2:] not in (bad[2:].lower(), bad[2:].upper()):
            assert kinds(f"to {bad}") == []


@settings(max_examples=40, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.booleans(), st.booleans())
def test_generated_wif(secret: bytes, compressed: bool, testnet: bool) -> None:
    payload = bytes([0xEF if testnet else 0x80]) + secret + (b"\x01" if compressed else b"")
    wif = b58check_encode(payload)
    assert kinds(f"my key {wif}") == [("private_key", wif)]


def test_xprv_and_xpub() -> None:
    xprv = (
        "xprv9s21ZrQH143K3QTDL4LXw2F7HEK3wJUD2nW2nRk4stbPy6cq3jPPqjiChkVvvNKmPGJxWUtg6LnF5kejMRNNU3"
        "TGtRBeJgk33yuGBxrMPHi"
    )
    xpub = (
        "xpub661MyMwAqRbcFtXgS5sYJABqqG9YLmC4Q1Rdap9gSE8NqtwybGhePY2gZ29ESFjqJoCu1Rupje8YtGqsefD265"
        "TMg7usUDFdp6W1EGMcet8"
    )
    assert kinds(xprv) == [("private_key", xprv)]
    assert kinds(xpub) == []


# ---------------------------------------------------------------- hex: txid vs private key


def test_hex_txid_and_private_key_context() -> None:
    h = "49bbcc1726434a3b0e6b64ea9987d6e9171aee1861e10de84f11832ea24fd380"
    assert kinds(f"TxID: {h}") == [("txid", h)]
    assert kinds(f"hash 0x{h}") == [("txid", "0x" + h)]
    for ctx in (
        "my private key is",
        "privkey:",
        "我的私钥：",
        "私鑰",
        "密钥是",
        "мой приватный ключ:",
        "mi clave privada:",
        "minha chave privada",
        "özel anahtarım",
        "khóa riêng của tôi",
        "개인키",
        "개인 키:",
        "secret key",
    ):
        found = detect(f"{ctx} {h}")
        assert [f.kind for f in found] == ["private_key"], ctx
    # a key word far away does not turn a txid into a key
    far = "private key lost. " + "x " * 200 + f"txid {h}"
    assert [f.kind for f in detect(far)] == ["txid"]
    # longer hex (a signature) is neither
    assert kinds("a" * 128) == []
    # 40 hex without 0x is not an address (could be a git hash)
    assert kinds("5aaeb6053f3e94c9b9a09f3669435e7ef1beaed") == []


def test_kinds_filter_private_key_not_txid() -> None:
    h = "c4a179c7f76d45fef6806a17981c48be81e9250bf1c1b170c4fc35de8b69c45f"
    assert detect(f"私钥 {h}", frozenset({"txid"})) == []
    assert detect(f"私钥 {h}", frozenset({"private_key"})) == [Finding("private_key", 3, 67)]


# ---------------------------------------------------------------- seed phrases

PHRASE = "athlete mechanic twin pluck cousin physical route trend jaguar pet already around"


def test_seed_phrase_formats() -> None:
    words = PHRASE.split()
    numbered = " ".join(f"{i}. {w}" for i, w in enumerate(words, 1))
    parens = "\n".join(f"{i}) {w}" for i, w in enumerate(words, 1))
    commas = ", ".join(words)
    zh = f"这是我的助记词：{PHRASE}帮我看看"
    ko = f"이게 제 니모닉 문구 맞나요? {PHRASE.upper()}"
    fullwidth_commas = "，".join(words)
    for text in (PHRASE, numbered, parens, commas, zh, ko, fullwidth_commas):
        found = [f for f in detect(text) if f.kind == "seed_phrase"]
        assert len(found) == 1, text
        span = text[found[0].start : found[0].end].lower()
        assert span.startswith("athlete") and span.endswith("around")


def test_seed_phrase_window_picked_by_checksum() -> None:
    text = f"import my wallet: {PHRASE} please"
    (f,) = detect(text)
    assert text[f.start : f.end] == PHRASE


def test_seed_phrase_mistyped_still_found() -> None:
    words = PHRASE.split()
    words[3] = "pet"  # checksum now wrong, still 12 list words
    text = " ".join(words)
    assert not Mnemonic("english").check(text)
    assert [f.kind for f in detect(text)] == ["seed_phrase"]


@settings(max_examples=30, deadline=None)
@given(st.sampled_from([128, 160, 192, 224, 256]), st.binary(min_size=32, max_size=32))
def test_generated_phrases(strength: int, entropy: bytes) -> None:
    phrase = Mnemonic("english").to_mnemonic(entropy[: strength // 8])
    text = f"my words: {phrase}. help"
    found = detect(text)
    assert [(f.kind, text[f.start : f.end]) for f in found] == [("seed_phrase", phrase)]


def test_prose_is_not_a_phrase() -> None:
    for prose in (
        "can you check my account balance again, I want to know why the deposit is still not here",
        "please help me check account balance again when you have time today thank you",
        "hello please check where my deposit order is because the price and fee are wrong again",
        "Vadeli işlemlerde pozisyonum likide oldu ama fiyat o seviyeye hiç gelmedi",
        "I typed in my 12 words into the fake site and now my wallet is empty, what can I do",
    ):
        assert [f for f in detect(prose) if f.kind in SECRET_KINDS] == [], prose


def test_eleven_words_inside_prose_are_not_a_phrase() -> None:
    # At an edge of a message they are a piece of one (tests/rules/test_secrets.py).
    assert detect(f"I typed {' '.join(PHRASE.split()[:11])} in a browser") == []


# ---------------------------------------------------------------- e-mail, phone, overlaps


def test_email() -> None:
    assert kinds("邮箱abc.def+x@qq.com联系") == [("email", "abc.def+x@qq.com")]
    assert kinds("mail me: a_b@mail.example.co.uk.") == [("email", "a_b@mail.example.co.uk")]
    assert kinds("@ZentrexHelpDesk_official") == []


@pytest.mark.parametrize(
    "phone",
    [
        "+86 138 1234 5678",
        "+8613812345678",
        "+1 (415) 555-0100",
        "+47 22 00 14 90",
        "+7 912 345-67-89",
        "13812345678",
        "138****6621",
        "138-1234-5678",
        "010-1234-5678",
        "0532 123 45 67",
        "8 (912) 345-67-89",
        "(415) 555-0100",
        "415-555-0100",
    ],
)
def test_phone(phone: str) -> None:
    assert kinds(f"call {phone} now") == [("phone", phone)]


@pytest.mark.parametrize(
    "text",
    [
        "订单号 WD20240611093312",
        "ID вывода 5519023871",
        "IP 185.220.101.44",
        "20,000 港币 on 2024-06-11",
        "UID 51002983",
        "position ID 99120384, 20x",
        "+12.5% today",
    ],
)
def test_not_phone(text: str) -> None:
    assert [f for f in detect(text) if f.kind == "phone"] == []


def test_all_kinds_sorted_and_disjoint() -> None:
    h = "e54c2c87687142c44ee81d2cb0ff9c5d4261053fe349e7347fceb4da6dfcbd20"
    text = f"TXID {h} to 1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa, mail x@y.com, tel +44 20 7946 0958"
    found = detect(text)
    assert [f.kind for f in found] == ["txid", "btc_address", "email", "phone"]
    assert all(a.end <= b.start for a, b in itertools.pairwise(found))
    assert set(KINDS) >= {f.kind for f in found}


def test_empty_and_plain() -> None:
    assert detect("") == []
    assert detect("hello there, my withdrawal is stuck") == []


# ---------------------------------------------------------------- labelled samples


def _samples() -> list[dict[str, object]]:
    if not SAMPLES.exists():
        pytest.skip(f"{SAMPLES} not available")
    return [json.loads(line) for line in SAMPLES.read_text(encoding="utf-8").splitlines() if line]


def test_samples_secret_leaks_found_and_no_false_positives() -> None:
    missed, false_pos = [], []
    for row in _samples():
        expect = row["expect"]
        assert isinstance(expect, dict)
        leak = "secret-leak" in expect.get("tags", [])
        fields = [str(row["text"])] + ([str(row["subject"])] if row.get("subject") else [])
        secret = any(f.kind in SECRET_KINDS for field in fields for f in detect(field))
        if leak and not secret:
            missed.append(row["id"])
        if secret and not leak:
            false_pos.append(row["id"])
    assert missed == []
    assert false_pos == []


def test_samples_txids_found() -> None:
    for row in _samples():
        expect = row["expect"]
        assert isinstance(expect, dict)
        if "txid" in expect.get("tags", []):
            assert any(f.kind == "txid" for f in detect(str(row["text"]))), row["id"]


def test_table_driven_bech32_polymod_matches_the_reference() -> None:
    import random

    from rules import detectors

    def reference(values: list[int]) -> int:
        gen = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
        chk = 1
        for v in values:
            top = chk >> 25
            chk = (chk & 0x1FFFFFF) << 5 ^ v
            for i in range(5):
                chk ^= gen[i] if (top >> i) & 1 else 0
        return chk

    rng = random.Random(7)
    for _ in range(300):
        values = [rng.randrange(32) for _ in range(rng.randrange(1, 90))]
        assert detectors._bech32_polymod(values) == reference(values)
