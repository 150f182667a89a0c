"""The impostor check: a member's names against every staff name, with a verdict and its reason.

Staff are known by platform id, never by name: a member whose (platform, id) is staff is never
flagged, whatever their name. Anyone else is compared, each of their names (display name,
username) with each staff name, after folding (impostors/fold.py):

- **impostor**: the name *is* a staff name once folded and once the words impostors add
  ("support", "admin", "official", "客服", "官方", "поддержка", "destek" ..., also misspelt by
  one letter) are set aside; or it is close to one (``impostor_ratio``) and uses a trick
  (invisible or compatibility characters, mixed scripts, digits for letters, an added staff word);
- **review**: it is very close to a staff name (``review_ratio``) with no trick (a typo-squat,
  or a namesake: real names that look alike are common, so this is for a moderator to judge), or it
  holds every word of a staff name plus a staff word ("Kate Wilson Support");
- **ok** otherwise.

Nothing here punishes: the verdict feeds a review queue (warn-first).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from rapidfuzz.distance import OSA, Indel

from impostors.fold import Folded, fold

Level = Literal["impostor", "review", "ok"]
_RANK: dict[Level, int] = {"ok": 0, "review": 1, "impostor": 2}

#: Words an impostor adds to a staff name (any script; folded like names before use). A misspelling
#: by one edit of a word of five letters or more counts too ("Supprot", "Offical").
STAFF_WORDS = (
    "support", "suport", "admin", "admins", "administrator", "official", "team", "help", "helpdesk", "desk",
    "service", "services", "customer", "care", "cs", "mod", "mods", "moderator", "staff", "agent", "verified",
    "manager", "hotline", "live", "24", "7", "247", "soporte", "suporte", "ayuda", "oficial", "atencion",
    "поддержка", "поддержки", "служба", "админ", "администратор", "официальный", "модератор", "помощь",
    "destek", "yonetici", "resmi", "musteri", "hizmetleri", "cskh", "ho", "tro", "quan", "tri", "vien",
    "客服", "官方", "管理员", "管理", "支持", "技术支持", "在线客服", "人工客服", "客服中心",
    "고객센터", "관리자", "상담원", "공식", "운영자", "지원", "サポート", "公式", "管理者", "運営",
)  # fmt: skip
#: Words that are staff words only next to each other (Vietnamese "hỗ trợ", "quản trị viên").
_PAIRED = frozenset({"ho", "tro", "quan", "tri", "vien"})
#: Staff words written without a space after a name in scripts without spaces ("张伟客服").
_GLUED = tuple(w for w in STAFF_WORDS if any(ord(ch) >= 0x2E80 for ch in w))


@functools.cache
def _staff_words() -> frozenset[str]:
    return frozenset(t for w in STAFF_WORDS for form in fold(w).looks for t in form) | frozenset(
        t for w in STAFF_WORDS for t in fold(w).plain
    )


@functools.cache
def _glued() -> tuple[str, ...]:
    # In every form a name is compared in: the skeleton maps some ideographs too (方 to ⽅).
    forms = {t for w in _GLUED for f in (fold(w).plain, *fold(w).looks) for t in f}
    return tuple(sorted(forms, key=len, reverse=True))


@functools.lru_cache(maxsize=4096)
def _is_staff_word(token: str) -> bool:
    words = _staff_words()
    if token in words:
        return True
    return len(token) >= 5 and any(len(w) >= 5 and OSA.distance(token, w, score_cutoff=1) <= 1 for w in words)


def _core(tokens: tuple[str, ...]) -> tuple[tuple[str, ...], frozenset[str]]:
    """The tokens without staff words, and the staff words set aside."""
    kept: list[str] = []
    words: set[str] = set()
    for i, token in enumerate(tokens):
        staff_word = _is_staff_word(token)
        if not staff_word:
            glue = next((g for g in _glued() if token.endswith(g) or token.startswith(g)), None)
            if glue is not None:
                words.add(glue)
                token = token.removesuffix(glue) if token.endswith(glue) else token.removeprefix(glue)
                staff_word = _is_staff_word(token)
        paired_ok = token not in _PAIRED or any(0 <= j < len(tokens) and tokens[j] in _PAIRED for j in (i - 1, i + 1))
        if staff_word and paired_ok:
            words.add(token)
        else:
            kept.append(token)
    return tuple(kept), frozenset(words)


@dataclass(frozen=True, slots=True)
class Name:
    """A name folded once, with its forms ready to compare."""

    text: str
    folded: Folded
    #: (joined form, joined core, core tokens, staff words) per look of the name.
    forms: tuple[tuple[str, str, tuple[str, ...], frozenset[str]], ...]

    @classmethod
    def of(cls, text: str) -> Name:
        folded = fold(text)
        forms = []
        for look in folded.looks:
            core, words = _core(look)
            if not core:  # the name is only staff words ("Support"): compare it whole
                core = look
            forms.append(("".join(look), "".join(core), core, words))
        return cls(text, folded, tuple(forms))


@dataclass(frozen=True, slots=True)
class StaffMember:
    """One staff member on one platform: known by ``id``; ``names`` are what impostors copy."""

    platform: str
    id: str
    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Verdict:
    level: Level
    reason: str
    score: float = 0.0
    staff: StaffMember | None = None
    staff_name: str = ""
    name: str = ""

    @property
    def flagged(self) -> bool:
        return self.level != "ok"


OK = Verdict("ok", "no staff name alike")


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Similarity (0-100, rapidfuzz's normalised Indel on the folded names) for each verdict."""

    impostor_ratio: float = 85.0
    review_ratio: float = 97.0


