"""The impostor review queue (router/impostors.py) on a real Redis: cases open once, count
sightings, stay decided for the names they were decided on, and the guard warns only once."""

from __future__ import annotations

import pytest

from router.config import ImpostorSettings
from router.errors import NotFound
from router.impostors import ImpostorGuard
from router.runtime import Runtime

pytestmark = pytest.mark.cluster

SETTINGS = ImpostorSettings.model_validate(
    {
        "staff": {"telegram": [{"id": 100, "names": ["David Chen", "davidchen_coinly"]}]},
        "warning": {"en": "{name} is not staff ({staff})", "ru": "{name} не сотрудник"},
        "recheck_s": 60,
    }
)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def guard(rt: Runtime, clock: Clock, settings: ImpostorSettings = SETTINGS) -> ImpostorGuard:
    return ImpostorGuard(settings, rt.impostor_cases, clock)


async def test_a_lookalike_opens_one_case_and_warns_once(rt: Runtime) -> None:
    clock = Clock()
    g = guard(rt, clock)
    flag = await g.check("telegram", "bot", "7", ["Dаvid Chen", "dchen"], "chat -100", "ru")
    assert flag is not None and flag.opened and flag.verdict.level == "impostor"
    assert flag.warning == "Dаvid Chen не сотрудник"
    # The same names again within recheck_s: not even checked.
    assert await g.check("telegram", "bot", "7", ["Dаvid Chen", "dchen"], "chat -100") is None
    # Later (or in another process): counted on the same case, no second warning.
    clock.t += 61
    flag = await g.check("telegram", "bot", "7", ["Dаvid Chen", "dchen"], "chat -100")
    assert flag is not None and not flag.opened and flag.warning is None
    [case] = await rt.impostor_cases.open_cases()
    assert case.id == "telegram:bot:7"
    assert (case.names, case.level, case.staff_id, case.staff_name) == (
        ("Dаvid Chen", "dchen"),
        "impostor",
        "100",
        "David Chen",
    )
    assert case.seen == 2 and case.status == "open" and case.where == "chat -100"


async def test_staff_and_plain_members_open_nothing(rt: Runtime) -> None:
    g = guard(rt, Clock())
    assert await g.check("telegram", "bot", "100", ["David Chen Support"], "chat") is None  # staff by id
    assert await g.check("telegram", "bot", "8", ["Alice", "alice"], "chat") is None
    assert await rt.impostor_cases.open_cases() == []
    assert g.verify_text("telegram", "100", "@dchen").startswith("✅")
    assert "NOT" in g.verify_text("telegram", "7", "@fake")


async def test_a_dismissed_case_stays_closed_until_the_member_takes_new_names(rt: Runtime) -> None:
    clock = Clock()
    g = guard(rt, clock)
    await g.check("telegram", "bot", "9", ["David Chen"], "chat")  # a namesake
    previous = await rt.impostor_cases.decide("telegram:bot:9", "dismissed", "mod-anna")
    assert previous == "open"
    assert await rt.impostor_cases.open_cases() == []
    clock.t += 61
    flag = await g.check("telegram", "bot", "9", ["David Chen"], "chat")
    assert flag is not None and not flag.opened  # seen, still dismissed
    case = await rt.impostor_cases.get("telegram:bot:9")
    assert (case.status, case.decided_by, case.seen) == ("dismissed", "mod-anna", 2)
    # A rename to a staff lookalike opens it again.
    flag = await g.check("telegram", "bot", "9", ["David Chen | Support"], "chat")
    assert flag is not None and flag.opened and flag.warning is not None
    [case] = await rt.impostor_cases.open_cases()
    assert case.status == "open" and case.decided_by == ""
    await rt.impostor_cases.decide(case.id, "confirmed", "mod-anna")
    assert (await rt.impostor_cases.get(case.id)).status == "confirmed"
    with pytest.raises(NotFound):
        await rt.impostor_cases.decide("telegram:bot:nobody", "dismissed", "mod-anna")


async def test_review_verdicts_are_queued_without_a_group_warning(rt: Runtime) -> None:
    settings = SETTINGS.model_copy(update={"staff": {"discord": SETTINGS.staff["telegram"]}})
    g = guard(rt, Clock(), settings)
    flag = await g.check("discord", "main", "11", ["David Chen Kowalski Support"], "guild 1")
    assert flag is not None and flag.verdict.level == "review" and flag.opened and flag.warning is None
    off = guard(rt, Clock(), settings.model_copy(update={"enabled": False}))
    assert await off.check("discord", "main", "12", ["David Chen"], "guild 1") is None
