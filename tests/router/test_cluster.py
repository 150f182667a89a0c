"""Switchboard on a real 3-primary Redis Cluster (tests/cluster.py): one slot per deployment prefix."""

from __future__ import annotations

import contextlib

import pytest
import redis as syncredis

from router.cluster import at_slot, scan_step
from router.config import Settings
from router.errors import ConfigError
from router.model import new_id
from router.runtime import Runtime
from router.scripts import Script, run_many
from tests.cluster import RedisClusterProcess

# Each call's reply names the node that ran it, and the call reads a key derived from its prefix
# (undeclared, as Switchboard's scripts do): on another node than the slot's it would fail.
WHERE = "redis.call('GET', ARGV[1] .. 'x') return {ARGV[1], redis.call('INFO', 'server'):match('tcp_port:(%d+)')}"


def _port_of_slot(cluster: RedisClusterProcess, slot: int) -> int:
    client = syncredis.Redis(port=cluster.ports[0])
    try:
        for start, end, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
            if start <= slot <= end:
                return int(primary[1])
    finally:
        client.close()
    raise AssertionError(f"slot {slot} not served")


def test_a_cluster_prefix_without_a_hash_tag_is_refused(redis_cluster: RedisClusterProcess) -> None:
    for prefix in ("sb:", "{}:", "{sb:", "{}sb}:"):
        with pytest.raises(ConfigError, match="hash tag"):
            Runtime(Settings(prefix=prefix), redis_cluster.url)
    Runtime(Settings(prefix="sb:"), "redis://127.0.0.1:1/0")  # a single server takes any prefix


async def test_script_calls_run_on_the_node_of_their_prefix_slot(
    redis_cluster: RedisClusterProcess, settings: Settings
) -> None:
    async with Runtime(settings, redis_cluster.url) as rt:
        script = Script(rt.client.register_script(WHERE))
        nodes = set()
        for _ in range(12):  # prefixes in slots all over the cluster
            prefix = f"{{t{new_id()}}}:"
            expected = _port_of_slot(redis_cluster, rt.client.keyslot(prefix))
            nodes.add(expected)
            answer = [prefix.encode(), str(expected).encode()]
            assert await script(args=[prefix]) == answer
            assert await run_many(rt.client, script, [[prefix], [prefix]]) == [answer, answer]
        assert len(nodes) > 1


async def test_calls_to_a_slot_that_moved_are_sent_again_to_its_new_node(
    redis_cluster: RedisClusterProcess, settings: Settings
) -> None:
    async with Runtime(settings, redis_cluster.url) as rt:
        script = Script(rt.client.register_script(WHERE))
        # SETSLOT writes nodes.conf: on a loaded CI machine it took longer than the 5 s default timeout.
        with contextlib.ExitStack() as clients:
            by_port = {
                p: clients.enter_context(syncredis.Redis(port=p, decode_responses=True, socket_timeout=60))
                for p in redis_cluster.ports
            }
            # A slot with no key, which can be given to another node as it is. The cluster is shared
            # by the whole run: another test's keys may hash to a new prefix's slot (a CI run hit one).
            for _ in range(100):
                prefix = f"{{t{new_id()}}}:"
                slot = rt.client.keyslot(prefix)
                owner = _port_of_slot(redis_cluster, slot)
                if by_port[owner].execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 0:
                    break
            else:
                raise AssertionError("no empty slot in 100 tries")
            assert (await run_many(rt.client, script, [[prefix]]))[0][1] == str(owner).encode()
            other = next(p for p in redis_cluster.ports if p != owner)
            ids = {p: c.execute_command("CLUSTER", "MYID") for p, c in by_port.items()}
            for target in (other, owner):  # moved away, then back: the cluster is left as it was
                for client in by_port.values():
                    client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[target])
                # The client still maps the slot to its old node: answered MOVED, sent again.
                assert (await run_many(rt.client, script, [[prefix], [prefix]]))[1][1] == str(target).encode()


async def test_server_commands_and_scans_ask_the_node_of_the_prefix_slot(
    redis_cluster: RedisClusterProcess, settings: Settings
) -> None:
    async with Runtime(settings, redis_cluster.url) as rt:
        for _ in range(12):
            prefix = f"{{t{new_id()}}}:"
            port = _port_of_slot(redis_cluster, rt.client.keyslot(prefix))
            assert (await rt.client.info("server", **at_slot(rt.client, prefix)))["tcp_port"] == port
            await rt.client.set(prefix + "conv:1", 1)
            # One number for a cursor, walking the slot's node to the end (other tests' keys too).
            cursor, found = await scan_step(rt.client, 0, match=prefix + "conv:*", count=100)
            while cursor:
                cursor, more = await scan_step(rt.client, cursor, match=prefix + "conv:*", count=100)
                found += more
            assert found == [f"{prefix}conv:1".encode()]
