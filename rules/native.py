"""Whether the rules engine runs compiled (setup.py compiles its per-message modules with mypyc),
and a warning when a compiled module is older than its source.

An editable install keeps the compiled modules beside their sources, and Python imports an
extension module before the ``.py`` of the same name: after an edit, the old compiled code would
run, silently. ``make`` rebuilds them when a module of ``rules/`` changes; this warns (an error
under the test suite's warning filter) when something ran the code without rebuilding.
"""

from __future__ import annotations

import importlib.machinery
import warnings
from pathlib import Path

_HERE = Path(__file__).parent
_SUFFIXES = tuple(importlib.machinery.EXTENSION_SUFFIXES)


def compiled() -> bool:
    """True when the engine's modules are the compiled ones (``rules.evaluate`` is an extension)."""
    import rules.evaluate

    return str(rules.evaluate.__file__).endswith(_SUFFIXES)


def stale(directory: Path = _HERE) -> list[str]:
    """The sources (file names) in ``directory`` changed after their compiled module was built."""
    out = []
    for extension in (p for p in directory.iterdir() if p.name.endswith(_SUFFIXES)):
        source = directory / (extension.name.split(".", 1)[0] + ".py")
        if source.exists() and source.stat().st_mtime > extension.stat().st_mtime:
            out.append(source.name)
    return sorted(out)


def warn_if_stale() -> None:
    """Warn when the engine runs from a source tree whose compiled modules are older than their
    sources. An installed wheel is not checked: its files are dated by the install, not the build."""
    if not (_HERE.parent / "setup.py").exists():
        return
    names = stale()
    if names:
        warnings.warn(
            f"rules/: {', '.join(names)} changed after being compiled, and the compiled modules (the old code) "
            "are the ones Python imports: run `make install` to compile them again (or delete rules/*.so)",
            RuntimeWarning,
            stacklevel=2,
        )
