"""Text helpers shared by the channel adapters."""

from __future__ import annotations


def utf16_len(text: str) -> int:
    """Length as Telegram and Discord count it (UTF-16 code units: an emoji outside the BMP is 2)."""
    return len(text.encode("utf-16-le")) // 2


def _fit(text: str, limit: int) -> int:
    """How many code points of ``text`` fit in ``limit`` UTF-16 units."""
    units = 0
    for i, ch in enumerate(text):
        units += 2 if ord(ch) > 0xFFFF else 1
        if units > limit:
            return i
    return len(text)


def split_text(text: str, limit: int) -> list[str]:
    """Split ``text`` into parts of at most ``limit`` UTF-16 units, for platforms with a length cap.

    Cuts at the last paragraph break, else line break, else space of each window, provided that
    keeps at least half a window (no stub parts); a word longer than a window is cut hard. The
    separator at a cut is dropped; whitespace-only parts are dropped (platforms refuse them).
    """
    parts: list[str] = []
    rest = text
    while utf16_len(rest) > limit:
        cut = max(1, _fit(rest, limit))
        window = rest[:cut]
        head, tail = window, rest[cut:]
        for sep in ("\n\n", "\n", " "):
            at = window.rfind(sep)
            if at >= cut // 2:
                head, tail = window[:at], rest[at + len(sep) :]
                break
        parts.append(head.rstrip())
        rest = tail.lstrip("\n")
    parts.append(rest)
    return [p for p in parts if p.strip()]
