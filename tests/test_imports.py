"""The import rules of docs/architecture.md, checked on the source tree (ast, no import executed).

- ``rules/`` is a pure library: it imports nothing from ``router``, ``adapters`` or ``triage``;
- ``sla/`` is pure too: the same, and it may use ``rules`` (the YAML loader, priorities);
- ``kb/`` (the knowledge base) is pure too: nothing from ``router``, ``adapters`` or ``triage``, and
  of ``rules`` only its text normalisation (``rules.normalize``);
- ``impostors/`` (the lookalike-name matcher) is pure too: nothing from the project at all;
- ``insight/`` (complaint clustering) is pure too and stands alone, like ``impostors/``;
- ``router/`` imports nothing from ``adapters`` except the composition root, ``router/cli.py``;
- ``adapters/`` import from the core only its public API for channels, ``router.channel``, and
  the rules library through its public API (``rules``);
- nothing under ``router/console/`` touches the Redis client: it calls stores and readers.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMPOSITION_ROOT = Path("router/cli.py")
CHANNEL_API = "router.channel"


def _sources(package: str) -> list[Path]:
    return sorted(p.relative_to(ROOT) for p in (ROOT / package).rglob("*.py"))


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) of every import in ``path``, inside functions too; ``from router import
    channel`` counts as ``router.channel``, relative imports are made absolute."""
    tree = ast.parse((ROOT / path).read_text(), str(path))
    package = ".".join(path.with_suffix("").parts[:-1])
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            if module in {"router", "adapters"}:  # a module of the package is what is imported
                for alias in node.names:
                    yield node.lineno, f"{module}.{alias.name}"
            else:
                yield node.lineno, module


def violations(path: Path) -> list[str]:
    """What in ``path`` breaks the import rules, one line each."""
    found = []
    layer = path.parts[0]
    for line, module in _imports(path):
        top = module.split(".", 1)[0]
        if layer in ("rules", "sla") and top in {"router", "adapters", "triage"}:
            found.append(f"{path}:{line}: {layer}/ is pure, imports {module}")
        elif layer == "kb" and (
            top in {"router", "adapters", "triage"} or (top == "rules" and module != "rules.normalize")
        ):
            found.append(f"{path}:{line}: kb/ is pure and shares only rules.normalize, imports {module}")
        elif layer in ("impostors", "insight") and top in {
            "router",
            "adapters",
            "triage",
            "rules",
            "sla",
            "kb",
            "impostors",
            "insight",
        } - {layer}:
            found.append(f"{path}:{line}: {layer}/ is pure and stands alone, imports {module}")
        elif layer == "router" and top == "adapters" and path != COMPOSITION_ROOT:
            found.append(f"{path}:{line}: only {COMPOSITION_ROOT} may import adapters ({module})")
        elif layer == "adapters" and top == "router" and module != CHANNEL_API:
            found.append(f"{path}:{line}: adapters import the core through {CHANNEL_API} only, not {module}")
        elif layer == "adapters" and top == "rules" and module != "rules":
            found.append(f"{path}:{line}: adapters use the rules library's public API (rules), not {module}")
        elif path.parts[:2] == ("router", "console") and top == "redis":
            found.append(f"{path}:{line}: the console calls stores, not the Redis client ({module})")
    if path.parts[:2] == ("router", "console"):
        tree = ast.parse((ROOT / path).read_text(), str(path))
        for node in ast.walk(tree):
            # `request.client` is the HTTP peer, not Redis.
            peer = isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "request"
            if isinstance(node, ast.Attribute) and node.attr in {"client", "pipeline"} and not peer:
                found.append(f"{path}:{node.lineno}: the console calls stores, not the Redis client (.{node.attr})")
    return found


@pytest.mark.parametrize("layer", ["rules", "sla", "router", "adapters", "kb", "impostors", "insight"])
def test_imports_follow_the_layers(layer: str) -> None:
    sources = _sources(layer)
    assert len(sources) >= 4, f"no sources found under {layer}/"
    problems = [problem for path in sources for problem in violations(path)]
    assert not problems, "\n".join(problems)


def test_the_check_catches_each_kind_of_violation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each rule, broken once in a scratch tree laid out like the project, is reported."""
    files = {
        "rules/bad.py": "from router.config import Settings\n",
        "impostors/bad.py": "from rules.normalize import fold\n",
        "insight/bad.py": "from router.conversations import first_inbound\nfrom insight.terms import tokens\n",
        "sla/bad.py": "def f():\n    import router.redis\n",
        "router/bad.py": "def f():\n    import adapters.telegram\n",
        "router/cli.py": "import adapters\n",  # the composition root may
        "adapters/bad.py": (
            "from router.inbox import Inbox\nfrom router.channel import Envelope\nfrom rules.detectors import detect\n"
        ),
        "adapters/good.py": "from router import channel\nfrom rules import detect\n",
        "router/console/bad.py": "async def f(rt):\n    await rt.client.get('x')\n",
        "router/console/good.py": "def ip(request):\n    return request.client.host\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    monkeypatch.setattr(__import__(__name__, fromlist=["ROOT"]), "ROOT", tmp_path)
    found = {name: violations(Path(name)) for name in files}
    assert found["rules/bad.py"] == ["rules/bad.py:1: rules/ is pure, imports router.config"]
    assert found["sla/bad.py"] == ["sla/bad.py:2: sla/ is pure, imports router.redis"]
    assert found["impostors/bad.py"] == [
        "impostors/bad.py:1: impostors/ is pure and stands alone, imports rules.normalize"
    ]
    assert found["insight/bad.py"] == [
        "insight/bad.py:1: insight/ is pure and stands alone, imports router.conversations"
    ]
    assert found["router/bad.py"] == ["router/bad.py:2: only router/cli.py may import adapters (adapters.telegram)"]
    assert found["router/cli.py"] == []
    assert found["adapters/bad.py"] == [
        "adapters/bad.py:1: adapters import the core through router.channel only, not router.inbox",
        "adapters/bad.py:3: adapters use the rules library's public API (rules), not rules.detectors",
    ]
    assert found["adapters/good.py"] == []
    assert found["router/console/good.py"] == []
    assert found["router/console/bad.py"] == [
        "router/console/bad.py:2: the console calls stores, not the Redis client (.client)"
    ]
