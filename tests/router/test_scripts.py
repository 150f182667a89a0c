"""run_many: script calls written at once on one connection, against a real Redis."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import ConnectionError, ResponseError

from router.redis import connect
from router.runtime import Runtime
from router.scripts import Script, run_many
from tests.conftest import RedisProcess
from tests.cutproxy import cut_proxy

ECHO = "if ARGV[1] == 'fail' then return redis.error_reply('ERR asked to fail') end return {ARGV[1], #ARGV}"


async def test_every_call_runs_in_order_with_its_arguments(rt: Runtime) -> None:
    script = Script(rt.client.register_script(ECHO))
    long = "ü" * 5000
    calls: list[list[object]] = [["a", 7, b"\x00\xff"], [long], [b"c"]]  # str, int, bytes; a long one
    assert await run_many(rt.client, script, calls) == [[b"a", 3], [long.encode(), 1], [b"c", 1]]
    with pytest.raises(TypeError, match="bytes, str or int"):
        await run_many(rt.client, script, [[1.5]])


async def test_a_failed_call_is_its_exception_and_the_others_still_run(rt: Runtime) -> None:
    script = Script(rt.client.register_script(ECHO))
    results = await run_many(rt.client, script, [["x"], ["fail"], ["y"]], raise_on_error=False)
    assert results[0] == [b"x", 1] and results[2] == [b"y", 1]
    assert isinstance(results[1], ResponseError) and "asked to fail" in str(results[1])
    with pytest.raises(ResponseError, match="asked to fail"):
        await run_many(rt.client, script, [["x"], ["fail"]])
    # Every reply was read: the pooled connection is in step for the next command.
    assert await rt.client.echo(b"next") == b"next"


async def test_a_pooled_connection_killed_meanwhile_is_replaced_before_the_next_call(
    rt: Runtime, redis_proc: RedisProcess
) -> None:
    script = Script(rt.client.register_script(ECHO))
    await run_many(rt.client, script, [["warm"]])
    other = connect(redis_proc.url)
    try:
        assert await other.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes") >= 1
    finally:
        await other.aclose()
    # Nothing was sent on it: the pool finds it closed when it is taken and connects anew.
    assert await run_many(rt.client, script, [["again"]]) == [[b"again", 1]]


COUNT = "return redis.call('INCR', ARGV[1])"


async def test_a_lost_reply_fails_once_and_the_call_is_never_sent_again(rt: Runtime, redis_proc: RedisProcess) -> None:
    key = rt.keys.prefix + "runs"
    async with cut_proxy(redis_proc.url) as proxy:
        client = connect(proxy.url)
        try:
            script = Script(client.register_script(COUNT))
            await run_many(client, script, [[key]])
            proxy.cut_next_reply()
            # The script ran, its reply was lost: the caller hears of it once, and the client
            # did not send it again behind the caller's back (redis-py's default would, 3 times).
            with pytest.raises(ConnectionError):
                await run_many(client, script, [[key]])
            assert proxy.cuts == 1
            assert int(await rt.client.get(key)) == 2
            assert await run_many(client, script, [[key]]) == [3]
        finally:
            await client.aclose()


async def test_a_call_cancelled_while_redis_runs_it_leaves_no_reply_behind(rt: Runtime) -> None:
    slow = Script(rt.client.register_script("local i = 0 while i < 2e7 do i = i + 1 end return 'slow'"))
    echo = Script(rt.client.register_script(ECHO))
    await run_many(rt.client, slow, [[rt.keys.prefix]])  # loaded: the next call goes straight to running it
    task = asyncio.create_task(run_many(rt.client, slow, [[rt.keys.prefix]]))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # Its connection went back to the pool closed: the next call cannot read 'slow' as its reply.
    assert await run_many(rt.client, echo, [["fresh"]]) == [[b"fresh", 1]]
