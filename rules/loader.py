"""YAML text -> validated ``RuleFile``, with FILE:LINE:COL for every problem.

The YAML is composed once into a node tree (which keeps the line and column of every value) and
constructed into plain data from the same tree. Pydantic validates the data in one pass — the
document-wide checks (known groups, templates, detector kinds, RE2-compilable regexes, non-empty
normalised keywords) run inside that pass through the validation context — so every error is
collected at once. Each pydantic error location (``('rules', 3, 'then', 'route')``) is walked
back down the node tree to find its line and column.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from rules import detectors, document
from rules.document import LEAF_KEYS, Always, Condition, RuleFile, ValidationContext, When
from rules.model import RuleError, RuleSetError
from rules.normalize import normalize_keyword
from rules.regex import MAX_RULE_PATTERN_CHARS, MAX_RULESET_PATTERN_CHARS, regex_error

# libyaml keeps marks too and is ~10x faster on a 10,000-rule file.
_Base: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_Base):  # type: ignore[valid-type,misc]
    """SafeLoader with YAML 1.2 booleans: only true/false. Under YAML 1.1 the keyword ``no``
    (Spanish, Portuguese, English) or ``on`` would silently become a boolean."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in _Base.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)

Path = tuple[int | str, ...]


@dataclass(frozen=True)
class Loaded:
    """A validated rule document and where its parts are in the source."""

    document: RuleFile
    positions: Positions
    filename: str
    warnings: tuple[RuleError, ...]


class Positions:
    """Maps a data path (keys and list indexes) to the 1-based line/column in the YAML source."""

    def __init__(self, root: yaml.Node | None) -> None:
        self._root = root

    def walk(self, path: Sequence[int | str]) -> tuple[yaml.Node | None, yaml.Node | None, Path]:
        """Descend as far as ``path`` leads: (node, key node of the last step, steps taken).

        Path elements that do not exist in the YAML (pydantic's union tags, a missing field) are
        skipped, so the result is the deepest node that really exists.
        """
        node, key_node = self._root, None
        taken: list[int | str] = []
        for step in path:
            if isinstance(node, yaml.MappingNode) and isinstance(step, str):
                for k, v in node.value:
                    if isinstance(k, yaml.ScalarNode) and k.value == step:
                        node, key_node = v, k
                        taken.append(step)
                        break
            elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and 0 <= step < len(node.value):
                node, key_node = node.value[step], None
                taken.append(step)
        return node, key_node, tuple(taken)

    def locate(self, path: Sequence[int | str], at_key: bool = False) -> tuple[int, int]:
        """Line and column (1-based) of the value at ``path`` (or of its key if ``at_key``)."""
        node, key_node, _ = self.walk(path)
        target = key_node if at_key and key_node is not None else node
        if target is None:
            return 1, 1
        return target.start_mark.line + 1, target.start_mark.column + 1


