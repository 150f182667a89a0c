"""The crash and failover drill, small: a Redis Cluster of 3 primaries with a replica each, 3
worker processes (one SIGKILLed), the primary of the deployment's slot failed over mid-run
(router/bench_failover.py; ``switchboard bench failover`` runs it with 20,000 messages)."""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from router.bench import corpus
from router.bench_failover import drill, routed
from router.config import Settings
from router.localcluster import Failover, LocalCluster
from router.redis import TRANSIENT_ERRORS
from router.runtime import Runtime
from router.worker import Worker
from tests.conftest import HUNG_S, ROOT, ROUTER_RULES, print_tasks

MESSAGES = 2000
WORKERS = 3

# redis-py warns about the connections a killed or demoted node closed under it; that is the point
# here. Each test collects them at its end (_collect), under this filter.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


async def _collect() -> None:
    """Let the event loop see the closed connections go (their transports are the loop's until
    then), and collect them now, under this module's filter, not in the next test."""
    for _ in range(5):
        await asyncio.sleep(0.1)
        gc.collect()


@pytest_asyncio.fixture(scope="module", loop_scope="session", autouse=True)
async def _collect_at_the_end() -> AsyncIterator[None]:
    """After the module's last test, on the tests' event loop (the session's), let the loop finish
    closing what the failovers left and collect it with its ResourceWarnings silenced: left to a
    later garbage collection, it failed whichever test of another module that fell in
    (filterwarnings = error)."""
    yield
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        for _ in range(5):
            await asyncio.sleep(0.1)
            gc.collect()


@pytest.fixture(autouse=True)
async def _watchdog() -> AsyncIterator[None]:
    """As the ``rt`` fixture's: the stacks of every task when a drill runs past ``HUNG_S`` (one
    timed out once in a fresh-clone CI run, with nothing to say where it waited)."""
    handle = asyncio.get_running_loop().call_later(HUNG_S, print_tasks)
    yield
    handle.cancel()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path_factory.mktemp("failover"), replicas=1) as c:
        yield c


@pytest.fixture
def worker_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env.update(SWITCHBOARD_RULES__FILE=str(ROUTER_RULES), SWITCHBOARD_WEB__PORT="0", PYTHONPATH=str(ROOT))
    return env


async def test_manual_failover_and_a_killed_worker_route_every_message_once(
    cluster: LocalCluster, settings: Settings, worker_env: dict[str, str], tmp_path: Path
) -> None:
    """CLUSTER FAILOVER waits until the replica has every write: nothing acknowledged is lost.
    Found by this drill: the workers' blocked XREADGROUP was answered UNBLOCKED by the primary
    turned replica, and every worker process stopped on it."""
    result = await drill(
        cluster, settings, "manual", MESSAGES, WORKERS, rate=1000, env=worker_env, logs=tmp_path, settle_s=60
    )
    assert result["failover_s"] < 10
    assert result["acknowledged"] == MESSAGES
    assert (result["routed_once"], result["lost"], result["duplicated"]) == (MESSAGES, 0, 0), result
    assert result["lost_acknowledged"] == 0 and result["dead_letters"] == 0
    assert result["surviving_workers_exit"] == [0] * (WORKERS - 1), "the other workers rode it out"
    await _collect()


async def test_killed_primary_and_a_killed_worker_lose_at_most_the_unreplicated_appends(
    cluster: LocalCluster, settings: Settings, worker_env: dict[str, str], tmp_path: Path
) -> None:
    """A primary SIGKILLed: its replica is promoted after the node timeout. An acknowledged append
    the replica had not received is lost (asynchronous replication): counted, never doubled; every
    message that is in the inbox is routed exactly once."""
    result = await drill(
        cluster, settings, "kill", MESSAGES, WORKERS, rate=1000, env=worker_env, logs=tmp_path, settle_s=60
    )
    assert 1 < result["failover_s"] < 20  # the node timeout (2 s) and the election
    assert result["append_retries"] > 0, "appends failed while no primary served the slot"
    assert result["acknowledged"] == MESSAGES
    assert result["duplicated"] == 0, result
    assert result["lost"] == result["lost_acknowledged"], "only what the failover itself lost"
    assert result["routed_once"] + result["lost"] == MESSAGES
    assert result["dead_letters"] == 0
    assert result["surviving_workers_exit"] == [0] * (WORKERS - 1)
    await _collect()


