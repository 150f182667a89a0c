"""Shared fixtures for the rules engine tests."""

from __future__ import annotations

import importlib.util
import sys
import types
from collections.abc import Iterable
from pathlib import Path

import pytest

_RULES = Path(__file__).resolve().parents[2] / "rules"

if importlib.util.find_spec("rules.language") is None:  # pragma: no cover - until it lands
    # Throwaway stand-in while rules/language.py is being written by another helper.
    stub = types.ModuleType("rules.language")

    class LanguageDetector:
        def __init__(self, languages: Iterable[str]) -> None:
            self.languages = tuple(languages)

        def detect(self, text: str) -> str | None:
            if any("\u4e00" <= ch <= "\u9fff" for ch in text):
                return "zh" if "zh" in self.languages else None
            if any("\u0400" <= ch <= "\u04ff" for ch in text):
                return "ru" if "ru" in self.languages else None
            if any("\uac00" <= ch <= "\ud7a3" for ch in text):
                return "ko" if "ko" in self.languages else None
            return "en" if len(text.split()) >= 3 and "en" in self.languages else None

    stub.LanguageDetector = LanguageDetector  # type: ignore[attr-defined]
    sys.modules["rules.language"] = stub


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
