"""Built-in detectors: transaction hashes, crypto addresses, leaked secrets, e-mail, phone.

All detectors are pure functions and report offsets in the text passed in. Addresses, keys,
txids and seed phrases are looked for in its *skeleton* (rules.secrets: zero-width and format
characters removed, full-width and look-alike letters folded to ASCII), so a disguise does not hide
them; e-mail and phone run on the text as it is. Addresses and keys are validated (base58check,
bech32/bech32m, EIP-55), so random-looking strings do not count.

Decisions, with the reasons:

* Only Bitcoin *mainnet* addresses (``1…``/``3…``/``bc1…``) and keys are reported; testnet
  (``tb1``, ``m``/``n``/``2``) is not a support case. Testnet WIF/``tprv`` keys are still reported as
  private keys: a secret is a secret.
* ETH: ``0x`` + 40 hex. All-lower or all-upper hex is accepted unchecked (no checksum encoded);
  mixed case must pass EIP-55, because mixed case *is* the checksum.
* 64 hex (with or without ``0x``, whole or split into chunks): ``txid`` or ``private_key`` by the
  policy in rules.secrets (a tx label keeps a txid; key words, splitting, or no context at all
  make it a key).
* Seed phrase: >= 12 consecutive BIP-39 English words with anything but letters between them;
  every 12-word window is checked, so every phrase in a run is found (rules.secrets). On the 220
  labelled samples: 11/11 secret-leak messages found and 0 false positives (see tests).
* Phone: international ``+CC …`` (8-15 digits), Chinese mobiles ``1[3-9]x xxxx xxxx`` including
  masked ``138****6621`` (a masked number is still a phone number for routing, and redacting it
  again is harmless), trunk-prefixed local numbers with separators (``010-1234-5678``,
  ``0532 123 45 67``), Russian ``8 (912) 345-67-89`` and North-American ``(555) 123-4567``.
  Bare digit runs other than Chinese mobiles are *not* phones: they are usually order/UID numbers.

Cost (2-core box shared with other jobs, the tree before issue 13 measured in the same run, best
of 3 interleaved runs): on the 220 labelled samples 19.4 vs 11.8 µs per message for all kinds,
15.6 vs 8.5 µs for the two secret kinds alone (always run by the engine); on the
``switchboard bench rules`` corpus 14.5 vs 6.3 µs. The difference is the skeleton (a translate for
text with look-alikes or accents, ~2-3 µs) and scans that no longer stop at the first unusual
separator; a whole engine evaluation costs 1.15-1.30x what it did (82 vs 70 µs a message with the
default rules). Plain chat text stays cheap: every scan has a pre-check (12 words of 3+ letters, an
alphanumeric run of 64, 16 digits).

Issue 15: the pre-checks and the run scans work on ``Skeleton.lower_bytes`` (the skeleton as ASCII
bytes, one byte a character) with bytes translate/count/find, one C loop each where a regex tried
a match at every letter; the findings are the same (compared on the bench corpus, the training
corpus, the samples and the tests' texts). ``detect`` with the engine's eager kinds: 20.6 vs
16.1 µs a bench message, 19.5 vs 14.7 a training-corpus message (best of 3 alternating runs).
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterable, Iterator

import msgspec

from rules import secrets

__all__ = [
    "KINDS",
    "SECRET_KINDS",
    "Finding",
    "b58check_decode",
    "b58check_encode",
    "bech32_decode",
    "bech32_encode",
    "detect",
    "eip55_checksum",
    "keccak256",
]

KINDS: tuple[str, ...] = (
    "txid",
    "btc_address",
    "eth_address",
    "tron_address",
    "seed_phrase",
    "private_key",
    "email",
    "phone",
)
SECRET_KINDS: frozenset[str] = frozenset({"seed_phrase", "private_key"})


class Finding(msgspec.Struct, frozen=True, gc=False):
    """One detected value: its kind and its ``[start, end)`` span in the text passed in."""

    kind: str
    start: int
    end: int


# --------------------------------------------------------------------------- base58check

# Checksum results per candidate string (pure functions of it): the same deposit and withdrawal
# addresses come back again and again in real traffic. Bounded, so hostile input cannot grow it.
_CHECK_CACHE = 4096

_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58_ALPHABET)}


def _dsha256(data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def b58check_decode(s: str) -> bytes | None:
    """Decode a base58check string; the payload (version byte included) or None if invalid."""
    n = 0
    for c in s:
        i = _B58_INDEX.get(c)
        if i is None:
            return None
        n = n * 58 + i
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    raw = b"\0" * (len(s) - len(s.lstrip("1"))) + raw
    if len(raw) < 5:
        return None
    payload, check = raw[:-4], raw[-4:]
    return payload if _dsha256(payload)[:4] == check else None


def b58check_encode(payload: bytes) -> str:
    """Encode bytes (version byte included) as base58check."""
    raw = payload + _dsha256(payload)[:4]
    n = int.from_bytes(raw, "big")
    out = []
    while n:
        n, r = divmod(n, 58)
        out.append(_B58_ALPHABET[r])
    return "1" * (len(raw) - len(raw.lstrip(b"\0"))) + "".join(reversed(out))


# --------------------------------------------------------------------------- bech32 (BIP-173/350)


def _reduce_xor(values: Iterator[int]) -> int:
    out = 0
    for v in values:
        out ^= v
    return out


_BECH32_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_BECH32_INDEX = {c: i for i, c in enumerate(_BECH32_CHARSET)}
_BECH32_CONST = 1
_BECH32M_CONST = 0x2BC830A3


_BECH32_GEN = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
# The generator terms for each value of the 5 top bits, XORed together once (table-driven: ~6x
# faster than testing the 5 bits per character, same result).
_BECH32_TABLE = tuple(_reduce_xor(_BECH32_GEN[i] for i in range(5) if (top >> i) & 1) for top in range(32))


def _bech32_polymod(values: list[int]) -> int:
    table = _BECH32_TABLE
    chk = 1
    for v in values:
        chk = ((chk & 0x1FFFFFF) << 5 ^ v) ^ table[chk >> 25]
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(x) >> 5 for x in hrp] + [0] + [ord(x) & 31 for x in hrp]


def bech32_decode(s: str) -> tuple[str, list[int], int] | None:
    """Decode bech32/bech32m: ``(hrp, 5-bit data without checksum, constant)`` or None.

    The constant tells which variant verified: 1 for bech32, 0x2BC830A3 for bech32m.
    """
    if s.lower() != s and s.upper() != s:
        return None
    # Every character in 33..126: printable ASCII other than the space.
    if not (s.isascii() and s.isprintable()) or " " in s or len(s) > 90:
        return None
    s = s.lower()
    pos = s.rfind("1")
    if pos < 1 or pos + 7 > len(s):
        return None
    hrp = s[:pos]
    try:
        data = [_BECH32_INDEX[c] for c in s[pos + 1 :]]
    except KeyError:
        return None
    const = _bech32_polymod(_hrp_expand(hrp) + data)
    if const not in (_BECH32_CONST, _BECH32M_CONST):
        return None
    return hrp, data[:-6], const


def bech32_encode(hrp: str, data: list[int], const: int = _BECH32_CONST) -> str:
    """Encode 5-bit ``data`` under ``hrp`` with the bech32 (1) or bech32m constant."""
    values = _hrp_expand(hrp) + data
    polymod = _bech32_polymod([*values, 0, 0, 0, 0, 0, 0]) ^ const
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(_BECH32_CHARSET[d] for d in data + checksum)


def _convertbits(data: list[int], frombits: int, tobits: int, pad: bool) -> list[int] | None:
    acc = bits = 0
    out: list[int] = []
    maxv = (1 << tobits) - 1
    for value in data:
        if value < 0 or value >> frombits:
            return None
        acc = (acc << frombits) | value
        bits += frombits
        while bits >= tobits:
            bits -= tobits
            out.append((acc >> bits) & maxv)
    if pad:
        if bits:
            out.append((acc << (tobits - bits)) & maxv)
    elif bits >= frombits or ((acc << (tobits - bits)) & maxv):
        return None
    return out


@functools.lru_cache(maxsize=_CHECK_CACHE)
def _valid_segwit(addr: str, hrp: str = "bc") -> bool:
    dec = bech32_decode(addr)
    if dec is None or dec[0] != hrp or not dec[1]:
        return False
    _, data, const = dec
    version = data[0]
    prog = _convertbits(data[1:], 5, 8, False)
    if prog is None or version > 16 or not 2 <= len(prog) <= 40:
        return False
    if version == 0:
        return const == _BECH32_CONST and len(prog) in (20, 32)
    return const == _BECH32M_CONST


# --------------------------------------------------------------------------- keccak / EIP-55


def _rol64(a: int, n: int) -> int:
    n %= 64
    return ((a >> (64 - n)) | (a << n)) & 0xFFFFFFFFFFFFFFFF


def _keccak_f1600(lanes: list[list[int]]) -> list[list[int]]:
    # The compact reference permutation from the Keccak team's Python implementation.
    r = 1
    for _ in range(24):
        c = [lanes[x][0] ^ lanes[x][1] ^ lanes[x][2] ^ lanes[x][3] ^ lanes[x][4] for x in range(5)]
        d = [c[(x + 4) % 5] ^ _rol64(c[(x + 1) % 5], 1) for x in range(5)]
        lanes = [[lanes[x][y] ^ d[x] for y in range(5)] for x in range(5)]
        x, y = 1, 0
        current = lanes[x][y]
        for t in range(24):
            x, y = y, (2 * x + 3 * y) % 5
            current, lanes[x][y] = lanes[x][y], _rol64(current, (t + 1) * (t + 2) // 2)
        for y in range(5):
            row = [lanes[x][y] for x in range(5)]
            for x in range(5):
                lanes[x][y] = row[x] ^ ((~row[(x + 1) % 5]) & row[(x + 2) % 5])
        for j in range(7):
            r = ((r << 1) ^ ((r >> 7) * 0x71)) % 256
            if r & 2:
                lanes[0][0] ^= 1 << ((1 << j) - 1)
    return lanes


def keccak256(data: bytes) -> bytes:
    """Keccak-256 as Ethereum uses it (not NIST SHA3-256, whose padding differs)."""
    rate = 136
    padded = bytearray(data)
    padded.append(0x01)
    padded.extend(b"\0" * (-len(padded) % rate))
    padded[-1] |= 0x80
    lanes = [[0] * 5 for _ in range(5)]
    for off in range(0, len(padded), rate):
        block = padded[off : off + rate]
        for i in range(rate // 8):
            lanes[i % 5][i // 5] ^= int.from_bytes(block[8 * i : 8 * i + 8], "little")
        lanes = _keccak_f1600(lanes)
    return b"".join(lanes[i % 5][i // 5].to_bytes(8, "little") for i in range(4))


def eip55_checksum(address: str) -> str:
    """Return the EIP-55 mixed-case form of a ``0x`` + 40 hex address."""
    hex40 = address[2:].lower()
    digest = keccak256(hex40.encode("ascii")).hex()
    return "0x" + "".join(c.upper() if int(h, 16) >= 8 else c for c, h in zip(hex40, digest, strict=False))


@functools.lru_cache(maxsize=_CHECK_CACHE)
def _valid_eth(address: str) -> bool:
    body = address[2:]
    if body.islower() or body.isupper() or body.isdigit():
        return True
    return eip55_checksum(address) == "0x" + body


# --------------------------------------------------------------------------- patterns

# One scan finds every maximal run of >= 14 ASCII letters/digits (the shortest segwit address);
# hex, base58 and bech32 values are then told apart per run. One cheap scan beats three specific
# ones (1.8 vs 4.5 µs a message); a bytes search beats the regex ``[0-9A-Za-z]{14,}`` that did it,
# which tried a match at every letter (see _blobs).
_HEX_CHARS = frozenset("0123456789abcdefABCDEF")
_EMAIL_RE = re.compile(
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}"
    r"(?![A-Za-z0-9-])"
)
_PHONE_RE = re.compile(
    r"""
    (?<![0-9A-Za-z+*])
    (?:
        \+\d{1,3}[ .\-]?(?:\(\d{1,4}\)[ .\-]?)?\d{1,4}(?:[ .\-]?\d{1,4}){1,5}
      | 1[3-9]\d[ \-]?[\d*]{4}[ \-]?\d{4}
      | \(?0\d{1,4}\)?[ \-]\d{2,4}(?:[ \-]\d{2,4}){1,3}
      | 8[ \-]?\(\d{3}\)[ \-]?\d{3}[ \-]?\d{2}[ \-]?\d{2}
      | \(\d{3}\)[ \-]?\d{3}[ \-]\d{4}
      | \d{3}-\d{3}-\d{4}
    )
    (?![0-9A-Za-z*])
    """,
    re.VERBOSE,
)
_DIGIT_RE = re.compile(r"[\d*]")
# Every phone shape above is made of these characters; the exact pattern only runs where this
# cheap one matched (1.5 vs 2.6 µs a message).
_PHONE_HINT_RE = re.compile(r"[+(\d][\d ()*.\-]{7,}\d")

# Base58check version prefixes of extended private keys (BIP-32 xprv/tprv, BIP-49/84 y/z/Y/Zprv,
# their testnet u/v/U/Vprv).
_XPRV_VERSIONS = frozenset(
    bytes.fromhex(h)
    for h in (
        "0488ade4",
        "04358394",
        "049d7878",
        "044a4e28",
        "04b2430c",
        "045f18bc",
        "0295b005",
        "024285b5",
        "02aa7a99",
        "02575048",
    )
)

_SECRETS_PRIORITY = 3


# --------------------------------------------------------------------------- detection

_PRIORITY = {
    "seed_phrase": _SECRETS_PRIORITY,
    "private_key": _SECRETS_PRIORITY,
    "txid": 2,
    "btc_address": 2,
    "eth_address": 2,
    "tron_address": 2,
    "email": 1,
    "phone": 0,
}
_HEX64_KINDS = frozenset({"txid", "private_key"})
_B58_KINDS = frozenset({"btc_address", "tron_address", "private_key"})
_BLOB_KINDS = _B58_KINDS | {"eth_address"}
_SKELETON_KINDS = _BLOB_KINDS | _HEX64_KINDS | {"seed_phrase"}
_ALL_KINDS = frozenset(KINDS)
# The runs of 14+ ASCII letters or digits are looked for in the skeleton's ``lower_bytes`` with
# those as "a" and the rest as " " (secrets.long_runs): 0.4 µs a message without one, where the
# regex cost 2.0 with or without.
_ALNUM_BYTES = bytes(ord("a") if chr(b).isascii() and chr(b).isalnum() else ord(" ") for b in range(256))
_BLOB_MIN = b"a" * 14


def _blobs(sk: secrets.Skeleton, want: frozenset[str], out: list[Finding]) -> int:
    """Addresses and base58 keys found in ``sk.text``; returns the longest alphanumeric run."""
    text = sk.text
    b58_kinds = bool(want & _B58_KINDS)
    longest = 0
    for start, end in secrets.long_runs(sk.lower_bytes.translate(_ALNUM_BYTES), _BLOB_MIN):
        s = text[start:end]
        longest = max(longest, end - start)
        prefixed = s[:2] in ("0x", "0X")
        body = s[2:] if prefixed else s
        if len(body) in (40, 64) and _HEX_CHARS.issuperset(body):
            # 64 hex (a txid or a private key) is rules.secrets' business.
            if len(body) == 40 and prefixed and "eth_address" in want and _valid_eth(s):
                out.append(Finding("eth_address", start, end))
        elif s[:3] in ("bc1", "BC1"):
            if "btc_address" in want and _valid_segwit(s):
                out.append(Finding("btc_address", start, end))
        elif b58_kinds and 25 <= len(s) <= 112:
            kind = _base58_kind(s)
            if kind is not None:
                out.append(Finding(kind, start, end))
    return longest


# Not cached, unlike the address checks: this one also recognises private keys (WIF, xprv), and
# a cache would keep pasted secrets alive in the process.
def _base58_kind(s: str) -> str | None:
    payload = b58check_decode(s)
    if payload is None:
        return None
    version, n = payload[0], len(payload)
    if n == 21 and version in (0x00, 0x05) and s[0] in "13":
        return "btc_address"
    if n == 21 and version == 0x41 and s[0] == "T" and len(s) == 34:
        return "tron_address"
    if version in (0x80, 0xEF) and (n == 33 or (n == 34 and payload[-1] == 0x01)):
        return "private_key"  # WIF, uncompressed (5…/9…) or compressed (K…/L…/c…)
    if n == 78 and payload[:4] in _XPRV_VERSIONS:
        return "private_key"
    return None


def _phones(text: str, out: list[Finding]) -> None:
    for hint in _PHONE_HINT_RE.finditer(text):
        # pos/endpos keep the look-behind able to see the character before the hint.
        for m in _PHONE_RE.finditer(text, hint.start(), min(len(text), hint.end() + 1)):
            _phone(m.group(), m.start(), m.end(), out)


def _phone(s: str, start: int, end: int, out: list[Finding]) -> None:
    digits = len(_DIGIT_RE.findall(s))
    if (8 <= digits <= 15) if s.startswith("+") else (9 <= digits <= 12):
        out.append(Finding("phone", start, end))


def _resolve(found: list[Finding]) -> list[Finding]:
    found.sort(key=lambda f: (f.start, -f.end))
    kept: list[Finding] = []
    for f in found:
        if kept and f.start < kept[-1].end:
            prev = kept[-1]
            if (_PRIORITY[f.kind], f.end - f.start) > (_PRIORITY[prev.kind], prev.end - prev.start):
                kept[-1] = f
            continue
        kept.append(f)
    return kept


_MARKER_RE = re.compile(r"\[redacted:(seed_phrase|private_key)\]")


def detect(text: str, kinds: frozenset[str] | None = None) -> list[Finding]:
    """Find values of the given kinds (all when None) in ``text``.

    Addresses, keys, txids and seed phrases are looked for in the skeleton of ``text`` (see
    rules.secrets: zero-width characters removed, full-width and look-alike letters folded), and
    reported at their span in ``text`` itself, disguise included. Findings are sorted by start and
    do not overlap: of two overlapping findings the secret wins, then the longer. A 64-hex value
    is either a ``private_key`` or a ``txid``, never both. Unknown kind names are ignored.
    """
    want = _ALL_KINDS if kinds is None else kinds
    found: list[Finding] = []
    if not want.isdisjoint(_SKELETON_KINDS):
        sk = secrets.skeleton(text)
        in_skeleton: list[Finding] = []
        longest = _blobs(sk, want, in_skeleton)
        if "seed_phrase" in want:
            in_skeleton.extend(Finding("seed_phrase", a, b) for a, b in secrets.seed_phrases(sk))
        for f in in_skeleton:
            start, end = sk.span(f.start, f.end)
            found.append(Finding(f.kind, start, end))
        if not want.isdisjoint(_HEX64_KINDS):
            found.extend(Finding(kind, a, b) for kind, a, b in secrets.hex_keys(sk, whole=longest >= 64))
    if "[redacted:" in text:
        # Masked before it was stored (router/inbox.py redacts on append): still a leaked secret
        # for the rules (tags, priority, group), masked again as itself.
        found.extend(Finding(m.group(1), m.start(), m.end()) for m in _MARKER_RE.finditer(text) if m.group(1) in want)
    if "email" in want and "@" in text:
        found.extend(Finding("email", m.start(), m.end()) for m in _EMAIL_RE.finditer(text))
    if "phone" in want:
        _phones(text, found)
    if not found:
        return found
    return [f for f in _resolve(found) if f.kind in want]


_ADDRESS_KINDS = ("btc_address", "eth_address", "tron_address")


def expand_kinds(kinds: Iterable[str]) -> frozenset[str]:
    """Replace the ``address`` shorthand by the concrete address kinds the detectors report."""
    out: set[str] = set()
    for kind in kinds:
        if kind == "address" and "address" not in KINDS:
            out.update(_ADDRESS_KINDS)
        else:
            out.add(kind)
    return frozenset(out)