@pytest.mark.parametrize("replicas", [0, 1])
# The drill's own bounded waits (the workers' first heartbeats 60 s, the failover and the old
# primary's restart, routing settled 60 s) add up past the suite's 120 s. A fresh-clone CI run
# of stop 34 timed out at 120 s here, with replicas = 1; whether slow or stuck was not found.
@pytest.mark.timeout(300)
async def test_a_lagging_replica_loses_acknowledged_appends_unless_they_wait_for_it(
    cluster: LocalCluster, settings: Settings, worker_env: dict[str, str], tmp_path: Path, replicas: int
) -> None:
    """The loss window, made visible: the replica misses the primary's last 0.2 s of writes when
    the primary is killed. Without WAIT the appends acknowledged in those 0.2 s are lost (never
    routed, never doubled); with ``inbox.replicas = 1`` an append is acknowledged only once the
    replica has it, so none is."""
    settings.inbox.replicas = replicas
    result = await drill(
        cluster, settings, "kill-lagging", MESSAGES, WORKERS, rate=1000, env=worker_env, logs=tmp_path, settle_s=60
    )
    assert result["acknowledged"] == MESSAGES and result["duplicated"] == 0, result
    assert result["lost"] == result["lost_acknowledged"]
    assert result["routed_once"] + result["lost"] == MESSAGES
    if replicas:
        assert result["lost"] == 0, result
    else:
        # ~1,000 msgs/s acknowledged for 0.2 s: the bursts of those 200 ms, no older one.
        assert 0 < result["lost"] <= 400, result
        assert 0 < result["loss_window_ms"] < 1000
    await _collect()


async def test_appends_alone_reach_the_promoted_replica(cluster: LocalCluster, settings: Settings) -> None:
    """An appender sends nothing but script calls, on connections of the slot's node that it
    takes itself (router/scripts.py): after the primary was killed, every call went to the dead
    node again, for ever, until a connection error there refreshed the slot map."""
    async with Runtime(settings, cluster.url) as rt:
        await rt.inbox.append_many(corpus(10, account="before"))
        killed: list[Failover] = []
        killer = threading.Thread(target=lambda: killed.append(cluster.kill_primary(rt.keys.inbox)))
        killer.start()
        try:
            await asyncio.sleep(0.2)
            deadline = time.monotonic() + 30
            while True:
                try:
                    await rt.inbox.append_many(corpus(10, account="after"))
                    break
                except TRANSIENT_ERRORS:
                    assert time.monotonic() < deadline, "appends never reached the promoted replica"
                    await asyncio.sleep(0.05)
        finally:
            await asyncio.to_thread(killer.join)
        [done] = killed
        assert cluster.primary_of(rt.keys.inbox) == done.new
        assert await rt.client.xlen(rt.keys.inbox) == 20
        await asyncio.to_thread(cluster.restart, done.old)  # the cluster whole again for the next test
    await _collect()


async def test_a_worker_blocked_in_its_read_rides_out_a_manual_failover(
    cluster: LocalCluster, settings: Settings
) -> None:
    """The primary turned replica ends a blocked XREADGROUP with an UNBLOCKED error reply, which
    the worker took for a bug and stopped on (the drill finds it only when a worker happens to be
    blocked at that moment; here it is, for 10 s)."""
    settings.worker.block_ms = 10_000
    async with Runtime(settings, cluster.url) as rt:
        worker = Worker(rt)
        task = asyncio.create_task(worker.run())
        try:
            await rt.inbox.append_many(corpus(5, account="before"))
            await _until_routed(rt, 5)
            await asyncio.sleep(0.3)  # nothing left to read: blocked in XREADGROUP now
            await asyncio.to_thread(cluster.failover, rt.keys.inbox)
            while True:
                try:
                    await rt.inbox.append_many(corpus(5, account="after"))
                    break
                except TRANSIENT_ERRORS:
                    await asyncio.sleep(0.05)
            await _until_routed(rt, 10)
            assert not task.done(), "the worker kept running"
        finally:
            worker.stop()
            await asyncio.wait_for(task, 15)
        assert max((await routed(rt)).values()) == 1
    await _collect()


async def _until_routed(rt: Runtime, n: int) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            if sum((await routed(rt)).values()) >= n:
                return
        except TRANSIENT_ERRORS:
            pass  # this poll's own connection to the node that just changed roles (the test's, not the worker's)
        assert time.monotonic() < deadline, f"{n} messages not routed"
        await asyncio.sleep(0.05)
