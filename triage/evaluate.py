"""How the rules, the model and both together score: ``python -m triage.evaluate [--oof FILE]``.

Prints, for the development set (``triage/corpus/dev``, never trained or tuned on), the table of
``switchboard rules eval`` four times: the rules alone, the model alone, both as the engine
combines them (rules/intent.py ``decide``), and both with the reviewer's second opinion
(rules/semantic.py, router/review.py).

With ``--oof`` (out-of-fold predictions of the *training* corpus, ``python -m triage.train --oof
FILE``) it first chooses, on the training corpus only, what the rule set leaves to the model:

1. which rules become **soft** (``then: {soft: …}``): every rule that routes (sets a priority) is
   scored on the training messages where it decided the group (the priority), against the model's
   out-of-fold answer on the same messages; a rule less precise than the model becomes soft for
   that decision (rules as written, every ``soft`` taken out first);
2. the ``model:`` section's thresholds, for the rule set with those soft rules: P1 recall first,
   then group plus priority accuracy, with at most 5% of P4 messages raised to P1.

It prints the choice as the YAML to write into the rule file, says whether the file already has it,
and scores the development set with it. Every threshold and every soft rule the development set is
scored with was fixed before it was looked at.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import itertools
import json
import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec

from router.rules_cli import second_opinion
from router.rules_samples import Report, Sample, figures_only, message_from_json, print_summary, read_samples, summarize
from rules import Engine
from rules.document import ModelPolicy, RuleFile
from rules.evaluate import default_source
from rules.intent import IntentModel, Policy, Prediction, Ruled, decide
from rules.loader import load
from rules.semantic import SemanticModel

ROOT = Path(__file__).resolve().parent
MODELS = ROOT.parent / "rules" / "models"
THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
P1_THRESHOLDS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
# An override threshold may also stay off; tried first, so that on a tie the rules keep control.
OVERRIDE_THRESHOLDS = (math.inf, *reversed(THRESHOLDS))


def report_of(engine: Engine, paths: Sequence[Path]) -> Report:
    report = Report()
    for path in paths:
        part = read_samples(engine, str(path))
        report.samples += part.samples
        report.bad_lines += part.bad_lines
    return report


def read_oof(path: Path) -> dict[str, Prediction]:
    oof = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        oof[row["id"]] = Prediction(row["group"], row["priority"])
    return oof


def decided(s: Sample, group: str, priority: int) -> Sample:
    return dataclasses.replace(s, decision=msgspec.structs.replace(s.decision, group=group, priority=priority))


def model_alone(report: Report, predictions: Sequence[Prediction]) -> Report:
    samples = [
        decided(s, Prediction.top(p.group)[0], int(Prediction.top(p.priority)[0][1:]))
        for s, p in zip(report.samples, predictions, strict=True)
    ]
    return Report(samples, report.bad_lines)


# --------------------------------------------------------------------------- the training corpus


@dataclasses.dataclass(frozen=True, slots=True)
class Example:
    """A training message as the choice sees it: what was expected, what the rules alone decided
    (``Engine.ruled``), and the model's out-of-fold prediction."""

    groups: tuple[str, ...]
    priority: str | None
    ruled: Ruled
    prediction: Prediction


def examples(engine: Engine, paths: Iterable[Path], oof: Mapping[str, Prediction]) -> list[Example]:
    out = []
    for path in paths:
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            expect = row["expect"]
            groups = expect["group"] if isinstance(expect["group"], list) else [expect["group"]]
            ruled = engine.ruled(message_from_json(row))
            out.append(Example(tuple(groups), expect.get("priority"), ruled, oof[row["id"]]))
    return out


@dataclasses.dataclass(frozen=True, slots=True)
class RuleScore:
    """One rule's decisions of one kind (``route`` or ``priority``) on the training corpus: on how
    many messages it decided, how many it got right and how many the model got right, and (for the
    priority) how many P1 messages each left at P1."""

    rule: str
    decision: str
    n: int
    rule_ok: int
    model_ok: int
    rule_p1: int = 0
    model_p1: int = 0

    @property
    def soft(self) -> bool:
        """Less precise than the model, and (P1 recall first) the model keeps every P1 it kept."""
        return self.rule_ok < self.model_ok and self.rule_p1 <= self.model_p1


