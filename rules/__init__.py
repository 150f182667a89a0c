"""Switchboard's rules engine: a pure library (no Redis, no network).

Public API (see docs/architecture.md and docs/rules.md)::

    from rules import Engine, MessageIn, Decision, Redaction, TraceEntry, RuleSetError, RuleError
    from rules import Precheck, Triage  # the P1 lane's ingest precheck, and the prediction it carries
    from rules import redact_secrets, detect, SECRET_KINDS  # the built-in detectors, for text kept aside

The names are imported lazily, so that ``import rules.normalize`` (or the document alone, for the
JSON Schema) does not load the language detector and the automaton machinery.

Modules, one concept each: ``document`` (the YAML schema an admin writes), ``loader`` (YAML text
-> validated document, errors with line and column), ``regex`` (RE2 patterns and their limits),
``prefilter`` (what a regex's matches must contain), ``conditions`` (the compiled condition
nodes), ``compile`` (document -> compiled rule set), ``evaluate`` (the engine), ``model`` (the
values it takes and gives), ``normalize``, ``detectors``, ``secrets``, ``language``, ``intent``;
``native`` (whether the per-message modules run compiled, setup.py).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from rules import native

native.warn_if_stale()

if TYPE_CHECKING:
    from rules.detectors import SECRET_KINDS, detect
    from rules.evaluate import Engine, Precheck, default_source, redact_secrets
    from rules.model import (
        Decision,
        GroupInfo,
        Hours,
        MessageIn,
        Redaction,
        RuleError,
        RuleSetError,
        TraceEntry,
        Triage,
    )

__all__ = [
    "SECRET_KINDS",
    "Decision",
    "Engine",
    "GroupInfo",
    "Hours",
    "MessageIn",
    "Precheck",
    "Redaction",
    "RuleError",
    "RuleSetError",
    "TraceEntry",
    "Triage",
    "default_source",
    "detect",
    "redact_secrets",
]

_HOME = {name: "rules.model" for name in __all__} | {
    "Engine": "rules.evaluate",
    "Precheck": "rules.evaluate",
    "redact_secrets": "rules.evaluate",
    "default_source": "rules.evaluate",
    "SECRET_KINDS": "rules.detectors",
    "detect": "rules.detectors",
}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(importlib.import_module(_HOME[name]), name)
    raise AttributeError(f"module 'rules' has no attribute {name!r}")
