"""SLA policy files: what loads, and every refusal with its position and reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from sla import PolicyError, load
from tests.sla.conftest import policy_text

MINIMAL = """\
version: 1
targets:
  P1: {first_response: 15m}
  P2: {first_response: 1h}
  P3: {first_response: 1h30m, resolution: 86400}
  P4: {}
"""


def errors(text: str) -> list[str]:
    with pytest.raises(PolicyError) as info:
        load(text, "p.yaml")
    return [str(e) for e in info.value.errors]


def test_minimal_policy_is_24_7_utc() -> None:
    policy = load(MINIMAL)
    assert policy.calendar("anything").around_the_clock
    assert policy.target("first_response", 3, "g") == 5400
    assert policy.target("resolution", 3, "g") == 86400
    assert policy.ladder("first_response") == ()


def test_version_is_the_digest_of_the_text() -> None:
    assert load(MINIMAL).version == load(MINIMAL).version
    assert load(MINIMAL).version != load(MINIMAL + "# changed\n").version
    assert len(load(policy_text()).version) == 12


def test_ladder_points_compile() -> None:
    steps = load(policy_text()).ladder("first_response")
    assert [(s.point, s.seconds(3600)) for s in steps] == [("50%", 1800), ("80%", 2880), ("100%", 3600), ("+30m", 5400)]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ("P1: {first_response: 15m}", "P1: {first_response: 15 min}"),
            "p.yaml:3:24: targets.P1.first_response: bad duration '15 min'",
        ),
        (
            ("P1: {first_response: 15m}", "P1: {first_response: 0}"),
            "targets.P1.first_response: a target must be longer than 0 seconds",
        ),
        (
            ("P1: {first_response: 15m}", "P1: {first_reply: 15m}"),
            "p.yaml:3:8: targets.P1: unknown field 'first_reply'",
        ),
        (("P4: {}", "P5: {}"), "bad priority 'P5'"),
        (("  P4: {}\n", ""), "p.yaml:3:3: targets: targets for P4 missing"),
        (("version: 1", "version: 2"), "p.yaml:1:10: version: Input should be 1"),
    ],
)
def test_target_errors(change: tuple[str, str], expected: str) -> None:
    found = errors(MINIMAL.replace(*change))
    assert any(expected in e for e in found), found


CALENDAR = """\
calendars:
  office:
    tz: {tz}
    hours: {hours}
    holidays: [{holiday}]
groups: {{payments: {group}}}
"""


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"tz": "Mars/Olympus"}, "p.yaml:9:9: calendars.office.tz: unknown time zone 'Mars/Olympus'"),
        ({"hours": '{mon: ["09:00-12:00", "11:00-13:00"]}'}, "mon: 09:00-12:00 overlaps 11:00-13:00"),
        ({"hours": '{mon: ["12:00-09:00"]}'}, "interval '12:00-09:00' ends before it starts"),
        ({"hours": '{mon: ["9-12"]}'}, "bad interval '9-12': write HH:MM-HH:MM"),
        ({"hours": '{mon: ["09:00-25:00"]}'}, "bad interval '09:00-25:00'"),
        ({"hours": '{mon-fri: ["09:00-12:00"], wed: ["13:00-14:00"]}'}, "wed is given twice (mon-fri and wed)"),
        ({"hours": '{fri-mon: ["09:00-12:00"]}'}, "bad day range 'fri-mon'"),
        ({"hours": '{monday: ["09:00-12:00"]}'}, "bad day 'monday'"),
        ({"hours": "{mon: []}"}, "no opening hours at all"),
        (
            {"holiday": "2026-02-30"},
            "p.yaml:11:16: invalid YAML: 2026-02-30 is not a timestamp (day is out of range for month)",
        ),
        ({"holiday": '{date: 2026-12-24, from: "18:00", to: "13:00"}'}, "a holiday's from must be before its to"),
        ({"group": "ofice"}, "p.yaml:12:20: groups.payments: unknown calendar 'ofice' (known: 24/7, office)"),
    ],
)
def test_calendar_errors(values: dict[str, str], expected: str) -> None:
    fields = {"tz": "Europe/Berlin", "hours": '{mon-fri: ["09:00-18:00"]}', "holiday": "2026-12-25", "group": "office"}
    found = errors(MINIMAL + CALENDAR.format(**{**fields, **values}))
    assert any(expected in e for e in found), found


LADDER = """\
escalations:
  first_response:
    - at: 80%
      do: [{{notify: supervisors}}]
    - at: {at}
      do: [{action}]
"""


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"at": "+30 minutes"}, "escalations.first_response.1.at: bad duration"),
        ({"at": "half"}, "bad point 'half': a share of the target (80%) or an offset from it"),
        ({"at": "0%"}, "a point must be above 0%"),
        ({"at": "80%"}, "first_response: point 80% given twice"),
        ({"action": "{page: someone}"}, "an action is a mapping with one key of notify, raise_priority"),
        ({"action": "{raise_priority: 4}"}, "raise_priority: Input should be less than or equal to 3"),
        ({"action": "{reassign: false}"}, "reassign: Input should be True"),
        ({"action": "{notify: x, reassign: true}"}, "an action is a mapping with one key"),
    ],
)
def test_ladder_errors(values: dict[str, str], expected: str) -> None:
    fields = {"at": "100%", "action": "{move_group: leads}"}
    found = errors(MINIMAL + LADDER.format(**{**fields, **values}))
    assert any(expected in e for e in found), found


def test_every_error_at_once_sorted_by_position() -> None:
    text = MINIMAL.replace("15m", "soon").replace("1h}", "-1h}") + "overrides: [{targets: {P1: {}}}]\n"
    found = errors(text)
    assert len(found) == 3, found
    assert "targets.P1.first_response: bad duration 'soon'" in found[0]
    assert "targets.P2.first_response: bad duration '-1h'" in found[1]
    assert "overrides.0: an override names exactly one of tag or group" in found[2]


def test_yaml_problems() -> None:
    assert errors("version: [1\n")[0].startswith("p.yaml:2:1: invalid YAML")
    assert errors("- 1\n") == ["p.yaml:1:1: the SLA policy must be a YAML mapping"]
    duplicate = MINIMAL.replace("  P4: {}\n", "  P4: {}\n  P1: {}\n")
    assert "p.yaml:7:3: duplicate key 'P1'" in errors(duplicate)


def test_the_documented_example_loads() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "sla.md").read_text(encoding="utf-8")
    example = doc.split("```yaml\n", 1)[1].split("```", 1)[0]
    policy = load(example, "docs/sla.md")
    assert policy.target("first_response", 1, "security", ()) == 300  # the group override
    assert policy.target("first_response", 3, "payments", {"vip"}) == 1800  # the tag override
    assert policy.calendar("verification").tz.key == "Asia/Shanghai"
    assert [s.point for s in policy.ladder("first_response")] == ["50%", "80%", "100%", "+30m"]
