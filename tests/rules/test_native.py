"""The compiled engine (setup.py, rules/native.py)."""

from __future__ import annotations

import importlib.machinery
import os
from pathlib import Path

import pytest

from rules import native


@pytest.mark.skipif(os.environ.get("SWITCHBOARD_PURE") == "1", reason="built without compiling, on purpose")
def test_the_install_compiled_the_per_message_modules() -> None:
    # The build falls back to pure Python, with only a warning, where no compiler is found: this
    # is where a machine that should have compiled (CI's, a developer's) says it did not.
    assert native.compiled()
    assert native.stale() == []


def test_a_source_newer_than_its_compiled_module_is_stale(tmp_path: Path) -> None:
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    for name in ("fresh", "edited"):
        (tmp_path / f"{name}.py").write_text("x = 1\n")
        (tmp_path / f"{name}{suffix}").write_bytes(b"")
        os.utime(tmp_path / f"{name}{suffix}", (1_000_000, 1_000_000))
        os.utime(tmp_path / f"{name}.py", (999_000, 999_000))
    os.utime(tmp_path / "edited.py", (1_001_000, 1_001_000))
    (tmp_path / "plain.py").write_text("y = 2\n")  # never compiled: not stale
    assert native.stale(tmp_path) == ["edited.py"]
