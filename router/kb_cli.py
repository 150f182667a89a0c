"""``switchboard kb validate|eval|calibrate``: the knowledge base (kb/) from the command line.

Offline: no Redis. The articles' groups are checked against the configured rule set's groups
(``[rules] file``, else the shipped rules), the ones the router can route to.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from router.config import Settings

if TYPE_CHECKING:
    import kb

# kb/ (bm25s, numpy: ~0.2 s) is imported by the commands that use it, not by every CLI start.


def rule_groups(settings: Settings) -> tuple[str, ...]:
    """The group ids of the rule set the workers run (an article may only serve those)."""
    from rules import Engine

    return tuple(Engine.load(settings.rules.file).groups)


def load(directory: Path | None, settings: Settings, err: TextIO) -> kb.KnowledgeBase | None:
    """The knowledge base in ``directory`` (default: the shipped one); None after printing every
    problem."""
    import kb

    # bm25s logs every index build at DEBUG; that is noise on a command's output.
    logging.getLogger("bm25s").setLevel(logging.WARNING)
    try:
        return kb.load_dir(directory or kb.default_dir(), rule_groups(settings))
    except kb.KBError as exc:
        for line in exc.errors:
            print(line, file=err)
        print(f"refused: {len(exc.errors)} problem(s)", file=err)
        return None


def validate(args: argparse.Namespace, settings: Settings) -> int:
    base = load(args.kb, settings, sys.stderr)
    if base is None:
        return 1
    variants = sum(len(a.variants) for a in base.articles)
    print(f"{len(base)} articles, {variants} variants, version {base.digest}: valid")
    return 0


def _questions(path: Path, base: kb.KnowledgeBase) -> list[kb.Question] | None:
    import kb

    try:
        return kb.load_questions(path, base)
    except kb.KBError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return None


def evaluate(args: argparse.Namespace, settings: Settings) -> int:
    """The table per language and overall, with the shipped (or ``--calibration``) method and thresholds."""
    import kb
    from kb.evaluate import format_table, rank, table

    base = load(args.kb, settings, sys.stderr)
    questions = None if base is None else _questions(args.questions, base)
    if base is None or questions is None:
        return 1
    method, policy = kb.Policy.load(args.calibration or kb.calibration_file())
    started = time.perf_counter()
    retriever = kb.Retriever(base, method)
    built = time.perf_counter()
    ranked = rank(retriever, questions)
    done = time.perf_counter()
    rows = table(ranked, base, policy)
    ms = 1000 * (done - built) / len(questions)
    if args.json:
        report: dict[str, Any] = {"kb": base.digest, "method": method.name}
        report["policy"] = {"min_score": policy.min_score, "min_gap": policy.min_gap}
        report |= {"questions": len(questions), "ms_per_question": round(ms, 2), "rows": [r.to_dict() for r in rows]}
        print(json.dumps(report, indent=2, ensure_ascii=False))
        return 0
    print(f"knowledge base {base.digest} ({len(base)} articles), method: {method.name}")
    print(f"thresholds: score >= {policy.min_score:.4f}, gap >= {policy.min_gap:.4f}")
    print(f"{len(questions)} questions, {ms:.1f} ms a question, index built in {built - started:.1f} s\n")
    print(format_table(rows))
    return 0


def calibrate_cmd(args: argparse.Namespace, settings: Settings) -> int:
    """Chooses the thresholds for ``--method`` on a labelled set and writes the calibration file."""
    import kb
    from kb.calibrate import Targets, calibrate
    from kb.evaluate import format_table, rank, table

    base = load(args.kb, settings, sys.stderr)
    questions = None if base is None else _questions(args.questions, base)
    if base is None or questions is None:
        return 1
    method = kb.Method(args.method, chargrams=args.chargrams, lexical_weight=args.lexical_weight)
    ranked = rank(kb.Retriever(base, method), questions)
    targets = Targets(args.max_wrong, args.max_unanswerable)
    policy = calibrate(ranked, base, targets)
    rows = table(ranked, base, policy)
    meta: dict[str, Any] = {"kb": base.digest, "questions": args.questions.name}
    meta["targets"] = {"max_wrong": targets.max_wrong, "max_unanswerable": targets.max_unanswerable}
    meta["tuning"] = rows[-1].to_dict()
    text = kb.Policy.dump(method, policy, meta)
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.write_text(text, encoding="utf-8")
        print(f"written to {args.out}", file=sys.stderr)
    print(format_table(rows), file=sys.stderr)
    return 0


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``kb validate|eval|calibrate`` under the CLI's subcommands."""
    top = sub.add_parser("kb", help="the knowledge base: validate articles, evaluate and calibrate the answerer")
    ksub = top.add_subparsers(dest="action", required=True, metavar="ACTION")
    kb_help = "a knowledge base directory (<id>/<lang>.md; default: the shipped one)"
    sp = ksub.add_parser("validate", help="check a knowledge base directory; every problem as FILE: reason")
    sp.add_argument("kb", nargs="?", type=Path, help=kb_help)
    sp.set_defaults(handler=validate)
    sp = ksub.add_parser("eval", help="top-1 accuracy and auto-answer figures per language on labelled questions")
    sp.add_argument("--questions", type=Path, required=True, help="JSON lines: id, lang, text, article (or null)")
    sp.add_argument("--kb", type=Path, help=kb_help)
    sp.add_argument("--calibration", type=Path, help="method and thresholds (default: the shipped ones)")
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp.set_defaults(handler=evaluate)
    sp = ksub.add_parser("calibrate", help="choose the auto-answer thresholds on labelled questions")
    sp.add_argument("--questions", type=Path, required=True)
    sp.add_argument("--kb", type=Path, help=kb_help)
    sp.add_argument("--method", choices=["lexical", "dense", "fused"], default="fused")
    sp.add_argument("--chargrams", action="store_true", help="lexical terms: words' character 3-grams too")
    sp.add_argument("--lexical-weight", type=float, default=0.3, help="fused: BM25 coverage's weight (0.3)")
    sp.add_argument("--max-wrong", type=float, default=0.02, help="wrong among answers sent (0.02)")
    sp.add_argument("--max-unanswerable", type=float, default=0.02, help="unanswerable questions answered (0.02)")
    sp.add_argument("--out", type=Path, help="the calibration file to write (default: standard output)")
    sp.set_defaults(handler=calibrate_cmd)