def rule_scores(train: Sequence[Example]) -> list[RuleScore]:
    """Per rule, its route (priority) against the model's on the messages where it decided it."""
    counts: dict[tuple[str, str], list[int]] = {}
    for ex in train:
        r, p = ex.ruled, ex.prediction
        if r.routed_by is not None:
            c = counts.setdefault((r.routed_by, "route"), [0] * 5)
            c[0] += 1
            c[1] += r.group in ex.groups
            c[2] += Prediction.top(p.group)[0] in ex.groups
        if r.priority_by is not None and ex.priority is not None:
            top = Prediction.top(p.priority)[0]
            c = counts.setdefault((r.priority_by, "priority"), [0] * 5)
            c[0] += 1
            c[1] += f"P{r.priority}" == ex.priority
            c[2] += top == ex.priority
            c[3] += ex.priority == "P1" and r.priority == 1
            c[4] += ex.priority == "P1" and top == "P1"
    return [RuleScore(rule, what, *c) for (rule, what), c in sorted(counts.items())]


def soft_choice(doc: RuleFile, scores: Sequence[RuleScore]) -> dict[str, tuple[str, ...]]:
    """Rule id -> the parts (``route``, ``priority``) to make soft. A priority is only soft when
    the rule sets it with ``priority`` (a ``raise_priority`` is never soft)."""
    can = {r.id: r.then.model_copy(update={"soft": True}).soft_parts() for r in doc.rules}
    chosen: dict[str, set[str]] = {}
    for s in scores:
        if s.soft and s.decision in can.get(s.rule, set()):
            chosen.setdefault(s.rule, set()).add(s.decision)
    return {rule: tuple(sorted(parts)) for rule, parts in chosen.items()}


def with_choice(doc: RuleFile, soft: Mapping[str, Sequence[str]], section: ModelPolicy | None) -> RuleFile:
    """The document with exactly these soft rules (every other ``soft`` taken out) and, when given,
    this ``model:`` section."""
    rules = [
        r.model_copy(update={"then": r.then.model_copy(update={"soft": list(soft[r.id]) if r.id in soft else False})})
        for r in doc.rules
    ]
    update: dict[str, Any] = {"rules": rules}
    if section is not None:
        update["model"] = section
    return doc.model_copy(update=update)


def _group_ok(train: Sequence[Example], policy: Policy, default: str) -> int:
    ok = 0
    for ex in train:
        group = decide(ex.ruled, ex.prediction, policy).group or ex.ruled.group or default
        ok += group in ex.groups
    return ok


def _priority_key(train: Sequence[Example], policy: Policy, default: int) -> tuple[float, int] | None:
    """P1 recall (to 2 decimals), then priority accuracy; None when more than 5% of the P4
    messages are raised to P1 (issue 15's bound)."""
    p1 = p1_hit = p4 = p4_raised = ok = 0
    for ex in train:
        got = decide(ex.ruled, ex.prediction, policy).priority or ex.ruled.priority or default
        ok += f"P{got}" == ex.priority
        if ex.priority == "P1":
            p1, p1_hit = p1 + 1, p1_hit + (got == 1)
        elif ex.priority == "P4":
            p4, p4_raised = p4 + 1, p4_raised + (got == 1)
    if p4 and p4_raised > 0.05 * p4:
        return None
    return round(p1_hit / max(1, p1), 2), ok


