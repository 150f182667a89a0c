"""A policy shared by the SLA tests: an office in Berlin (lunch break, weekends, Christmas) and a
24/7 security desk."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from sla import Policy, load

BERLIN = ZoneInfo("Europe/Berlin")

POLICY = """\
version: 1
calendars:
  office:
    tz: Europe/Berlin
    hours:
      mon-fri: ["09:00-12:00", "13:00-18:00"]
    holidays:
      - 2026-12-25
      - {date: 2026-12-24, from: "13:00", name: Christmas Eve afternoon}
  nights:
    tz: Europe/Berlin
    hours: {mon-sun: ["00:00-06:00"]}
default_calendar: office
groups:
  security: 24/7
  night: nights
targets:
  P1: {first_response: 15m, next_response: 30m, resolution: 4h}
  P2: {first_response: 1h, next_response: 2h, resolution: 8h}
  P3: {first_response: 4h, next_response: 8h, resolution: 3d_placeholder}
  P4: {}
overrides:
  - tag: vip
    targets: {P3: {first_response: 1h}}
  - group: payments
    targets: {P3: {first_response: 2h, next_response: 4h}}
escalations:
  first_response:
    - at: 50%
      do: [{notify: group}]
    - at: 80%
      do: [{notify: supervisors}]
    - at: 100%
      do: [{raise_priority: 1}, {notify: supervisors}]
    - at: +30m
      do: [{move_group: leads}, {reassign: true}]
"""


def policy_text() -> str:
    return POLICY.replace("3d_placeholder", "24h")


@pytest.fixture(scope="session")
def policy() -> Policy:
    return load(policy_text(), "sla.yaml")


def berlin(*args: int) -> datetime:
    """A Berlin wall-clock time as a UTC instant."""
    return datetime(*args, tzinfo=BERLIN).astimezone(UTC)  # type: ignore[misc]
