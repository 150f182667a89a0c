"""Assignment policies per group: the YAML document, its validation and the compiled values.

```yaml
version: 1
groups:
  security:
    policy: least_loaded        # manual (agents claim; the default) | round_robin | least_loaded
    skill_tags: [vip, api]      # conversation tags only agents with that tag may take
    languages: true             # the conversation's lang:xx must be one the agent speaks
    sticky: true                # back to the previous agent, only while that agent is online
    reoffer: {after: 2m, max_hops: 2}   # no first reply in 2 min: to another agent, twice at most
    overflow: {after: 10m, to: general} # no eligible agent for 10 min: move to another group
```

A group not listed is ``manual``: nothing changes for it. Parsing and positions are the rule
files' (``rules/loader.py``): every problem at once, as ``FILE:LINE:COL: reason``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from rules.model import RuleError, RuleSetError
from sla.document import parse_duration
from sla.policy import read_document

POLICIES = ("manual", "round_robin", "least_loaded")
PolicyName = Literal["manual", "round_robin", "least_loaded"]
Seconds = Annotated[int, BeforeValidator(parse_duration), Field(ge=1)]


class AssignmentPolicyError(RuleSetError):
    """An assignment policy file that cannot be used; ``errors`` lists every problem found."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReofferDoc(_Strict):
    after: Seconds
    max_hops: int = Field(1, ge=1, le=20)


class OverflowDoc(_Strict):
    after: Seconds
    to: str = Field(min_length=1)


class GroupDoc(_Strict):
    policy: PolicyName = "manual"
    skill_tags: list[str] = []
    languages: bool = True
    sticky: bool = True
    reoffer: ReofferDoc | None = None
    overflow: OverflowDoc | None = None


class PolicyFile(_Strict):
    version: Literal[1]
    groups: dict[str, GroupDoc] = {}


@dataclass(frozen=True, slots=True)
class GroupPolicy:
    """How one group assigns (the defaults: ``manual``, which assigns nothing)."""

    group: str
    policy: str = "manual"
    skill_tags: frozenset[str] = frozenset()
    languages: bool = True
    sticky: bool = True
    reoffer_s: int = 0  # 0: never re-offered
    max_hops: int = 0
    overflow_s: int = 0  # 0: never overflows
    overflow_to: str = ""

    @property
    def automatic(self) -> bool:
        return self.policy != "manual"


@dataclass(frozen=True, slots=True)
class Agent:
    """What selection needs of an agent's profile (router/presence.py keeps it in Redis)."""

    name: str
    groups: frozenset[str]
    languages: frozenset[str]
    tags: frozenset[str]


@dataclass(frozen=True)
class AssignmentPolicies:
    """The policies of every group (a group not named is ``manual``) and the text's version."""

    groups: Mapping[str, GroupPolicy]
    version: str

    def of(self, group: str) -> GroupPolicy:
        return self.groups.get(group) or GroupPolicy(group)

    @property
    def automatic(self) -> list[str]:
        """The groups that assign automatically, sorted."""
        return sorted(g for g, p in self.groups.items() if p.automatic)

    @classmethod
    def none(cls) -> AssignmentPolicies:
        return cls({}, "")


def eligible(policy: GroupPolicy, agent: Agent, tags: tuple[str, ...] | list[str]) -> bool:
    """Whether ``agent`` may take a conversation with ``tags`` in ``policy``'s group, by skills:
    it serves the group; it speaks the conversation's ``lang:xx`` (an agent who lists no language
    takes any); it has every tag of the conversation that the group lists in ``skill_tags``."""
    if policy.group not in agent.groups:
        return False
    for tag in tags:
        if tag.startswith("lang:"):
            if policy.languages and agent.languages and tag[5:] not in agent.languages:
                return False
        elif tag in policy.skill_tags and tag not in agent.tags:
            return False
    return True


def load(text: str, filename: str = "<assignment>") -> AssignmentPolicies:
    """Parse and validate a policy file; ``AssignmentPolicyError`` lists every problem found."""
    doc, errors, positions = read_document(
        text, filename, PolicyFile, AssignmentPolicyError, "the assignment policy file"
    )
    if doc is not None:
        for name, group in doc.groups.items():
            target = group.overflow.to if group.overflow else None
            if target is not None and target == name:
                line, col = positions.locate(("groups", name, "overflow", "to"))
                errors.append(
                    RuleError(
                        filename, line, col, None, f"groups.{name}.overflow.to: a group cannot overflow to itself"
                    )
                )
            if group.policy == "manual" and (group.reoffer or group.overflow):
                line, col = positions.locate(("groups", name, "policy"))
                errors.append(
                    RuleError(
                        filename, line, col, None, f"groups.{name}: reoffer and overflow need an automatic policy"
                    )
                )
    if errors or doc is None:
        raise AssignmentPolicyError(sorted(errors, key=lambda e: (e.line, e.col)))
    groups = {
        name: GroupPolicy(
            group=name,
            policy=g.policy,
            skill_tags=frozenset(g.skill_tags),
            languages=g.languages,
            sticky=g.sticky,
            reoffer_s=g.reoffer.after if g.reoffer else 0,
            max_hops=g.reoffer.max_hops if g.reoffer else 0,
            overflow_s=g.overflow.after if g.overflow else 0,
            overflow_to=g.overflow.to if g.overflow else "",
        )
        for name, g in doc.groups.items()
    }
    return AssignmentPolicies(groups, hashlib.sha256(text.encode("utf-8")).hexdigest()[:12])


def load_file(path: str | Path) -> AssignmentPolicies:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise AssignmentPolicyError([RuleError(str(path), 1, 1, None, f"cannot read: {exc.strerror}")]) from None
    return load(text, str(path))
