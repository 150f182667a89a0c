"""Labelled sample messages: their JSON-lines format, and how well a rule set routes them.

A sample is a message in the format ``switchboard route`` reads, plus what a person expects
(``expect: {group, priority, tags}``). ``read_samples`` evaluates each one; ``summarize`` scores
the whole (accuracy, P1 recall, per-group precision and recall, the confusion table, and whether
every pasted secret was masked); ``print_summary`` prints that table. Used by ``switchboard rules
eval`` (router/rules_cli.py) and by the triage evaluation (triage/evaluate.py).
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from rules import SECRET_KINDS, Decision, Engine, MessageIn

__all__ = [
    "LISTINGS",
    "InputError",
    "Report",
    "Sample",
    "figures_only",
    "message_from_json",
    "print_summary",
    "read_samples",
    "summarize",
]


class InputError(ValueError):
    """A JSON line that is not a usable message."""


def message_from_json(obj: Any) -> MessageIn:
    """Build a ``MessageIn`` from a JSON object in the samples' format (extra fields ignored).

    Fields: ``channel`` and ``text`` (required), ``subject``, ``account``, ``sender`` (attributes;
    values are taken as text), ``conversation`` (``new`` | ``follow_up``), ``received_at``
    (ISO 8601), ``language`` (a hint; the samples' ``lang`` is the *expected* answer and is
    deliberately not read).
    """
    if not isinstance(obj, dict):
        raise InputError("expected a JSON object")
    channel, text = obj.get("channel"), obj.get("text")
    if not isinstance(channel, str) or not channel:
        raise InputError("'channel' must be a non-empty string")
    if not isinstance(text, str):
        raise InputError("'text' must be a string")
    subject = obj.get("subject")
    if subject is not None and not isinstance(subject, str):
        raise InputError("'subject' must be a string")
    account = obj.get("account", "")
    if not isinstance(account, str):
        raise InputError("'account' must be a string")
    sender = obj.get("sender") or {}
    if not isinstance(sender, dict):
        raise InputError("'sender' must be an object of attributes")
    conversation = obj.get("conversation", "new")
    if conversation not in ("new", "follow_up"):
        raise InputError("'conversation' must be 'new' or 'follow_up'")
    language = obj.get("language")
    if language is not None and not isinstance(language, str):
        raise InputError("'language' must be a string")
    received_at = None
    if obj.get("received_at") is not None:
        try:
            received_at = datetime.fromisoformat(str(obj["received_at"]))
        except ValueError:
            raise InputError("'received_at' must be an ISO 8601 time") from None
    return MessageIn(
        channel=channel,
        text=text,
        subject=subject,
        account=account,
        sender={str(k): _text(v) for k, v in sender.items()},
        language=language,
        new_conversation=conversation == "new",
        received_at=received_at,
    )


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass
class Sample:
    id: str
    expected_groups: tuple[str, ...]
    expected_priority: str | None
    expected_tags: tuple[str, ...]
    note: str
    message: MessageIn
    decision: Decision

    @property
    def group_ok(self) -> bool:
        return self.decision.group in self.expected_groups

    @property
    def expected_label(self) -> str:
        # A sample that accepts several groups counts as the one chosen when it is acceptable.
        return self.decision.group if self.group_ok else self.expected_groups[0]

    @property
    def priority_ok(self) -> bool:
        return self.expected_priority is None or self.expected_priority == self._got_priority

    @property
    def _got_priority(self) -> str:
        return f"P{self.decision.priority}"

    @property
    def tags_ok(self) -> bool:
        return set(self.expected_tags) <= set(self.decision.tags)


@dataclass
class Report:
    samples: list[Sample] = field(default_factory=list)
    bad_lines: list[str] = field(default_factory=list)


def read_samples(engine: Engine, path: str) -> Report:
    """Evaluate the labelled samples of ``path``: a JSONL file, or a directory whose ``*.jsonl``
    files are read in name order as one set (``triage/corpus/dev2``). An empty directory is an
    OSError, as a missing file is."""
    report = Report()
    files = _sample_files(Path(path))
    for file in files:
        where = f"{file.name} " if len(files) > 1 else ""
        _read_sample_file(engine, file, where, report)
    return report


def _sample_files(path: Path) -> list[Path]:
    if not path.is_dir():
        return [path]
    files = sorted(path.glob("*.jsonl"))
    if not files:
        raise FileNotFoundError(f"no *.jsonl file in the directory {path}")
    return files


def _read_sample_file(engine: Engine, path: Path, where: str, report: Report) -> None:
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                msg = message_from_json(obj)
                expect = obj.get("expect") or {}
                groups = expect.get("group")
                if isinstance(groups, str):
                    groups = [groups]
                if not isinstance(groups, list) or not groups:
                    raise InputError("'expect.group' must be a group or a list of groups")
            except (ValueError, InputError) as exc:
                reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
                report.bad_lines.append(f"{where}line {lineno}: {reason}")
                continue
            report.samples.append(
                Sample(
                    id=str(obj.get("id", f"line-{lineno}")),
                    expected_groups=tuple(str(g) for g in groups),
                    expected_priority=expect.get("priority"),
                    expected_tags=tuple(expect.get("tags") or ()),
                    note=str(obj.get("note", "")),
                    message=msg,
                    decision=engine.evaluate(msg),
                )
            )


_HEX64 = re.compile(r"(?<![0-9a-fA-F])(?:0x)?[0-9a-fA-F]{64}(?![0-9a-fA-F])")
_B58_KEY = re.compile(r"(?<![1-9A-HJ-NP-Za-km-z])(?:[5KL][1-9A-HJ-NP-Za-km-z]{50,51}|xprv\w{100,})")
_WORDS = re.compile(r"[A-Za-z]+")


def _bip39() -> frozenset[str]:
    from mnemonic import Mnemonic

    return frozenset(Mnemonic("english").wordlist)


def _secrets_in(text: str, wordlist: frozenset[str]) -> Iterator[str]:
    """Secrets found by an independent, deliberately simple check (not the engine's detectors):
    runs of 12+ BIP-39 words (shown as 4-word windows), 64-hex strings and base58 keys."""
    yield from (m.group(0) for m in _HEX64.finditer(text))
    yield from (m.group(0) for m in _B58_KEY.finditer(text))
    run: list[str] = []
    for word in [*(w.group(0).lower() for w in _WORDS.finditer(text)), ""]:
        if word in wordlist:
            run.append(word)
            continue
        if len(run) >= 12:
            yield from (" ".join(run[i : i + 4]) for i in range(len(run) - 3))
        run = []


def _secret_check(samples: list[Sample]) -> dict[str, Any]:
    wordlist = _bip39()
    expected = [s for s in samples if "secret-leak" in s.expected_tags]
    failures: list[dict[str, str]] = []
    for s in expected:
        masked = [r for r in s.decision.redactions if r.kind in SECRET_KINDS]
        flat = " ".join(_WORDS.findall(s.decision.text.lower()))
        leaked = [
            secret
            for secret in _secrets_in(s.message.text, wordlist)
            if secret in s.decision.text or (" " in secret and secret in flat)
        ]
        if not masked:
            failures.append({"id": s.id, "reason": "no secret redaction"})
        elif leaked:
            failures.append({"id": s.id, "reason": f"{len(leaked)} secret fragment(s) remain"})
    false_positives = [
        s.id
        for s in samples
        if "secret-leak" not in s.expected_tags and any(r.kind in SECRET_KINDS for r in s.decision.redactions)
    ]
    return {
        "expected": len(expected),
        "redacted": len(expected) - len(failures),
        "failures": failures,
        "false_positives": false_positives,
        "ok": not failures,
    }


def _ratio(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


def summarize(engine: Engine, report: Report) -> dict[str, Any]:
    samples = report.samples
    n = len(samples)
    groups = sorted(set(engine.groups) | {s.expected_label for s in samples} | {s.decision.group for s in samples})
    confusion: dict[str, Counter[str]] = defaultdict(Counter)
    for s in samples:
        confusion[s.expected_label][s.decision.group] += 1
    per_group = {}
    for g in groups:
        tp = confusion[g][g]
        predicted = sum(confusion[e][g] for e in confusion)
        support = sum(confusion[g].values())
        per_group[g] = {
            "precision": _ratio(tp, predicted),
            "recall": _ratio(tp, support),
            "support": support,
        }
    p1 = [s for s in samples if s.expected_priority == "P1"]
    p4 = [s for s in samples if s.expected_priority == "P4"]
    priorities: dict[str, Counter[str]] = defaultdict(Counter)
    for s in samples:
        if s.expected_priority is not None:  # a sample may expect a group alone
            priorities[s.expected_priority][f"P{s.decision.priority}"] += 1

    def line(s: Sample) -> dict[str, Any]:
        return {
            "id": s.id,
            "expected": "|".join(s.expected_groups),
            "got": s.decision.group,
            "expected_priority": s.expected_priority,
            "got_priority": f"P{s.decision.priority}",
            "expected_tags": list(s.expected_tags),
            "got_tags": list(s.decision.tags),
            "note": s.note,
            # The redacted text: a listing must not print a pasted secret either.
            "text": s.decision.text.replace("\n", " ")[:80],
        }

    return {
        "rules_version": engine.version,
        "samples": n,
        "bad_lines": report.bad_lines,
        "group_accuracy": _ratio(sum(s.group_ok for s in samples), n),
        "priority_accuracy": _ratio(sum(s.priority_ok for s in samples), n),
        "p1_recall": _ratio(sum(f"P{s.decision.priority}" == "P1" for s in p1), len(p1)),
        "p1_support": len(p1),
        # Issue 15's bound: how many P4 messages (questions) were raised to P1 (the security lane).
        "p4_to_p1": _ratio(sum(s.decision.priority == 1 for s in p4), len(p4)),
        "p4_support": len(p4),
        "tag_accuracy": _ratio(sum(s.tags_ok for s in samples), n),
        "secrets": _secret_check(samples),
        "per_group": per_group,
        "confusion": {e: dict(sorted(c.items())) for e, c in sorted(confusion.items())},
        "priority_confusion": {e: dict(sorted(c.items())) for e, c in sorted(priorities.items())},
        "misrouted": [line(s) for s in samples if not s.group_ok],
        "priority_misses": [line(s) for s in samples if s.group_ok and not s.priority_ok],
        "tag_misses": [line(s) for s in samples if s.group_ok and s.priority_ok and not s.tags_ok],
    }


def _pct(value: float | None) -> str:
    return "   n/a" if value is None else f"{value * 100:5.1f}%"


#: The summary's lists of the samples it got wrong, each with its text: ``figures_only`` leaves
#: them out, for a test set that whoever tunes the rules or the model must not read (issue 15).
LISTINGS = ("misrouted", "priority_misses", "tag_misses")


def figures_only(summary: dict[str, Any]) -> dict[str, Any]:
    """``summary`` without the listings of samples (``LISTINGS``): the figures alone."""
    return {k: v for k, v in summary.items() if k not in LISTINGS}


def print_summary(summary: dict[str, Any], samples: list[Sample], out: TextIO) -> None:
    """The table of ``summarize``'s figures, then the samples it got wrong (where ``summary``
    still has its ``LISTINGS``)."""
    n = summary["samples"]

    def count(attr: str) -> int:
        return sum(bool(getattr(s, attr)) for s in samples)

    p1 = summary["p1_support"]
    p1_ok = round((summary["p1_recall"] or 0) * p1)
    sec = summary["secrets"]
    print(f"samples: {n}   rules version: {summary['rules_version']}", file=out)
    print(f"group accuracy:    {_pct(summary['group_accuracy'])} ({count('group_ok')}/{n})", file=out)
    print(
        f"priority accuracy: {_pct(summary['priority_accuracy'])} ({count('priority_ok')}/{n})",
        file=out,
    )
    print(f"P1 recall:         {_pct(summary['p1_recall'])} ({p1_ok}/{p1})", file=out)
    p4 = summary["p4_support"]
    print(f"P4 raised to P1:   {_pct(summary['p4_to_p1'])} ({round((summary['p4_to_p1'] or 0) * p4)}/{p4})", file=out)
    print(f"tag accuracy:      {_pct(summary['tag_accuracy'])} ({count('tags_ok')}/{n})", file=out)
    print(
        f"secrets:           {sec['redacted']}/{sec['expected']} redacted, "
        f"{len(sec['failures'])} failed, {len(sec['false_positives'])} false positive(s)"
        + ("" if sec["ok"] else "  FAIL: " + ", ".join(f["id"] for f in sec["failures"])),
        file=out,
    )
    print(file=out)
    print(f"{'group':<14}{'precision':>10}{'recall':>8}{'support':>9}", file=out)
    for g, row in summary["per_group"].items():
        print(
            f"{g:<14}{_pct(row['precision']):>10}{_pct(row['recall']):>8}{row['support']:>9}",
            file=out,
        )
    print(file=out)
    cols = list(summary["per_group"])
    print("confusion (rows: expected, columns: got)", file=out)
    print(f"{'':<14}" + "".join(f"{c[:8]:>9}" for c in cols), file=out)
    for e in cols:
        row = summary["confusion"].get(e, {})
        print(f"{e:<14}" + "".join(f"{row.get(c, 0):>9}" for c in cols), file=out)
    print(file=out)
    print("priorities (rows: expected, columns: got)", file=out)
    levels = ("P1", "P2", "P3", "P4")
    print(f"{'':<14}" + "".join(f"{c:>9}" for c in levels), file=out)
    for e in levels:
        row = summary["priority_confusion"].get(e, {})
        print(f"{e:<14}" + "".join(f"{row.get(c, 0):>9}" for c in levels), file=out)
    for title, key in zip(("misrouted", "priority misses", "tag misses"), LISTINGS, strict=True):
        rows = summary.get(key)
        if not rows:
            continue
        print(f"\n{title} ({len(rows)}):", file=out)
        for r in rows:
            detail = f"expected {r['expected']} {r['expected_priority']} got {r['got']} {r['got_priority']}"
            if key == "tag_misses":
                missing = sorted(set(r["expected_tags"]) - set(r["got_tags"]))
                detail += f" missing tags {','.join(missing)}"
            print(f"  {r['id']:<9} {detail} — {r['note']}\n            {r['text']}", file=out)
    for bad in summary["bad_lines"]:
        print(f"bad sample {bad}", file=out)
