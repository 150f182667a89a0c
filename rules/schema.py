"""The JSON Schema of the rule file, generated from the pydantic model.

``rules/schema.json`` is the committed copy (for editors and the web console); a test checks it
equals ``render()``. Regenerate it with ``switchboard rules schema > rules/schema.json``.
"""

from __future__ import annotations

import json
from typing import Any

from rules.document import RuleFile

SCHEMA_ID = "https://switchboard.dev/schemas/rules-v1.json"


def generate() -> dict[str, Any]:
    """The schema as a dict (draft 2020-12, the dialect pydantic emits)."""
    schema = RuleFile.model_json_schema(by_alias=True, mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        **schema,
    }


def render() -> str:
    """The schema as the exact text of ``rules/schema.json``."""
    return json.dumps(generate(), indent=2, ensure_ascii=False, sort_keys=False) + "\n"
