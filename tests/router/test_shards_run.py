"""The README's round trip through real `switchboard` processes on the 3-primary cluster with a
deployment of 4 shards (once: it takes ~45 s; the single server runs it with one in test_cli.py)."""

from __future__ import annotations

import pytest

from tests.router import test_cli


@pytest.fixture
def redis_backend() -> str:
    return "cluster-4-shards"


def test_the_readme_round_trip_on_the_cluster_with_four_shards(env: dict[str, str]) -> None:
    """`switchboard run --workers 2` (each worker a loop per shard), send, queue, claim, reply,
    the sandbox's delivery, show, stats, check and close."""
    assert env["SWITCHBOARD_REDIS__SHARDS"] == "4" and env["SWITCHBOARD_REDIS__URL"].startswith("redis+cluster://")
    test_cli.test_send_queue_claim_reply_sandbox_inbox(env)
