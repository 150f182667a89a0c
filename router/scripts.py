"""The Lua scripts, each prefixed with the consumer-group names and lua/common.lua, registered once per client."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import Connection
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MovedError, NoScriptError, RedisError, ResponseError, SlotNotCoveredError
from redis.exceptions import TimeoutError as RedisTimeoutError

from router.errors import Conflict, NotFound
from router.keys import ROUTER_GROUP, SENDER_GROUP


def _source(name: str) -> str:
    lua = resources.files("router") / "lua"
    # The consumer-group names, from router/keys.py: defined once, for Python and Lua alike.
    groups = f"local ROUTER_GROUP, SENDER_GROUP = '{ROUTER_GROUP}', '{SENDER_GROUP}'\n"
    return groups + (lua / "common.lua").read_text() + "\n" + (lua / f"{name}.lua").read_text()


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Script:
    """A registered script, called with its arguments (``argv``: the key prefix first).

    The prefix goes as KEYS[1] too: the scripts derive every key from it (ARGV[1]), and the one
    declared key sends the call to the node of the prefix's slot on a Redis Cluster, where the
    prefix holds a hash tag (router/redis.py check_cluster_prefix). A single server ignores it.
    """

    registered: AsyncScript

    @property
    def sha(self) -> str:
        return str(self.registered.sha)

    @property
    def script(self) -> str:
        return str(self.registered.script)  # registered from text (_source)

    async def __call__(self, *, args: Sequence[Any]) -> Any:
        return await self.registered(keys=args[:1], args=args)


@dataclass(frozen=True)
class Scripts:
    append: Script
    route: Script
    dead: Script
    lookup: Script
    conv: Script
    forget: Script
    lease: Script
    backlog: Script
    retention: Script
    archive: Script
    requeue: Script
    fenced_lease: Script
    press: Script
    answer: Script
    csat: Script
    assign: Script
    impostor: Script
    incident: Script
    unreadable: Script

    @classmethod
    def register(cls, client: aioredis.Redis) -> Scripts:
        return cls(**{name: Script(client.register_script(_source(name))) for name in cls.__annotations__})


def map_error(exc: Exception) -> Exception:
    """Turn a script's NOTFOUND/CONFLICT error reply into the project's exception."""
    text = str(exc)
    if text.startswith("NOTFOUND"):
        return NotFound(text.removeprefix("NOTFOUND").strip())
    if text.startswith("CONFLICT"):
        return Conflict(text.removeprefix("CONFLICT").strip())
    return exc


def argv(prefix: str, *args: Any, at: int | None = None) -> list[Any]:
    """A script call's arguments: the prefix, now in ms (``at``: an injected clock's), ``args``."""
    return [prefix, now_ms() if at is None else at, *args]


#: Rounds of sending again the calls a Redis Cluster redirected (MOVED: the slot moved to another
#: node, the call did not run), each after a refresh of the slot map, before their error stands.
MOVED_ROUNDS = 16


async def run_many(
    client: aioredis.Redis,
    script: Script,
    calls: Sequence[list[Any]],
    *,
    raise_on_error: bool = True,
    then: Sequence[Any] = (),
) -> list[Any]:
    """Run ``script`` once per argument list, pipelined in one round trip. A failed call raises
    (after every call ran), or with ``raise_on_error=False`` its result is its exception.
    ``then``: one more command sent after the calls on the same connection (WAIT and WAITAOF wait
    for that connection's writes); its reply (or exception) is the last result.

    EVALSHA calls written at once on one connection, not through a redis-py pipeline: its script
    pipelines first ask SCRIPT EXISTS, a second round trip on every burst, and packing the
    worker's calls (~400 arguments each) took it 3 µs a message against 1 here. A Redis that lost
    its script cache (a restart) answers NOSCRIPT without running the call: the script is loaded
    and those calls are sent again. On a Redis Cluster the calls go to the node of their prefix's
    slot (all calls share the prefix, so one slot), and a call answered MOVED (the slot moved: it
    did not run) is sent again after the slot map is refreshed.
    """
    results: list[Any] = [None] * len(calls)
    todo = list(range(len(calls)))
    last: list[Any] = []
    moved_rounds = 0
    while todo:
        packed = _pack_evalsha(script.sha, [calls[i] for i in todo]) + (_pack(then) if then else b"")
        answers = await _exchange(client, packed, len(todo) + bool(then), calls[todo[0]][0])
        last = answers[len(todo) :]
        answers = answers[: len(todo)]
        for i, answer in zip(todo, answers, strict=True):
            results[i] = answer
        lost = [i for i, answer in zip(todo, answers, strict=True) if isinstance(answer, NoScriptError)]
        moved = [i for i, answer in zip(todo, answers, strict=True) if isinstance(answer, MovedError)]
        if lost:
            await client.script_load(script.script)
        if moved and isinstance(client, RedisCluster) and moved_rounds < MOVED_ROUNDS:
            moved_rounds += 1
            await client.nodes_manager.initialize()
            lost += moved
        todo = sorted(lost)
    results += last
    if raise_on_error:
        for result in results:
            if isinstance(result, Exception):
                raise result
    return results


async def run_per_prefix(client: aioredis.Redis, script: Script, calls: Sequence[list[Any]]) -> list[Any]:
    """``run_many`` of calls with different prefixes (shards): a pipelined round per prefix, all
    at once; the results in the calls' order, a failed call raising after every one ran."""
    at: dict[Any, list[int]] = {}
    for i, call in enumerate(calls):
        at.setdefault(call[0], []).append(i)
    answers = await asyncio.gather(*(run_many(client, script, [calls[i] for i in idx]) for idx in at.values()))
    results: list[Any] = [None] * len(calls)
    for idx, got in zip(at.values(), answers, strict=True):
        for i, result in zip(idx, got, strict=True):
            results[i] = result
    return results


def _bulk(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, int):
        return b"%d" % value
    raise TypeError(f"a script argument must be bytes, str or int, not {type(value).__name__}")


def _bulks(parts: list[bytes], values: Sequence[Any]) -> None:
    """Add ``values`` to ``parts`` as RESP bulk strings."""
    for value in map(_bulk, values):
        parts += (b"$%d\r\n" % len(value), value, b"\r\n")


def _pack(command: Sequence[Any]) -> bytes:
    """The RESP of one command."""
    parts = [b"*%d\r\n" % len(command)]
    _bulks(parts, command)
    return b"".join(parts)


def _pack_evalsha(sha: str, calls: Sequence[list[Any]]) -> bytes:
    """The RESP of one ``EVALSHA sha 1 prefix *args`` per call (args[0] is the prefix: Script)."""
    head = b"$7\r\nEVALSHA\r\n$40\r\n" + sha.encode() + b"\r\n$1\r\n1\r\n"
    parts: list[bytes] = []
    for args in calls:
        parts += (b"*%d\r\n" % (len(args) + 4), head)
        _bulks(parts, args[:1])
        _bulks(parts, args)
    return b"".join(parts)


async def _exchange(client: aioredis.Redis, packed: bytes, replies: int, key: Any) -> list[Any]:
    """Send ``packed`` commands on a pooled connection and read their ``replies``; an error reply
    is returned as its exception. A lost connection is retried as redis-py retries a command.
    On a Redis Cluster the connection is one of the node serving ``key``'s slot, and a connection
    error refreshes the slot map before it is raised."""
    if isinstance(client, RedisCluster):
        node = client.get_node_from_key(key)
        if node is None:
            raise SlotNotCoveredError(f"no node serves the slot of {key!r}")
        conn = node.acquire_connection()
        try:
            return await _send(conn, packed, replies)
        except (RedisConnectionError, RedisTimeoutError):
            # The node may be gone (a primary killed, its replica promoted): refresh the slot map,
            # as redis-py does after its own commands fail so, or every later call would go to
            # the dead node again. The error stands; the caller's loop backs off and retries.
            with contextlib.suppress(RedisError, OSError):
                await client.nodes_manager.initialize(last_failed_node_name=node.name)
            raise
        finally:
            node.release(conn)
    pool = client.connection_pool
    conn = await pool.get_connection()
    try:
        return await _send(conn, packed, replies)
    finally:
        await pool.release(conn)


async def _send(conn: Connection, packed: bytes, replies: int) -> list[Any]:

    async def once() -> list[Any]:
        await conn.send_packed_command(packed)
        answers: list[Any] = []
        for _ in range(replies):
            try:
                answers.append(await conn.read_response())
            except ResponseError as exc:
                answers.append(exc)
        return answers

    # A read or write that fails or is cancelled closes the connection (redis-py), so one with
    # replies left unread never goes back to the pool open.
    answers: list[Any] = await conn.retry.call_with_retry(once, lambda _error: conn.disconnect())
    return answers
