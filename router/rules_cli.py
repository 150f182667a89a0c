"""``switchboard rules validate``, ``route``, ``rules eval``, ``rules schema``: the offline commands.

Each function returns the process exit code and writes to ``out``; ``router/cli.py`` wires them
to the ``switchboard`` command line. They read files and streams, so they live outside the pure
``rules`` library.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, TextIO

import msgspec
import yaml

from router.rules_samples import (
    InputError,
    Report,
    Sample,
    figures_only,
    message_from_json,
    print_summary,
    read_samples,
    summarize,
)
from rules import Engine, RuleSetError, default_source
from rules.intent import IntentModel
from rules.semantic import SemanticModel, needs_review, review

__all__ = ["evaluate_samples", "route", "schema", "validate"]


# --------------------------------------------------------------------------- validate


def validate(path: str, out: TextIO, model: IntentModel | None = None) -> int:
    """``switchboard rules validate FILE``: 0, or 1 with every error as FILE:LINE:COL: ...
    (with ``model``, also a label the triage model lacks)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"{path}:1:1: cannot read the file: {exc}", file=out)
        return 1
    try:
        engine = Engine.from_yaml(text, path, model=model)
    except RuleSetError as exc:
        for error in exc.errors:
            print(error, file=out)
        print(f"{path}: {len(exc.errors)} error(s)", file=out)
        return 1
    for warning in engine.warnings:
        print(warning, file=out)
    print(
        f"{path}: ok — {engine.rule_count} rules, {len(engine.groups)} groups, "
        f"{len(engine.warnings)} warning(s), version {engine.version}",
        file=out,
    )
    return 0


# --------------------------------------------------------------------------- route


def route(rules_path: str | None, inp: TextIO, out: TextIO, model: IntentModel | None = None) -> int:
    """``switchboard route [--rules FILE]``: one JSON decision line per JSON message line."""
    try:
        engine = Engine.load(rules_path, model)
    except RuleSetError as exc:
        _json_line(out, {"error": "invalid rule file", "errors": [str(e) for e in exc.errors]})
        return 1
    except OSError as exc:
        _json_line(out, {"error": f"cannot read the rule file: {exc}"})
        return 1
    failed = False
    for lineno, line in enumerate(inp, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            msg = message_from_json(obj)
        except (ValueError, InputError) as exc:
            # The reason only: echoing the line could print a secret the user pasted.
            reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
            _json_line(out, {"error": f"line {lineno}: {reason}", "line": lineno})
            failed = True
            continue
        record = engine.evaluate(msg).to_dict()
        if "id" in obj:
            record = {"id": obj["id"], **record}
        _json_line(out, record)
    return 1 if failed else 0


def _json_line(out: TextIO, obj: Any) -> None:
    out.write(json.dumps(obj, ensure_ascii=False) + "\n")


def evaluate_samples(
    rules_path: str | None,
    samples_path: str,
    as_json: bool,
    out: TextIO,
    model: IntentModel | None = None,
    *,
    only_figures: bool = False,
) -> int:
    """``switchboard rules eval FILE --samples JSONL [--json] [--figures-only]``: how well the
    rules do; ``only_figures``: without the samples they got wrong (``figures_only``)."""
    try:
        engine = Engine.load(rules_path, model)
    except RuleSetError as exc:
        for error in exc.errors:
            print(error, file=out)
        return 1
    try:
        report = read_samples(engine, samples_path)
    except OSError as exc:
        print(f"{samples_path}: cannot read: {exc}", file=out)
        return 1
    summary = summarize(engine, report)
    if only_figures:
        summary = figures_only(summary)
    if as_json:
        _json_line(out, summary)
    else:
        print_summary(summary, report.samples, out)
    return 1 if report.bad_lines else 0


# --------------------------------------------------------------------------- model eval


def second_opinion(
    samples: list[Sample], engine: Engine, model: IntentModel, semantic: SemanticModel
) -> tuple[list[Sample], int]:
    """The samples of rules and model (decided by ``engine``) as the reviewer (router/review.py)
    leaves them, and how many it asked the semantic model about."""
    out: list[Sample] = []
    asked = 0
    for s in samples:
        d = s.decision
        fast = model.predict(d.text, d.subject)
        if needs_review(fast, semantic.policy, engine.hard_routed(d.routed_by)):
            asked += 1
            opinion = review(fast, semantic.predict(d.text, d.subject), semantic.policy, d.group)
            group, priority = opinion.group or d.group, 1 if opinion.raise_p1 else d.priority
            s = dataclasses.replace(s, decision=msgspec.structs.replace(d, group=group, priority=priority))
        out.append(s)
    return out, asked


def model_eval(
    rules_path: str | None,
    samples_path: str,
    as_json: bool,
    out: TextIO,
    model: IntentModel | None,
    semantic: SemanticModel | None = None,
    *,
    only_figures: bool = False,
) -> int:
    """``switchboard model eval [FILE] --samples JSONL [--json] [--figures-only]``: the ``rules
    eval`` table for the rules alone, the triage model alone (its best group and priority), both
    as configured, and (with ``semantic``) both with the reviewer's second opinion."""
    shown = figures_only if only_figures else dict
    if model is None:
        print("no triage model: [rules] model is off", file=out)
        return 1
    try:
        text = Path(rules_path).read_text(encoding="utf-8") if rules_path else default_source()
        alone = yaml.safe_load(text)
        # The model alone: no rule, its best group and priority for every message.
        alone.update(rules=[], model={"route_min": 0.0, "priority_min": 0.0})
        engines = {
            "rules": Engine.from_yaml(text, rules_path or "default.yaml"),
            "model": Engine.from_yaml(yaml.safe_dump(alone, allow_unicode=True), "model-alone", model=model),
            "both": Engine.from_yaml(text, rules_path or "default.yaml", model=model),
        }
    except RuleSetError as exc:
        for error in exc.errors:
            print(error, file=out)
        return 1
    except (OSError, yaml.YAMLError) as exc:
        print(f"{rules_path}: {exc}", file=out)
        return 1
    summaries: dict[str, Any] = {}
    for name, engine in engines.items():
        try:
            report = read_samples(engine, samples_path)
        except OSError as exc:
            print(f"{samples_path}: cannot read: {exc}", file=out)
            return 1
        summaries[name] = shown(summarize(engine, report))
        if not as_json:
            print(f"== {dict(rules='rules alone', model='model alone', both='rules and model')[name]}", file=out)
            print_summary(summaries[name], report.samples, out)
        if name == "both" and semantic is not None:
            reviewed, asked = second_opinion(report.samples, engine, model, semantic)
            report = Report(reviewed, report.bad_lines)
            summaries["second_opinion"] = {**shown(summarize(engine, report)), "reviewed": asked}
            if not as_json:
                print(f"== rules, model and second opinion ({semantic.policy}; {asked} reviewed)", file=out)
                print_summary(summaries["second_opinion"], report.samples, out)
    if as_json:
        _json_line(out, summaries)
    return 1 if report.bad_lines else 0


# --------------------------------------------------------------------------- schema


def schema(out: TextIO) -> int:
    """``switchboard rules schema``: print the JSON Schema of the rule file."""
    from rules.schema import render

    out.write(render())
    return 0
