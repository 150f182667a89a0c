"""The README's round trip through the real `switchboard` command against the test Redis."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time

import pytest

from router.model import Button, OutboxItem, encode, new_id
from router.runtime import Runtime
from tests.conftest import SWITCHBOARD
from tests.router.helpers import presses


def sb(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SWITCHBOARD, *args], env=env, capture_output=True, text=True, timeout=60, check=check)


def wait_for(predicate: object, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_send_queue_claim_reply_sandbox_inbox(env: dict[str, str]) -> None:
    run = subprocess.Popen(
        [*SWITCHBOARD, "run", "--workers", "2"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        sb(env, "send", "--from", "alice", "my withdrawal has not arrived")

        def queued() -> bool:
            return len(json.loads(sb(env, "queue", "payments", "--json").stdout)["conversations"]) == 1

        wait_for(queued)
        [conv] = json.loads(sb(env, "queue", "payments", "--json").stdout)["conversations"]
        assert conv["sender"]["id"] == "alice" and conv["channel"] == "sandbox"
        claimed = json.loads(sb(env, "claim", "payments", "--agent", "bob", "--json").stdout)
        assert claimed == {"conversation": conv["id"]}
        assert sb(env, "claim", "payments", "--agent", "carol", check=False).returncode == 1  # empty now
        sb(env, "reply", conv["id"], "It is on its way", "--agent", "bob")

        def delivered() -> bool:
            return any(
                i["text"] == "It is on its way"
                for i in json.loads(sb(env, "sandbox", "inbox", "alice", "--json").stdout)
            )

        wait_for(delivered)
        shown = json.loads(sb(env, "show", conv["id"], "--json").stdout)
        assert [h["type"] for h in shown["history"]][:3] == ["inbound", "status", "outbound"]
        assert list(shown["deliveries"].values()) == ["delivered"]

        def two_workers() -> bool:
            health = json.loads(sb(env, "stats", "--json").stdout)["health"]
            return len({v["pid"] for k, v in health.items() if k.startswith("worker:")}) == 2

        wait_for(two_workers)  # --workers 2: two processes, for two cores
        assert sb(env, "check").returncode == 0
        sb(env, "close", conv["id"], "--agent", "bob")
        assert json.loads(sb(env, "show", conv["id"], "--json").stdout)["conversation"]["status"] == "closed"
    finally:
        run.send_signal(signal.SIGTERM)
        _, err = run.communicate(timeout=20)
    assert run.returncode == 0, err


def test_dead_letters_list_retry_drop(env: dict[str, str]) -> None:
    import redis

    client = redis.Redis.from_url(env["SWITCHBOARD_REDIS__URL"])
    prefix = env["SWITCHBOARD_PREFIX"]
    client.xgroup_create(prefix + "inbox", "routers", id="0", mkstream=True)
    client.xadd(prefix + "inbox", {"env": "{broken"})
    worker = subprocess.Popen([*SWITCHBOARD, "worker"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: client.xlen(prefix + "dead") == 1)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(20)
    [item] = json.loads(sb(env, "dead", "list", "--json").stdout)
    assert item["reason"].startswith("invalid envelope") and item["payload"] == "{broken"
    assert "1 dead letter(s) appended" in sb(env, "dead", "retry", item["id"]).stdout
    assert client.xlen(prefix + "dead") == 0 and client.xlen(prefix + "inbox") == 2
    odd = client.xadd(prefix + "dead", {"entry": "y", "reason": "r", "payload": "", "field:x": "1"}).decode()
    out = sb(env, "dead", "retry", "--all").stdout
    assert f"skipped {odd}: not an envelope (fields: x)" in out and "0 dead letter(s) appended" in out
    client.xdel(prefix + "dead", odd)
    client.xadd(prefix + "dead", {"entry": "x", "reason": "r", "payload": "p", "attempts": "1", "at": "0"})
    assert "1 dead letter(s) dropped" in sb(env, "dead", "drop", "--all").stdout
    client.close()


def test_send_to_a_full_inbox_says_so_and_exits_non_zero(env: dict[str, str]) -> None:
    import redis

    client = redis.Redis.from_url(env["SWITCHBOARD_REDIS__URL"])
    prefix = env["SWITCHBOARD_PREFIX"]
    client.xgroup_create(prefix + "inbox", "routers", id="0", mkstream=True)
    pipe = client.pipeline(transaction=False)
    for _ in range(1000):
        pipe.xadd(prefix + "inbox", {"env": "{}"})
    pipe.execute()
    result = sb({**env, "SWITCHBOARD_INBOX__MAXLEN": "1000"}, "send", "--from", "alice", "hello", check=False)
    assert result.returncode == 2
    assert "switchboard: inbox full: 1000 entries (inbox.maxlen 1000)" in result.stderr
    assert client.xlen(prefix + "inbox") == 1000
    client.close()


def test_bench_append_json_has_both_durabilities(env: dict[str, str]) -> None:
    out = json.loads(sb(env, "bench", "append", "--json", "--messages", "100").stdout)
    for kind in ("single", "burst"):
        fast, durable = out[f"{kind}_fast_msgs_per_s"], out[f"{kind}_durable_msgs_per_s"]
        assert fast > 0 and durable > 0
        assert out[f"{kind}_ratio"] == pytest.approx(durable / fast, rel=0.01)


def test_bad_configuration_is_a_clear_error(env: dict[str, str]) -> None:
    result = sb({**env, "SWITCHBOARD_WORKER__BATCH": "0"}, "stats", check=False)
    assert result.returncode == 2
    assert "worker.batch" in result.stderr and "greater than or equal to 1" in result.stderr


def test_secret_in_config_file_is_refused(env: dict[str, str], tmp_path: object) -> None:
    from pathlib import Path

    config = Path(str(tmp_path)) / "sb.toml"
    config.write_text('[redis]\nurl = "redis://:hunter2@localhost"\n')
    result = sb(env, "--config", str(config), "stats", check=False)
    assert result.returncode == 2 and "is a secret" in result.stderr and "hunter2" not in result.stderr


def test_nested_secret_in_config_file_is_refused(env: dict[str, str], tmp_path: object) -> None:
    from pathlib import Path

    config = Path(str(tmp_path)) / "sb.toml"
    config.write_text('[telegram.bots.main]\ntoken = "123:ABC"\n')
    result = sb(env, "--config", str(config), "stats", check=False)
    assert result.returncode == 2 and "telegram.bots.main.token is a secret" in result.stderr
    assert "123:ABC" not in result.stderr


def test_bench_json_has_the_figures_of_one_run(env: dict[str, str]) -> None:
    # A short run (its own Redis): the figures exist and are consistent, not that they are fast.
    out = sb(env, "bench", "--json", "--messages", "500")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    for key in ("ceiling_msgs_per_s", "router_msgs_per_s", "offered_msgs_per_s", "latency_p50_ms", "latency_p99_ms"):
        assert result[key] > 0, key
    assert abs(result["ratio"] - result["router_msgs_per_s"] / result["ceiling_msgs_per_s"]) < 0.01
    assert result["latency_p50_ms"] <= result["latency_p99_ms"] <= result["latency_max_ms"]
    assert result["worker_cpu_us_per_msg"] > 0 and result["redis_cpu_us_per_msg"] > 0
    # Both sides' AOF appends were measured (no rewrite inside): routing writes more than a move.
    assert result["router_aof_bytes_per_msg"] > result["ceiling_aof_bytes_per_msg"] > 0


async def test_sandbox_inbox_lists_the_buttons_and_press_records_one(env: dict[str, str], rt: Runtime) -> None:
    buttons = (
        Button(label="✅ This solved it", data="kb:42:solved"),
        Button(label="🙋 Talk to a person", data="kb:42:human"),
    )
    item = OutboxItem(
        id=new_id(), conversation="1", channel="sandbox", account="default", conversation_key="dora",
        text="10-30 minutes.", author="kb", meta={"user": "dora"}, buttons=buttons,
    )  # fmt: skip
    # Delivered as the sandbox adapter delivers: to the user's log in the channel's store.
    await rt.channel_context().store("sandbox").log_append("dora", encode(item).decode(), cap=10)

    listed = (await asyncio.to_thread(sb, env, "sandbox", "inbox", "dora")).stdout
    assert f"    [2] 🙋 Talk to a person    (switchboard sandbox press dora 2 --reply {item.id})" in listed
    pressed = await asyncio.to_thread(sb, env, "sandbox", "press", "dora", "2")
    assert pressed.stdout.strip() == "pressed '🙋 Talk to a person' as dora"
    wrong = await asyncio.to_thread(sb, env, "sandbox", "press", "dora", "3", check=False)
    assert wrong.returncode == 2 and f"reply {item.id} has 2 button(s), not a button 3" in wrong.stderr
    [recorded] = await presses(rt)
    assert (recorded.press.id, recorded.press.data, recorded.press.user) == (f"{item.id}.2", "kb:42:human", "dora")
