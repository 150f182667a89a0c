"""Shared fixtures for the rules engine tests."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from rules import Engine

# ../shared beside the project (where CI puts it too), unless SWITCHBOARD_SAMPLES says otherwise.
SAMPLES = Path(
    os.environ.get("SWITCHBOARD_SAMPLES", Path(__file__).resolve().parents[3] / "shared" / "samples" / "messages.jsonl")
)


BASE = """\
version: 1
groups:
  - {id: general, name: General}
  - {id: security, name: Security, languages: [en, zh, ru]}
  - id: payments
    languages: [en, zh, ru]
    hours: {tz: Asia/Shanghai, days: [mon, tue, wed, thu, fri], from: "09:00", to: "18:00"}
defaults: {group: general, priority: P3}
templates:
  faq: {en: "Read the FAQ", zh: "请看常见问题", default: "FAQ"}
rules:
"""


def rules_yaml(body: str) -> str:
    """A complete rule file: the BASE groups/defaults/templates plus ``body`` (rule items)."""
    return BASE + body


@pytest.fixture
def make_engine():  # type: ignore[no-untyped-def]
    from rules import Engine

    def make(body: str) -> Engine:
        return Engine.from_yaml(rules_yaml(body), "test.yaml")

    return make


def ungated(engine: Engine) -> Engine:
    """The same rule set, every rule tried on every message (gating off): what gating must match.
    Built through the constructor (the engine may be compiled, without an instance ``__dict__``)."""
    from rules import Engine

    compiled = engine._compiled
    everything = dataclasses.replace(compiled, ungated=frozenset(range(len(compiled.rules))))
    return Engine(everything, engine.version, engine.warnings, engine.model)
