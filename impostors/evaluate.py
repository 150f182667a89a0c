"""Scoring the matcher on the labelled name pairs (impostors/pairs/*.jsonl).

Each line is ``{"staff": ..., "candidate": ..., "label": "impostor" | "innocent", "trick": ...}``;
a pair is scored by comparing the candidate with its staff name alone. A pair counts as *caught*
(an impostor) or as a *false alarm* (an innocent) when the verdict is ``impostor`` or ``review``:
both put the member in front of a moderator. ``tune.jsonl`` is what the thresholds were chosen on;
``test.jsonl`` was written first and is only ever scored.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from impostors.match import DEFAULT_LIMITS, Name, Thresholds, Verdict, compare

PAIRS = Path(__file__).with_name("pairs")
PARTS = ("tune", "test")


@dataclass(frozen=True, slots=True)
class Pair:
    staff: str
    candidate: str
    label: str
    trick: str


@dataclass(frozen=True, slots=True)
class Score:
    part: str
    impostors: int
    innocents: int
    caught: int
    caught_as_impostor: int
    false_alarms: int
    false_impostors: int
    misses: tuple[tuple[Pair, Verdict], ...]
    alarms: tuple[tuple[Pair, Verdict], ...]

    @property
    def catch_rate(self) -> float:
        return self.caught / self.impostors if self.impostors else 0.0

    @property
    def false_alarm_rate(self) -> float:
        return self.false_alarms / self.innocents if self.innocents else 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "part": self.part,
            "impostors": self.impostors,
            "innocents": self.innocents,
            "caught": self.caught,
            "caught_as_impostor": self.caught_as_impostor,
            "catch_rate": round(self.catch_rate, 4),
            "false_alarms": self.false_alarms,
            "false_alarms_as_impostor": self.false_impostors,
            "false_alarm_rate": round(self.false_alarm_rate, 4),
            "misses": [_row(p, v) for p, v in self.misses],
            "alarms": [_row(p, v) for p, v in self.alarms],
        }


def _row(pair: Pair, verdict: Verdict) -> dict[str, str]:
    return {"staff": pair.staff, "candidate": pair.candidate, "verdict": verdict.level, "reason": verdict.reason}


def load(part: str) -> list[Pair]:
    """The pairs of one part; ValueError naming the line of a bad one."""
    path = PAIRS / f"{part}.jsonl"
    pairs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            pair = Pair(raw["staff"], raw["candidate"], raw["label"], raw.get("trick", ""))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{number}: not a name pair ({exc})") from None
        if pair.label not in ("impostor", "innocent"):
            raise ValueError(f"{path}:{number}: label {pair.label!r} is neither impostor nor innocent")
        pairs.append(pair)
    return pairs


def score(part: str, pairs: Iterable[Pair], limits: Thresholds = DEFAULT_LIMITS) -> Score:
    counts = {"impostors": 0, "innocents": 0, "caught": 0, "as_impostor": 0, "alarms": 0, "false_impostors": 0}
    misses: list[tuple[Pair, Verdict]] = []
    alarms: list[tuple[Pair, Verdict]] = []
    for pair in pairs:
        verdict = compare(Name.of(pair.staff), Name.of(pair.candidate), limits)
        if pair.label == "impostor":
            counts["impostors"] += 1
            counts["caught"] += verdict.flagged
            counts["as_impostor"] += verdict.level == "impostor"
            if not verdict.flagged:
                misses.append((pair, verdict))
        else:
            counts["innocents"] += 1
            counts["alarms"] += verdict.flagged
            counts["false_impostors"] += verdict.level == "impostor"
            if verdict.flagged:
                alarms.append((pair, verdict))
    return Score(
        part,
        counts["impostors"],
        counts["innocents"],
        counts["caught"],
        counts["as_impostor"],
        counts["alarms"],
        counts["false_impostors"],
        tuple(misses),
        tuple(alarms),
    )


def table(scores: Iterable[Score]) -> str:
    """The figures as a Markdown table (docs/impostors.md shows the same)."""
    lines = [
        "| part | impostors | caught (as impostor) | catch rate "
        "| innocents | false alarms (as impostor) | false-alarm rate |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in scores:
        lines.append(
            f"| {s.part} | {s.impostors} | {s.caught} ({s.caught_as_impostor}) | {s.catch_rate:.1%} "
            f"| {s.innocents} | {s.false_alarms} ({s.false_impostors}) | {s.false_alarm_rate:.1%} |"
        )
    return "\n".join(lines)
