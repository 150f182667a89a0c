"""The build's one step beyond pyproject.toml: the rules engine's per-message path, compiled.

mypyc (part of mypy, which already checks these modules strictly) compiles them to C extensions
from the same typed source, so there is no second implementation to keep in step: the engine
evaluates a message ~1.3x faster (docs/triage.md, "Speed"). Each extension is optional: where no C
compiler is found, the build warns and installs the pure-Python modules, which behave the same;
``switchboard bench rules`` reports which ran (``compiled``). ``SWITCHBOARD_PURE=1`` skips
compiling on purpose (to profile the Python, say).

Only the modules a message passes through are compiled: the document, loader and compiler run
once per rule set, and the value types (``rules/model.py``) are msgspec structs already.
"""

from __future__ import annotations

import os

from setuptools import setup

COMPILED = [
    "rules/conditions.py",
    "rules/detectors.py",
    "rules/evaluate.py",
    "rules/intent.py",
    "rules/language.py",
    "rules/matcher.py",
    "rules/normalize.py",
    "rules/prefilter.py",
    "rules/regex.py",
    "rules/secrets.py",
]


def _extensions() -> list[object]:
    if os.environ.get("SWITCHBOARD_PURE") == "1":
        return []
    from mypyc.build import mypycify

    extensions = mypycify(COMPILED, group_name="rules_native", opt_level="3", debug_level="0")
    for extension in extensions:
        extension.optional = True  # no compiler: the pure-Python modules, with a warning
    return extensions


setup(ext_modules=_extensions())
