"""An incident's matcher: one rule's conditions (docs/rules.md), compiled by the rules engine.

An incident (router/incidents.py) names the conversations it covers with the same conditions a
rule's ``when`` takes. Rather than a second condition language, the matcher is a one-rule rule set
compiled by ``Engine``: the same validation (every problem with its reason), the same normalised
keyword and RE2 matching, the same detectors. Pure, like the rest of rules/.
"""

from __future__ import annotations

import json
from typing import Any

from rules.evaluate import Engine
from rules.model import MessageIn, RuleSetError

#: The one rule's id and the group its rule set needs (neither is ever seen outside).
RULE_ID = "incident"


class MatcherError(ValueError):
    """A matcher the rules compiler refused; ``reasons`` lists each problem."""

    def __init__(self, reasons: list[str]) -> None:
        self.reasons = reasons
        super().__init__("; ".join(reasons))


class Matcher:
    """``when`` (a condition, or a list of them: all must hold) compiled once."""

    def __init__(self, when: Any) -> None:
        if when is None or when == [] or when == {}:
            raise MatcherError(["the matcher needs at least one condition"])
        document = {
            "version": 1,
            "groups": [{"id": "incident", "name": "Incident"}],
            "defaults": {"group": "incident", "priority": "P4"},
            "rules": [{"id": RULE_ID, "when": when, "then": {"tags": ["incident"]}}],
        }
        try:
            # JSON is YAML 1.2: the loader reads it with its checks and positions.
            self._engine = Engine.from_yaml(json.dumps(document, ensure_ascii=False), "<matcher>")
        except RuleSetError as exc:
            raise MatcherError([e.reason for e in exc.errors]) from None
        self.when = when

    def matches(self, message: MessageIn) -> bool:
        return any(t.rule_id == RULE_ID for t in self._engine.evaluate(message).trace)
