"""How the rules, the model and both together score: ``python -m triage.evaluate [--oof FILE]``.

Prints, for the development set (``triage/corpus/dev``, never trained or tuned on), the table of
``switchboard rules eval`` four times: the shipped rules alone, the model alone, both under a
``Policy`` (rules/intent.py), and both with the reviewer's second opinion (rules/semantic.py).
The policy's thresholds are chosen on the *training* corpus, from
out-of-fold predictions (``python -m triage.train --oof FILE``): every threshold the development set
is scored with was fixed before it was looked at.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import itertools
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

from router.rules_cli import second_opinion
from router.rules_samples import Report, Sample, print_summary, read_samples, summarize
from rules import Engine
from rules.intent import IntentModel, Policy, Prediction, combine
from rules.semantic import SemanticModel

ROOT = Path(__file__).resolve().parent
MODELS = ROOT.parent / "rules" / "models"
THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
P1_THRESHOLDS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7)


def report_of(engine: Engine, paths: Sequence[Path]) -> Report:
    report = Report()
    for path in paths:
        part = read_samples(engine, str(path))
        report.samples += part.samples
        report.bad_lines += part.bad_lines
    return report


def rule_set_priority(engine: Engine, s: Sample) -> bool:
    """Whether a rule, not the rule set's default, gave the priority (an approximation: a rule
    that set the default priority itself counts as the default)."""
    return s.decision.routed_by is not None or s.decision.priority != engine.default_priority


def decided(s: Sample, group: str, priority: int) -> Sample:
    return dataclasses.replace(s, decision=msgspec.structs.replace(s.decision, group=group, priority=priority))


def model_alone(report: Report, predictions: Sequence[Prediction]) -> Report:
    samples = [
        decided(s, Prediction.top(p.group)[0], int(Prediction.top(p.priority)[0][1:]))
        for s, p in zip(report.samples, predictions, strict=True)
    ]
    return Report(samples, report.bad_lines)


def both(engine: Engine, report: Report, predictions: Sequence[Prediction], policy: Policy) -> Report:
    samples = []
    for s, p in zip(report.samples, predictions, strict=True):
        routed = s.decision.routed_by is not None
        group, priority = combine(
            s.decision.group, s.decision.priority, routed, rule_set_priority(engine, s), p, policy
        )
        samples.append(decided(s, group, priority))
    return Report(samples, report.bad_lines)


def score(samples: Sequence[Sample]) -> tuple[float, ...] | None:
    """What a policy is chosen for: P1 recall first (an account takeover left at P3 costs a user
    their funds), then group plus priority accuracy; None when more than 5% of P4 messages are
    raised to P1 (issue 15's bound)."""
    p1 = [s for s in samples if s.expected_priority == "P1"]
    p4 = [s for s in samples if s.expected_priority == "P4"]
    if p4 and sum(s.decision.priority == 1 for s in p4) > 0.05 * len(p4):
        return None
    recall = sum(s.decision.priority == 1 for s in p1) / max(1, len(p1))
    return (round(recall, 2), sum(s.group_ok for s in samples) + sum(s.priority_ok for s in samples))


def choose_policy(engine: Engine, train: Report, oof: dict[str, Prediction]) -> Policy:
    predictions = [oof[s.id] for s in train.samples]
    best: tuple[tuple[float, ...], Policy] | None = None
    for route, prio, p1 in itertools.product(THRESHOLDS, THRESHOLDS, P1_THRESHOLDS):
        policy = Policy(route, prio, p1)
        key = score(both(engine, train, predictions, policy).samples)
        if key is not None and (best is None or key > best[0]):
            best = (key, policy)
    assert best is not None
    return best[1]


def _headline(title: str, engine: Engine, report: Report, out: io.TextIOBase | Any) -> dict[str, Any]:
    summary = summarize(engine, report)
    print(f"\n== {title}", file=out)
    buf = io.StringIO()
    print_summary({**summary, "misrouted": [], "priority_misses": [], "tag_misses": []}, report.samples, buf)
    print(
        "\n".join(line for line in buf.getvalue().splitlines() if not line.startswith(("tag accuracy", "secrets"))),
        file=out,
    )
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m triage.evaluate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=Path, default=MODELS)
    ap.add_argument("--oof", type=Path, help="out-of-fold predictions on the training corpus (triage.train --oof)")
    ap.add_argument("--dev", type=Path, action="append", help="development files (default: triage/corpus/dev)")
    args = ap.parse_args(argv)
    engine = Engine.default()
    model = IntentModel.load(args.models)
    policy = Policy(**model.meta.get("policy", {}))
    if args.oof:
        oof = {}
        for line in args.oof.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            oof[row["id"]] = Prediction(row["group"], row["priority"])
        train = report_of(engine, sorted((ROOT / "corpus" / "train").glob("*.jsonl")))
        policy = choose_policy(engine, train, oof)
        print(f"policy chosen on the training corpus (out of fold): {policy}", file=sys.stderr)
    dev = report_of(engine, args.dev or sorted((ROOT / "corpus" / "dev").glob("*.jsonl")))
    # The model reads what the engine passed on: the text with secrets already masked.
    predictions = [model.predict(s.decision.text, s.decision.subject) for s in dev.samples]
    _headline("rules alone", engine, dev, sys.stdout)
    _headline("model alone", engine, model_alone(dev, predictions), sys.stdout)
    combined = both(engine, dev, predictions, policy)
    _headline(f"rules and model ({policy})", engine, combined, sys.stdout)
    semantic = SemanticModel.load(args.models)  # the reviewer's second opinion (router/review.py)
    reviewed, asked = second_opinion(combined.samples, model, semantic)
    title = f"rules, model and second opinion ({semantic.policy}; {asked} reviewed)"
    _headline(title, engine, Report(reviewed, dev.bad_lines), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
