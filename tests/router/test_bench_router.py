"""``switchboard bench`` small: it ends, and its figures are there. The P1 lane's precheck sends a
share of the corpus to the lane, and the router's turns end on whole batches: before both were
handled, a run whose inbox count was not a multiple of the batch never ended."""

from __future__ import annotations

import io
import json

from router.bench import main
from router.config import load_settings


def test_a_small_router_bench_ends_with_its_figures() -> None:
    out = io.StringIO()
    settings = load_settings(None)
    assert settings.inbox.p1_lane != "off"  # some of the corpus goes to the lane
    assert main(settings, True, 3000, out=out) == 0
    result = json.loads(out.getvalue())
    assert result["messages"] == 3000
    assert result["ceiling_msgs_per_s"] > 0 and result["router_msgs_per_s"] > 0
    assert 0 < result["ratio"] < 1
