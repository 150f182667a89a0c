from __future__ import annotations

from collections import Counter
from typing import Any

from router.bench_failover import routed
from router.model import Envelope, Sender, new_id, now
from router.runtime import Runtime
from router.worker import Worker, Workers


def message(text: str, *, user: str = "u1", channel: str = "telegram", key: str | None = None, **kw: Any) -> Envelope:
    msg_id = new_id()
    return Envelope(
        id=msg_id,
        channel=channel,
        account=kw.pop("account", "bot1"),
        platform_id=kw.pop("platform_id", msg_id),
        conversation_key=key or user,
        sender=Sender(id=user, name=user.title(), attributes=kw.pop("attributes", {})),
        text=text,
        received_at=now(),
        **kw,
    )


async def drain(worker: Worker | Workers) -> int:
    """Route everything in the inbox (own pending entries first) and wait for the last batch;
    with ``Workers``, in every shard."""
    if isinstance(worker, Workers):
        return sum([await drain(w) for w in worker.each])
    total = 0
    while True:
        n = await worker.step()
        total += n
        if n == 0 and not worker._recover:
            n = await worker.step()
            total += n
            if n == 0:
                await worker.flush()
                return total


async def inbound_ids(rt: Runtime) -> Counter[str]:
    """Every inbound message id over every conversation's history (what the workers routed)."""
    return await routed(rt)
