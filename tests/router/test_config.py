"""The shipped example configuration stays loadable and means what its comments say."""

from __future__ import annotations

from pathlib import Path

from router.config import load_settings

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "switchboard.example.toml"


def test_example_configuration_loads() -> None:
    settings = load_settings(EXAMPLE)
    assert settings.worker.claim_idle_ms == 30000
    assert settings.worker.forget_consumer_s == 3600
    assert settings.conversations.sla_s["P1"] == 900
