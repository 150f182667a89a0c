"""What a Redis Cluster changes for the few commands that are not about one key.

A deployment's keys all sit in one slot (its prefix holds a hash tag: router/redis.py
check_cluster_prefix), so a server-wide command (INFO, CONFIG, SCAN) is asked of the node that
serves that slot. On a single server these are the plain commands.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster


def at_slot(client: aioredis.Redis, key: str) -> dict[str, Any]:
    """The keyword arguments that send a server command (INFO, CONFIG GET) to the node serving
    ``key``'s slot on a cluster (redis-py would ask a random node); none on a single server."""
    if isinstance(client, RedisCluster):
        return {"target_nodes": client.get_node_from_key(key)}
    return {}


def each_node(client: aioredis.Redis, keys: list[str]) -> list[dict[str, Any]]:
    """``at_slot`` of each node serving one of ``keys`` (the shards' keys), once per node; on a
    single server the one server's (no arguments)."""
    if not isinstance(client, RedisCluster):
        return [{}]
    nodes = {node.name: node for node in (client.get_node_from_key(key) for key in keys)}
    return [{"target_nodes": node} for _, node in sorted(nodes.items())]


async def scan_step(client: aioredis.Redis, cursor: int, *, match: str, count: int) -> tuple[int, list[bytes]]:
    """One SCAN call, its cursor a number to keep for the next one. On a cluster it scans the node
    serving the slot of ``match``'s hash tag (the deployment's prefix: all its keys are there),
    where redis-py's cluster SCAN walks every primary and returns a cursor per node."""
    if isinstance(client, RedisCluster):
        node = client.get_node_from_key(match)
        cursor, found = await node.execute_command("SCAN", cursor, "MATCH", match, "COUNT", count)
    else:
        cursor, found = await client.scan(cursor, match=match, count=count)
    return int(cursor), list(found)
