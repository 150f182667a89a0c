from __future__ import annotations

from pathlib import Path

import pytest

from kb import KnowledgeBase, load_dir

FIXTURES = Path(__file__).parent / "fixtures"
GROUPS = ("payments", "security", "verification", "trading", "general", "complaints")


@pytest.fixture(scope="session")
def fixture_kb() -> KnowledgeBase:
    return load_dir(FIXTURES / "kb", GROUPS)
