"""The Lua scripts, each prefixed with lua/common.lua and registered once per client."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from router.errors import Conflict, NotFound


def _source(name: str) -> str:
    lua = resources.files("router") / "lua"
    return (lua / "common.lua").read_text() + "\n" + (lua / f"{name}.lua").read_text()


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Scripts:
    append: AsyncScript
    route: AsyncScript
    dead: AsyncScript
    lookup: AsyncScript
    conv: AsyncScript
    forget: AsyncScript

    @classmethod
    def register(cls, client: aioredis.Redis) -> Scripts:
        return cls(**{name: client.register_script(_source(name)) for name in cls.__annotations__})


def map_error(exc: Exception) -> Exception:
    """Turn a script's NOTFOUND/CONFLICT error reply into the project's exception."""
    text = str(exc)
    if text.startswith("NOTFOUND"):
        return NotFound(text.removeprefix("NOTFOUND").strip())
    if text.startswith("CONFLICT"):
        return Conflict(text.removeprefix("CONFLICT").strip())
    return exc


def argv(prefix: str, *args: Any) -> list[Any]:
    return [prefix, now_ms(), *args]


async def run_many(
    client: aioredis.Redis, script: AsyncScript, calls: Sequence[list[Any]], *, raise_on_error: bool = True
) -> list[Any]:
    """Run ``script`` once per argument list, pipelined in one round trip. A failed call raises
    (after every call ran), or with ``raise_on_error=False`` its result is its exception.

    EVALSHA in a plain pipeline: redis-py's script pipelines first ask SCRIPT EXISTS, a second
    round trip on every burst. A Redis that lost its script cache (a restart) answers NOSCRIPT
    without running the call: the script is loaded and those calls are sent again.
    """
    results: list[Any] = [None] * len(calls)
    todo = list(range(len(calls)))
    while todo:
        pipe = client.pipeline(transaction=False)
        for i in todo:
            pipe.evalsha(script.sha, 0, *calls[i])
        answers = await pipe.execute(raise_on_error=False)
        lost = [i for i, answer in zip(todo, answers, strict=True) if isinstance(answer, NoScriptError)]
        for i, answer in zip(todo, answers, strict=True):
            results[i] = answer
        if lost:
            await client.script_load(script.script)
        todo = lost
    if raise_on_error:
        for result in results:
            if isinstance(result, Exception):
                raise result
    return results