def _respelled(staff_name: Name, name: Name) -> bool:
    """Both names carry accents or tone marks and spell them differently ("Tuấn" and "Tuân"):
    two names of a language that writes them, not a lookalike (folding marks away would merge them)."""
    s, c = staff_name.folded, name.folded
    return s.spelled != s.plain and c.spelled != c.plain and s.spelled != c.spelled and s.plain == c.plain


DEFAULT_LIMITS = Thresholds()


def compare(staff_name: Name, name: Name, limits: Thresholds = DEFAULT_LIMITS) -> Verdict:
    """The verdict for one candidate name against one staff name."""
    tricks = set(name.folded.tricks - staff_name.folded.tricks)
    if not tricks and _respelled(staff_name, name):
        score = round(
            Indel.normalized_similarity("".join(name.folded.spelled), "".join(staff_name.folded.spelled)) * 100, 1
        )
        if score >= limits.review_ratio:
            return Verdict("review", f"{score}% alike staff {staff_name.text!r}: accents differ", score)
        return OK
    best: Verdict = OK
    for s_joined, s_core, s_tokens, s_words in staff_name.forms:
        for c_joined, c_core, c_tokens, c_words in name.forms:
            added = c_words - s_words
            found = sorted(tricks | ({"staff words added"} if added else set()))
            how = f" ({', '.join(found)})" if found else ""
            if len(s_core) >= 2 and (c_core == s_core or c_joined == s_joined):
                verdict = Verdict("impostor", f"same name as staff {staff_name.text!r} once folded{how}", 100.0)
            else:
                score = max(
                    Indel.normalized_similarity(c_core, s_core), Indel.normalized_similarity(c_joined, s_joined)
                )
                score = round(score * 100, 1)
                if score >= limits.impostor_ratio and found:
                    verdict = Verdict("impostor", f"{score}% alike staff {staff_name.text!r}{how}", score)
                elif score >= limits.review_ratio:
                    verdict = Verdict("review", f"{score}% alike staff {staff_name.text!r}: typo or namesake", score)
                elif added and set(s_tokens) <= set(c_tokens) and len(s_core) >= 3:
                    verdict = Verdict("review", f"staff name {staff_name.text!r} with staff words added", score)
                else:
                    continue
            if _RANK[verdict.level] > _RANK[best.level] or (verdict.level == best.level and verdict.score > best.score):
                best = verdict
    return best


@dataclass
class Matcher:
    """Staff of every platform; ``check`` a member's names against all their names."""

    staff: Sequence[StaffMember]
    limits: Thresholds = field(default_factory=Thresholds)

    def __post_init__(self) -> None:
        self._ids = {(m.platform, m.id): m for m in self.staff}
        self._names = [(m, Name.of(n)) for m in self.staff for n in m.names if n.strip()]

    def staff_member(self, platform: str, user_id: str) -> StaffMember | None:
        """The staff member with this platform id: the one answer to "is this account staff?"."""
        return self._ids.get((platform, user_id))

    def check(self, platform: str, user_id: str, names: Iterable[str]) -> Verdict:
        """The worst verdict over the member's names against every staff name; staff are never flagged."""
        if (platform, user_id) in self._ids:
            return Verdict("ok", "staff (by id)")
        best = OK
        for text in dict.fromkeys(n for n in names if n and n.strip()):
            name = Name.of(text)
            for member, staff_name in self._names:
                verdict = compare(staff_name, name, self.limits)
                if _RANK[verdict.level] > _RANK[best.level] or (
                    verdict.level == best.level and verdict.score > best.score
                ):
                    best = Verdict(verdict.level, verdict.reason, verdict.score, member, staff_name.text, text)
        return best