def parse(text: str, filename: str) -> tuple[yaml.Node | None, Any]:
    """YAML text -> (node tree, plain data) within the size limits below; ``RuleSetError`` with the
    position for text that is not YAML or too large. Every YAML document validated the rules' way
    parses through here: rule files, SLA policies (sla/policy.py)."""
    try:
        return _parse_yaml(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        reason = f"invalid YAML: {exc.problem or exc.context}"
        raise RuleSetError([RuleError(filename, line, col, None, reason)]) from None
    except yaml.YAMLError as exc:
        raise RuleSetError([RuleError(filename, 1, 1, None, f"invalid YAML: {exc}")]) from None
    except _TooLarge as exc:
        mark = exc.node.start_mark
        raise RuleSetError([RuleError(filename, mark.line + 1, mark.column + 1, None, exc.reason)]) from None


def duplicate_keys(root: yaml.Node | None, filename: str) -> list[RuleError]:
    """Every key written twice in one mapping of any such document (PyYAML keeps the last silently)."""
    return _duplicate_keys(root, {}, filename)


def load(text: str, filename: str = "<rules>") -> Loaded:
    """Parse and validate a rule file; raise ``RuleSetError`` listing every error found."""
    root, data = parse(text, filename)
    positions = Positions(root)
    errors: list[RuleError] = []
    if not isinstance(data, dict):
        errors.append(RuleError(filename, 1, 1, None, "the rule file must be a YAML mapping"))
        raise RuleSetError(errors)

    errors.extend(_duplicate_keys(root, data, filename))
    errors.extend(_duplicate_ids(data, positions, filename))
    errors.extend(_pattern_budget(data, positions, filename))
    document: RuleFile | None = None
    try:
        document = RuleFile.model_validate(data, context={"rules": _context(data)})
    except ValidationError as exc:
        errors.extend(_convert(exc, data, positions, filename))
    if errors or document is None:
        errors.sort(key=lambda e: (e.line, e.col))
        raise RuleSetError(errors)
    warnings = _unreachable(document, positions, filename) + _soft_inert(document, positions, filename)
    return Loaded(document, positions, filename, tuple(warnings))


_STR = "tag:yaml.org,2002:str"


#: A rule file is a tree; aliases make it a graph that validation walks as a tree again. Nodes
#: that aliases add once expanded, at most (a few shared keyword lists are fine; 763 bytes of
#: nested aliases expanding to billions of nodes took 13.5 s and 1.15 GB before this limit).
MAX_ALIAS_NODES = 50_000
#: Nesting depth at most (the shipped rule set: 11; all/any/not nest a few levels).
MAX_DEPTH = 64


class _TooLarge(Exception):
    def __init__(self, node: yaml.Node, reason: str) -> None:
        super().__init__(reason)
        self.node = node
        self.reason = reason


def _expanded_size(root: yaml.Node) -> int:
    """How many nodes the document has with every alias expanded (memoised: linear in the source).
    Raises _TooLarge for a recursive alias or nesting beyond MAX_DEPTH."""
    sizes: dict[int, int] = {}
    open_: set[int] = set()

    def size(node: yaml.Node, depth: int) -> int:
        known = sizes.get(id(node))
        if known is not None:
            return known
        if id(node) in open_:
            raise _TooLarge(node, "a YAML alias refers to a node that contains it")
        if depth > MAX_DEPTH:
            raise _TooLarge(node, f"the YAML is nested more than {MAX_DEPTH} levels deep")
        total = 1
        if isinstance(node, yaml.SequenceNode | yaml.MappingNode):
            open_.add(id(node))
            children = node.value if isinstance(node, yaml.SequenceNode) else [n for kv in node.value for n in kv]
            total += sum(size(child, depth + 1) for child in children)
            open_.discard(id(node))
        sizes[id(node)] = total
        return total

    expanded = size(root, 0)
    if expanded - len(sizes) > MAX_ALIAS_NODES:
        raise _TooLarge(
            root,
            f"the YAML aliases expand to {expanded - len(sizes):,} more nodes (at most {MAX_ALIAS_NODES:,}): "
            "write the shared parts out or share less",
        )
    return expanded


def _parse_yaml(text: str) -> tuple[yaml.Node | None, Any]:
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        if root is not None:
            _expanded_size(root)  # before anything walks the tree as a tree
        data = _construct(loader, root, {}) if root is not None else None
    finally:
        loader.dispose()
    return root, data


def _construct(loader: yaml.SafeLoader, node: yaml.Node, memo: dict[int, Any]) -> Any:
    # PyYAML's generic constructor costs ~5 µs a node (1.6 s for 10,000 rules); rule files are
    # plain mappings, lists and scalars, so build those directly and let PyYAML do the rest
    # (numbers, merge keys, timestamps).
    if id(node) in memo:  # an alias: the same node object
        return memo[id(node)]
    if isinstance(node, yaml.ScalarNode):
        try:
            value: Any = node.value if node.tag == _STR else loader.construct_object(node, deep=True)
        except ValueError as exc:  # a date that does not exist (2026-02-30): PyYAML gives no position
            raise yaml.constructor.ConstructorError(
                None, None, f"{node.value} is not a {node.tag.rsplit(':', 1)[-1]} ({exc})", node.start_mark
            ) from None
    elif isinstance(node, yaml.SequenceNode):
        value = [_construct(loader, item, memo) for item in node.value]
    elif isinstance(node, yaml.MappingNode) and all(
        isinstance(k, yaml.ScalarNode) and k.tag == _STR for k, _ in node.value
    ):
        value = {k.value: _construct(loader, v, memo) for k, v in node.value}
    else:
        value = loader.construct_object(node, deep=True)
    memo[id(node)] = value
    return value


def _context(data: dict[str, Any]) -> ValidationContext:
    groups = data.get("groups")
    templates = data.get("templates")
    kinds = set(detectors.KINDS) | {"address"}
    return ValidationContext(
        groups=frozenset(
            str(g["id"]) for g in (groups if isinstance(groups, list) else ()) if isinstance(g, dict) and "id" in g
        ),
        templates=frozenset(str(t) for t in (templates if isinstance(templates, dict) else ())),
        detector_kinds=frozenset(kinds),
        compile_regex=regex_error,
        normalize_keyword=normalize_keyword,
    )


def _patterns(value: Any) -> Iterator[str]:
    """Every regex source in a rule's raw data, however deeply its conditions nest."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ("regex", "subject_regex") and isinstance(item, str):
                yield item
            else:
                yield from _patterns(item)
    elif isinstance(value, list):
        for item in value:
            yield from _patterns(item)


def _pattern_budget(data: dict[str, Any], positions: Positions, filename: str) -> list[RuleError]:
    """Regex source per rule and per rule set within the limits of rules/regex.py (a single
    pattern's limit is checked with the pattern, by regex_error)."""
    rules = data.get("rules")
    errors: list[RuleError] = []
    total = 0
    for i, rule in enumerate(rules if isinstance(rules, list) else ()):
        size = sum(map(len, _patterns(rule)))
        total += size
        line, col = positions.locate(("rules", i))
        if size > MAX_RULE_PATTERN_CHARS:
            reason = f"its regexes have {size:,} characters: at most {MAX_RULE_PATTERN_CHARS:,} per rule"
            errors.append(RuleError(filename, line, col, _rule_id(data, ("rules", i)), reason))
        elif total > MAX_RULESET_PATTERN_CHARS:
            reason = f"the rule set's regexes reach {total:,} characters here: at most {MAX_RULESET_PATTERN_CHARS:,}"
            errors.append(RuleError(filename, line, col, _rule_id(data, ("rules", i)), reason))
            break
    return errors


def _rule_id(data: dict[str, Any], path: Sequence[int | str]) -> str | None:
    """The id of the rule a path is inside ('#N' when the rule has no usable id), else None."""
    if len(path) < 2 or path[0] != "rules" or not isinstance(path[1], int):
        return None
    rules = data.get("rules")
    rule = rules[path[1]] if isinstance(rules, list) and path[1] < len(rules) else None
    if isinstance(rule, dict) and isinstance(rule.get("id"), str | int) and rule["id"] != "":
        return str(rule["id"])
    return f"#{path[1] + 1}"


def _dotted(path: Sequence[int | str]) -> str:
    out = ""
    for step in path:
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else str(step))
    return out


def _convert(exc: ValidationError, data: dict[str, Any], positions: Positions, filename: str) -> Iterator[RuleError]:
    seen: set[tuple[int, int, str]] = set()
    for err in exc.errors(include_url=False):
        loc = err["loc"]
        kind = err["type"]
        node, key_node, taken = positions.walk(loc)
        rule_id = _rule_id(data, taken)
        inside = taken[2:] if rule_id is not None else taken
        if kind == "extra_forbidden":
            name = str(loc[-1])
            reason = f"unknown field {name!r}{_suggest(name, _fields_at(taken[:-1], data))}"
            where = _dotted(inside[:-1])
            target = key_node
        elif kind == "missing":
            reason = f"missing field {loc[-1]!s}"
            where = _dotted(inside)
            target = node
        else:
            msg = err["msg"]
            if kind == "unknown_condition" and isinstance(err["input"], dict):
                (key,) = err["input"]
                msg += _suggest(str(key), LEAF_KEYS)
            if kind == "too_short" and loc:
                last = str(loc[-1])
                if last in ("all", "any"):
                    msg = "empty condition"
                elif last.startswith(("contains_", "subject_contains_")):
                    msg = "empty keyword list"
                elif last in ("groups", "days", "tags") or last in LEAF_KEYS:
                    msg = f"empty list: give at least one {last.rstrip('s')}"
            reason = msg
            where = _dotted(inside)
            target = node
        if where:
            reason = f"{where}: {reason}"
        line, col = (target.start_mark.line + 1, target.start_mark.column + 1) if target is not None else (1, 1)
        if (line, col, reason) in seen:  # a union reports the same problem once per member
            continue
        seen.add((line, col, reason))
        yield RuleError(filename, line, col, rule_id, reason)


def _fields_at(path: Sequence[int | str], data: Any) -> Sequence[str]:
    """Field names allowed where an unknown field was found (for a did-you-mean hint)."""
    names: dict[str, type[BaseModel]] = {
        "": document.RuleFile,
        "groups": document.Group,
        "defaults": document.Defaults,
        "rules": document.Rule,
        "then": document.Then,
        "hours": document.Window,
        "time": document.Window,
        "intent": document.IntentTest,
        "urgency": document.UrgencyTest,
        "model": document.ModelPolicy,
    }
    last = next((p for p in reversed(path) if isinstance(p, str)), "")
    cls: type[BaseModel] | None = names.get(last) or LEAF_KEYS.get(last)
    if cls is None:
        return ()
    return [f.alias or n for n, f in cls.model_fields.items()]


def _suggest(name: str, choices: Sequence[str] | dict[str, Any]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.7)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _duplicate_keys(root: yaml.Node | None, data: dict[str, Any], filename: str) -> list[RuleError]:
    # PyYAML keeps the last of two equal keys silently; for rules that hides a condition.
    errors: list[RuleError] = []

    def visit(node: yaml.Node, path: list[int | str]) -> None:
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for k, v in node.value:
                key = k.value if isinstance(k, yaml.ScalarNode) else None
                if key is not None and key in seen:
                    rid = _rule_id(data, path)
                    errors.append(
                        RuleError(
                            filename,
                            k.start_mark.line + 1,
                            k.start_mark.column + 1,
                            rid,
                            f"duplicate key {key!r}",
                        )
                    )
                if key is not None:
                    seen.add(key)
                visit(v, [*path, key if key is not None else "?"])
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                visit(item, [*path, i])

    if root is not None:
        visit(root, [])
    return errors


def _duplicate_ids(data: dict[str, Any], positions: Positions, filename: str) -> list[RuleError]:
    errors: list[RuleError] = []
    for section, what in (("rules", "rule"), ("groups", "group")):
        items = data.get(section)
        if not isinstance(items, list):
            continue
        first: dict[str, int] = {}
        for i, item in enumerate(items):
            if not isinstance(item, dict) or not isinstance(item.get("id"), str | int):
                continue
            ident = str(item["id"])
            if ident in first:
                line, col = positions.locate((section, i, "id"))
                where, _ = positions.locate((section, first[ident], "id"))
                errors.append(
                    RuleError(
                        filename,
                        line,
                        col,
                        ident if section == "rules" else None,
                        f"duplicate {what} id {ident!r} (first at line {where})",
                    )
                )
            else:
                first[ident] = i
    return errors


def is_unconditional(when: When | Condition) -> bool:
    """True for ``always: true`` alone (or a list / ``all`` of nothing else)."""
    if isinstance(when, list):
        return all(is_unconditional(c) for c in when)
    if isinstance(when, document.All):
        return all(is_unconditional(c) for c in when.all)
    return isinstance(when, Always)


def _unreachable(document: RuleFile, positions: Positions, filename: str) -> list[RuleError]:
    warnings: list[RuleError] = []
    for i, rule in enumerate(document.rules):
        if rule.then.stop and is_unconditional(rule.when):
            stop_line, _ = positions.locate(("rules", i, "id"))
            for j in range(i + 1, len(document.rules)):
                line, col = positions.locate(("rules", j, "id"))
                reason = f"never fires: rule {rule.id} (line {stop_line}) always matches and stops"
                warnings.append(RuleError(filename, line, col, document.rules[j].id, reason, "warning"))
            break
    return warnings


def _soft_inert(document: RuleFile, positions: Positions, filename: str) -> list[RuleError]:
    """A soft route (priority) that no ``model:`` threshold can override: soft changes nothing."""
    section = document.model
    thresholds = {
        "route": section.override_route_min if section is not None else None,
        "priority": section.override_priority_min if section is not None else None,
    }
    warnings: list[RuleError] = []
    for i, rule in enumerate(document.rules):
        inert = sorted(part for part in rule.then.soft_parts() if thresholds[part] is None)
        if inert:
            line, col = positions.locate(("rules", i, "then", "soft"))
            keys = " or ".join(f"model.override_{part}_min" for part in inert)
            reason = f"soft {' and '.join(inert)} changes nothing without {keys}"
            warnings.append(RuleError(filename, line, col, rule.id, reason, "warning"))
    return warnings