def choose_policy(engine: Engine, train: Sequence[Example]) -> Policy:
    """The thresholds for the rule set that decided ``train``. The group depends only on the two
    route thresholds and the priority only on the three others, so each part is chosen on its
    own: the best group accuracy, and the best (P1 recall, priority accuracy) within the bound.
    On a tie the first wins: the lowest route threshold, an override left off."""
    off = math.inf
    route, override_route = max(
        itertools.product(THRESHOLDS, OVERRIDE_THRESHOLDS),
        key=lambda t: _group_ok(train, Policy(t[0], off, off, t[1], off), engine.default_group),
    )
    best: tuple[tuple[float, int], tuple[float, float, float]] | None = None
    for prio, override, p1 in itertools.product(THRESHOLDS, OVERRIDE_THRESHOLDS, P1_THRESHOLDS):
        key = _priority_key(train, Policy(off, prio, p1, off, override), engine.default_priority)
        if key is not None and (best is None or key > best[0]):
            best = (key, (prio, p1, override))
    assert best is not None, "no P1 threshold keeps P4 -> P1 within 5%"
    prio, p1, override = best[1]
    return Policy(route, prio, p1, override_route, override)


def section_of(policy: Policy) -> ModelPolicy:
    def value(x: float) -> float | None:
        return None if math.isinf(x) else x

    return ModelPolicy(**{f.name: value(getattr(policy, f.name)) for f in dataclasses.fields(Policy)})


def choice_yaml(soft: Mapping[str, Sequence[str]], section: ModelPolicy) -> str:
    """The choice as it is written in a rule file."""
    lines = ["model:"]
    lines += [f"  {k}: {v}" for k, v in section.model_dump(exclude_none=True).items()]
    lines += ["# soft rules (then: {soft: [...]}):"]
    lines += [f"#   {rule}: soft: [{', '.join(parts)}]" for rule, parts in sorted(soft.items())]
    return "\n".join(lines)


def differences(doc: RuleFile, soft: Mapping[str, Sequence[str]], section: ModelPolicy) -> list[str]:
    """Where the rule file differs from the choice (empty: it has it)."""
    out = []
    for r in doc.rules:
        want, have = frozenset(soft.get(r.id, ())), r.then.soft_parts()
        if want != have:
            out.append(f"rule {r.id}: soft {sorted(have)} in the file, {sorted(want)} chosen")
    if doc.model != section:
        out.append(f"model: {doc.model} in the file, {section} chosen")
    return out


def write_choice(text: str, soft: Mapping[str, Sequence[str]], section: ModelPolicy) -> str:
    """The rule file's text with the choice written in: a ``soft:`` line first in each chosen
    rule's ``then:`` block (every other ``soft:`` line of a ``then:`` block removed) and the
    ``model:`` section's thresholds. Comments and layout stay; a rule whose ``then`` is not a block
    mapping, or a file without a ``model:`` block, is refused (ValueError): write those by hand."""
    lines = text.split("\n")
    out: list[str] = []
    rule: str | None = None
    in_then = in_model = False
    for line in lines:
        if line.startswith("  - id: "):
            rule = line[len("  - id: ") :].split("#")[0].strip()
        if not line.startswith((" ", "#")) and line.strip():
            rule = rule if line.startswith("rules:") else None
        if in_then and not line.startswith("      "):
            in_then = False
        if in_model and not line.startswith(("  ", "#")) and line.strip():
            in_model = False
        if in_then and line.lstrip().startswith("soft:"):
            continue
        if in_model and line.startswith("  ") and line.split(":")[0].strip() in ModelPolicy.model_fields:
            continue
        out.append(line)
        if rule is not None and line.startswith("    then:"):
            if line.strip() != "then:":
                if rule in soft:
                    raise ValueError(f"rule {rule}: then is not a block mapping; write soft: by hand")
                continue
            in_then = True
            if rule in soft:
                out.append(f"      soft: [{', '.join(soft[rule])}]")
        if line == "model:":
            in_model = True
            out += [f"  {k}: {v}" for k, v in section.model_dump(exclude_none=True).items()]
    if "model:" not in lines:
        raise ValueError("no model: block in the rule file; write it by hand")
    return "\n".join(out)


# --------------------------------------------------------------------------- printing


