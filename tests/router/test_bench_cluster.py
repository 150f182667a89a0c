"""``switchboard bench cluster`` on a small run: the work of a sharded deployment is measured on
every primary, and no script wrote outside its shard's slot."""

from __future__ import annotations

import io
import json

from router.bench_cluster import main
from router.config import Settings


def test_the_cluster_bench_measures_every_primary_and_every_key_is_in_its_shard_slot(settings: Settings) -> None:
    out = io.StringIO()
    assert main(settings, True, 1200, 6, 3, out) == 0
    result = json.loads(out.getvalue())
    assert result["messages"] == 1200 and result["shards"] == 6
    per_primary = result["cluster_redis_cpu_us_per_msg_per_primary"]
    assert len(per_primary) == 3 and all(us > 0 for us in per_primary.values())
    # 6 shards over 3 contiguous slot ranges: two a primary, so every primary routes a share.
    assert all(share > 0.1 for share in result["messages_share_per_primary"].values())
    assert abs(sum(result["messages_share_per_primary"].values()) - 1.0) < 0.01
    assert result["keys_outside_their_shard_slot"] == 0
    assert result["single_redis_cpu_us_per_msg"] > 0 and result["cpu_sum_ratio"] > 0
