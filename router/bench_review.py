"""``switchboard bench review [--json] [--messages N]``: what the second opinion costs (issue 15).

The share of messages the reviewer (router/review.py) would ask the semantic model about, on the
training and development corpora (``triage/corpus``) routed by the configured rules and triage
model, and the time of one semantic prediction (an embedding and the heads) over up to N of the
development messages it reviews (default 50), one at a time as the reviewer asks. The workers'
path is untouched: this is the reviewer's cost, beside them.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, TextIO

from router.config import Settings
from router.review import load_semantic
from router.rules_samples import read_samples
from router.runtime import load_model
from rules import Engine
from rules.semantic import needs_review

CORPUS = Path(__file__).resolve().parents[1] / "triage" / "corpus"


def main(settings: Settings, as_json: bool, out: TextIO, messages: int = 50) -> int:
    model = load_model(settings.rules)
    semantic = load_semantic(settings.rules, settings.review)
    if model is None or semantic is None:
        print("no second opinion: [rules] model or [review] is off", file=out)
        return 1
    engine = Engine.load(settings.rules.file, model)
    result: dict[str, Any] = {"policy": dataclasses.asdict(semantic.policy)}
    asked: list[tuple[str, str | None]] = []
    for part in ("train", "dev"):
        total = reviewed = 0
        for path in sorted((CORPUS / part).glob("*.jsonl")):
            for s in read_samples(engine, str(path)).samples:
                d = s.decision
                total += 1
                if needs_review(model.predict(d.text, d.subject), semantic.policy, engine.hard_routed(d.routed_by)):
                    reviewed += 1
                    if part == "dev":
                        asked.append((d.text, d.subject))
        result[f"{part}_messages"] = total
        result[f"{part}_reviewed_share"] = round(reviewed / max(1, total), 4)
    sample = asked[:messages]
    semantic.predict("warm-up", None)  # loads the weights once, as a running reviewer has
    started = time.perf_counter()
    for text, subject in sample:
        semantic.predict(text, subject)
    elapsed = time.perf_counter() - started
    result.update(timed=len(sample), ms_per_review=round(1000 * elapsed / max(1, len(sample)), 1))
    if as_json:
        print(json.dumps(result), file=out)
    else:
        for k, v in result.items():
            print(f"{k:22} {v}", file=out)
    return 0