def _headline(title: str, engine: Engine, report: Report, out: io.TextIOBase | Any) -> dict[str, Any]:
    summary = summarize(engine, report)
    print(f"\n== {title}", file=out)
    buf = io.StringIO()
    print_summary(figures_only(summary), report.samples, buf)
    print(
        "\n".join(line for line in buf.getvalue().splitlines() if not line.startswith(("tag accuracy", "secrets"))),
        file=out,
    )
    return summary


def _print_scores(scores: Sequence[RuleScore], out: Any) -> None:
    print("rule                 decides      n    rule   model  P1 kept (rule/model)  soft", file=out)
    for s in scores:
        p1 = f"{s.rule_p1}/{s.model_p1}" if s.decision == "priority" else ""
        soft = "yes" if s.soft else ""
        print(
            f"{s.rule:20} {s.decision:8} {s.n:6} {s.rule_ok / s.n:7.1%} {s.model_ok / s.n:7.1%}  {p1:20}  {soft}",
            file=out,
        )


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m triage.evaluate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=Path, default=MODELS)
    ap.add_argument("--rules", type=Path, help="the rule file (default: the shipped rules/default.yaml)")
    ap.add_argument("--oof", type=Path, help="out-of-fold predictions on the training corpus (triage.train --oof)")
    ap.add_argument("--dev", type=Path, action="append", help="development files (default: triage/corpus/dev)")
    ap.add_argument("--write", action="store_true", help="with --oof and --rules: write the choice into the rule file")
    args = ap.parse_args(argv)
    text = args.rules.read_text(encoding="utf-8") if args.rules else default_source()
    name = str(args.rules or "default.yaml")
    doc = load(text, name).document
    model = IntentModel.load(args.models)
    chosen = doc
    if args.oof:
        oof = read_oof(args.oof)
        train_paths = sorted((ROOT / "corpus" / "train").glob("*.jsonl"))
        hard = Engine.from_document(with_choice(doc, {}, None), name, "hard")
        scores = rule_scores(examples(hard, train_paths, oof))
        print("== each rule against the model, on the training corpus (out of fold)", file=sys.stderr)
        _print_scores(scores, sys.stderr)
        soft = soft_choice(doc, scores)
        softened = Engine.from_document(with_choice(doc, soft, None), name, "soft")
        section = section_of(choose_policy(softened, examples(softened, train_paths, oof)))
        chosen = with_choice(doc, soft, section)
        print(f"\n== chosen on the training corpus\n{choice_yaml(soft, section)}", file=sys.stderr)
        diff = differences(doc, soft, section)
        print(f"{name} {'differs: ' + '; '.join(diff) if diff else 'has this choice'}", file=sys.stderr)
        if args.write and diff:
            if args.rules is None:
                ap.error("--write needs --rules FILE (the shipped file is inside the package)")
            args.rules.write_text(write_choice(text, soft, section), encoding="utf-8")
            assert not differences(load(args.rules.read_text(encoding="utf-8"), name).document, soft, section)
            print(f"{args.rules}: written", file=sys.stderr)
    rules = Engine.from_document(chosen, name, "chosen")
    both = Engine.from_document(chosen, name, "chosen", model=model)
    dev_paths = args.dev or sorted((ROOT / "corpus" / "dev").glob("*.jsonl"))
    dev = report_of(rules, dev_paths)
    # The model reads what the engine passed on: the text with secrets already masked.
    predictions = [model.predict(s.decision.text, s.decision.subject) for s in dev.samples]
    _headline("rules alone", rules, dev, sys.stdout)
    _headline("model alone", rules, model_alone(dev, predictions), sys.stdout)
    combined = report_of(both, dev_paths)
    _headline(f"rules and model ({chosen.model})", both, combined, sys.stdout)
    semantic = SemanticModel.load(args.models)  # the reviewer's second opinion (router/review.py)
    reviewed, asked = second_opinion(combined.samples, both, model, semantic)
    title = f"rules, model and second opinion ({semantic.policy}; {asked} reviewed)"
    _headline(title, both, Report(reviewed, dev.bad_lines), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
