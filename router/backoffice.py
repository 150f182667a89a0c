"""The stores and readers the console works through: every Redis access of the web console and API
goes through here (nothing under router/console/ holds the client), on a pool of its own.

Built from a ``Runtime`` (``Backoffice(rt, settings.web)``): a runtime on the same Redis with its
own pool (``Runtime.for_console``), so that a burst of console requests queues for its own
connections and never takes the workers' and adapters'; live streams block in XREAD on yet another
pool (router/events.py). ``start`` enters it (the session secret may live in Redis), ``close``
releases both pools.
"""

from __future__ import annotations

import time
from typing import Any

from router.accounts import LoginLimiter, Sessions, Users, load_secret
from router.actions import Actions
from router.admission import Senders
from router.answerer import shadow_answers
from router.audit import Audit
from router.canned import CannedReplies
from router.config import WebSettings
from router.conversations import Conversations
from router.events import GroupEvents
from router.impostors import ImpostorCases
from router.inbox import Inbox
from router.incidents import Incidents
from router.kbstore import KnowledgeBaseStore
from router.keys import STREAMS, Keys, entry_order
from router.links import PressLinks
from router.modelstore import ModelStore
from router.outbox import FailedReply, failed_replies, retry_failed
from router.presence import Presence
from router.queues import Queues
from router.redis import connect
from router.rulestore import RuleStore
from router.runtime import Runtime
from router.samples import Samples
from router.slastore import SlaPolicies
from router.stats import StatsReader
from router.surge import Suggestion, suggestions
from rules import Engine


class Backoffice:
    def __init__(self, rt: Runtime, web: WebSettings) -> None:
        self._rt = own = rt.for_console(web)
        self.keys: Keys = own.keys
        self.inbox: Inbox = own.inbox
        self.conversations: Conversations = own.conversations
        self.queues: Queues = own.queues
        self.rules: RuleStore = own.rules
        self.models: ModelStore = own.models
        self.kb: KnowledgeBaseStore = own.kb
        self.stats: StatsReader = own.stats
        self.impostors: ImpostorCases = own.impostor_cases
        self.senders: Senders = own.senders
        self.incidents: Incidents = own.incidents
        self.canned = CannedReplies(own.client, own.keys)
        self.samples = Samples(own.client, own.keys, web.sample_s)
        self.audit = Audit(own.client, own.keys, web.audit_max)
        self.limiter = LoginLimiter(own.client, own.keys, web)
        self.presence = Presence(own.client, own.keys, rt.settings.assign)
        self.sla_policies: SlaPolicies = own.sla_policies
        self.events = GroupEvents(own.client, connect(rt.url, max_connections=web.max_streams + 4), own.shards)
        #: Presses of e-mail button links (``/a/{token}``), into the same stream as the adapters'.
        self.actions = Actions(own.client, own.shards, own.scripts)
        self._web = web
        # Set by start(): they need the session secret, which may live in Redis.
        self.users: Users
        self.sessions: Sessions
        self.links: PressLinks

    async def surges(self) -> list[Suggestion]:
        """Suggested incidents now (router/surge.py)."""
        return await suggestions(self._rt.client, self._rt.shards, self._rt.settings.incidents, int(time.time() * 1000))

    async def start(self) -> None:
        await self._rt.__aenter__()
        secret = await load_secret(self._rt.client, self.keys, self._web)
        self.users = Users(self._rt.client, self.keys, secret, self._web)
        self.sessions = Sessions(self._rt.client, self.keys, self.users, self._web.session_ttl_s)
        # Opens links whatever public_url says: links already mailed stay valid if it is unset later.
        self.links = PressLinks(secret, self._web.public_url, self._web.link_ttl_s)

    async def close(self) -> None:
        await self.events.close()
        await self._rt.__aexit__(None, None, None)

    async def engine(self, *, fresh: bool = False) -> Engine:
        """The rule set in force (see ``Runtime.engine``)."""
        return await self._rt.engine(fresh=fresh)

    async def ping(self) -> None:
        """Raises when Redis does not answer (readiness)."""
        await self._rt.client.ping()

    async def request_seen(self, conv_id: str, request_id: str) -> bool:
        """Whether a write on ``conv_id`` with this request id ran already (router/requests.py;
        recorded in the conversation's shard)."""
        return bool(await self._rt.client.exists(self._rt.shards.conv_keys(conv_id).request(request_id)))

    async def recent_inbox(self, count: int) -> list[tuple[str, bytes]]:
        """The last ``count`` inbox entries over every shard and its P1 lane, newest first: (entry
        id, encoded envelope); entries without an envelope (scrubbed) are left out."""
        pipe = self._rt.client.pipeline(transaction=False)
        for keys in self._rt.shards.shard:
            for stream in STREAMS:
                pipe.xrevrange(keys.stream(stream), count=count)
        entries = [e for part in await pipe.execute() for e in part]
        entries.sort(key=lambda e: entry_order(e[0]), reverse=True)
        return [(entry_id.decode(), fields[b"env"]) for entry_id, fields in entries[:count] if b"env" in fields]

    async def sla_due(self, until_ms: int, limit: int) -> list[str]:
        """Conversations whose SLA clock is due by ``until_ms`` (router/slatimer.py), at most
        ``limit`` per shard, the soonest first in each."""
        ids: list[str] = []
        for keys in self._rt.shards.shard:
            found = await self._rt.client.zrangebyscore(keys.sla_due, "-inf", until_ms, 0, limit)
            ids.extend(raw.decode() for raw in found)
        return ids

    async def failed_replies(self, conversation: str) -> list[FailedReply]:
        return await failed_replies(self._rt.client, self._rt.shards, conversation=conversation)

    async def retry_failed(self, replies: list[FailedReply], by: str) -> int:
        return await retry_failed(self._rt.client, self._rt.shards, replies, by)

    async def shadow_answers(self, limit: int) -> list[dict[str, Any]]:
        """The answerer's newest would-be answers in shadow mode, with what agents did since
        (router/answerer.py)."""
        return await shadow_answers(self._rt, limit)
