"""Published assignment policies (docs/assignment.md): versioned like rule sets and SLA policies
(router/published.py), and the policies in force for the assignment service.

A policy text is validated whole (``sla.assignment.load``) and the groups it names (the groups it
sets a policy for, their overflow targets) are checked against the rule set in force before it is
published: a refused text raises ``AssignmentPolicyError`` with every reason, as
``FILE:LINE:COL: reason``, and the active version stays. A published version is in force over
``assign.policy_file``: the file is the version in force only while nothing was ever published
(it is not imported into the store, so editing it keeps working until the first publish).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis

from router.keys import Keys
from router.published import Compiled, Versions
from router.slastore import unknown_groups
from rules import Engine
from sla.assignment import AssignmentPolicies, AssignmentPolicyError, load

log = logging.getLogger("switchboard.assignment")


def groups_named(policies: AssignmentPolicies) -> set[str]:
    """Every group a policy text names: those it sets a policy for and their overflow targets."""
    return set(policies.groups) | {p.overflow_to for p in policies.groups.values() if p.overflow_to}


class AssignStore(Versions):
    """Publish, roll back, list and diff assignment policies; ``engine`` gives the rule set in force."""

    def __init__(self, client: aioredis.Redis, keys: Keys, engine: Callable[[], Awaitable[Engine]]) -> None:
        super().__init__(client, keys, "assignment", "assignment policy")
        self._engine = engine

    async def validate(self, source: str, filename: str = "<assignment>") -> AssignmentPolicies:
        """The compiled policies, or ``AssignmentPolicyError`` with every problem (the groups
        included)."""
        policies = load(source, filename)
        errors = unknown_groups(groups_named(policies), (await self._engine()).groups, source, filename)
        if errors:
            raise AssignmentPolicyError(errors)
        return policies

    async def _checked(self, source: str, filename: str) -> str:
        return (await self.validate(source, filename)).version


class PoliciesInForce:
    """Follows the active published version for a running assignment service (the configured
    file is in force until one is published)."""

    def __init__(self, store: AssignStore) -> None:
        self._store = store
        #: The active published number last seen (None: nothing published yet).
        self.number: int | None = None
        self._compiled = Compiled(store, load, "assignment")

    async def changed(self) -> AssignmentPolicies | None:
        """The policies of a newly published (or rolled back to) version since the last call, or
        None when the active number is the same. A version that does not load is logged and
        skipped: the ones in force stay."""
        number = await self._store.active_number()
        if number is None or number == self.number:
            return None
        try:
            policies = await self._compiled.get(number)
        except AssignmentPolicyError as exc:
            log.error("assignment policy %s does not load, the one in force stays:\n%s", number, exc)
            self.number = number  # logged once, not at every poll
            return None
        self.number = number
        log.info("assignment policy in force: %s (%s)", number, policies.version)
        return policies
