"""Who may do what: the one statement of the console's access rules.

``http.require`` (every page and API caller: the ``Admin`` dependency) and the ``Console`` service
(every read and write of a queue, group or admin-only setting) both call these, so the rules cannot
drift between the HTTP layer and the service. An agent outside a conversation's group gets NotFound
from ``Console.conversation`` instead (its existence is not disclosed).
"""

from __future__ import annotations

from router.accounts import Forbidden, User


def require_admin(user: User) -> None:
    if not user.is_admin:
        raise Forbidden("admins only")


def require_group(user: User, group: str) -> None:
    if not user.sees(group):
        raise Forbidden(f"group {group} is not one of yours")


def require_reports(user: User, group: str | None = None) -> None:
    """Reports: admins all, supervisors those of their groups (``group``), agents none."""
    if not user.sees_reports:
        raise Forbidden("reports are for admins and supervisors")
    if group is not None:
        require_group(user, group)
