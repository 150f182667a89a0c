"""A real Redis Cluster on loopback for the tests (router/localcluster.py): the session fixture
``redis_cluster`` in tests/conftest.py is 3 primaries without replicas; the failover drill
(tests/router/test_failover.py) starts its own with one replica per primary.

Test modules marked ``pytest.mark.cluster`` run each test twice, on the single server and on this
cluster (the ``redis_url`` fixture); every test's prefix holds a hash tag, so its keys share a slot.
"""

from __future__ import annotations

from typing import cast

import redis as syncredis

from router.localcluster import LocalCluster as RedisClusterProcess
from router.redis import CLUSTER_SCHEME

__all__ = ["RedisClusterProcess", "sync_client"]


def sync_client(url: str) -> syncredis.Redis:
    """A synchronous client for a test's ``redis_url``: the single server's, or the cluster's."""
    if url.startswith(CLUSTER_SCHEME):
        host, _, port = url.removeprefix(CLUSTER_SCHEME).split(",")[0].rpartition(":")
        return cast(syncredis.Redis, syncredis.RedisCluster(host=host, port=int(port)))
    return syncredis.Redis.from_url(url)
