"""The runtime: one Redis client and the stores built on it, with a symmetric lifecycle.

A plain container, built once per process and passed to what needs it (workers, the console,
the CLI's commands, the channel context); serving it is router/supervisor.py's job."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

import redis.asyncio as aioredis

from router.admission import Senders
from router.assignstore import AssignStore
from router.audit import Audit
from router.channel import ChannelContext
from router.config import LeaseSettings, RulesSettings, Settings, WebSettings
from router.conversations import Conversations
from router.errors import ConfigError
from router.impostors import ImpostorCases, ImpostorGuard
from router.inbox import Inbox
from router.incidents import Incidents
from router.kbstore import KnowledgeBaseStore
from router.keys import Shards
from router.labels import Labels
from router.leases import Exclusive
from router.lifecycle import StopRequest
from router.model import Envelope, new_id
from router.modelstore import ModelHolder, ModelStore
from router.queues import Queues
from router.redis import check_cluster_prefix, check_version, connect
from router.routing import message_in
from router.rulestore import EngineHolder, RuleStore
from router.scripts import Scripts
from router.shards import check_shard_count
from router.slastore import SlaPolicies, SlaStore
from router.stats import StatsReader
from rules import Engine, Precheck
from rules.intent import IntentModel, ModelError

log = logging.getLogger("switchboard")


def load_model(rules: RulesSettings) -> IntentModel | None:
    """The triage model ``rules.model`` names: the shipped one, none ("off"), or a directory; one
    that cannot be loaded is a configuration error."""
    if rules.model == "off":
        return None
    try:
        return IntentModel.shipped() if rules.model == "shipped" else IntentModel.load(Path(rules.model))
    except ModelError as exc:
        raise ConfigError(f"rules.model: {exc}") from None


class Runtime:
    """Everything that talks to Redis, built once: ``async with Runtime(settings, url) as rt``."""

    def __init__(
        self,
        settings: Settings,
        url: str,
        *,
        max_connections: int = 64,
        wait_s: float | None = None,
        parent: Runtime | None = None,
    ) -> None:
        self.settings = settings
        self.url = url
        self.shards = Shards(settings.prefix, settings.redis.shards)
        self.keys = self.shards.home
        check_cluster_prefix(url, settings.prefix)
        self.client: aioredis.Redis = connect(url, max_connections=max_connections, wait_s=wait_s)
        self.scripts = Scripts.register(self.client)
        self.inbox = Inbox(self.client, self.shards, settings.inbox, self.scripts, self.precheck)
        self.conversations = Conversations(self.client, settings, self.scripts, shards=self.shards)
        self.queues = Queues(self.client, self.shards, self.conversations)
        self.rules = RuleStore(self.client, self.keys, self.compile, lambda: self.triage.refresh())
        self.sla = SlaStore(self.client, self.keys, lambda: self.engine(fresh=True))
        self.sla_policies = SlaPolicies(self.sla)
        self.assignments = AssignStore(self.client, self.keys, lambda: self.engine(fresh=True))
        audit = Audit(self.client, self.keys, settings.web.audit_max)
        self.models = ModelStore(self.client, self.keys, self.fits, audit, Labels(self.client, self.shards))
        self.impostor_cases = ImpostorCases(self.client, self.keys, self.scripts)
        self.senders = Senders(self.client, self.keys, audit, self.conversations)
        self.incidents = Incidents(self.client, self.shards, self.scripts, audit)
        # One answerer cache per process: the console's runtime shares its parent's.
        self.kb: KnowledgeBaseStore = KnowledgeBaseStore(
            self.client, self.keys, self._groups, settings.kb, audit, cache=parent.kb.cache if parent else None
        )
        self.stats = StatsReader(self.client, self.shards, self.scripts, self.queues, self.rules, self.engine, settings)
        self.instance = f"{socket.gethostname()}-{os.getpid()}-{new_id()[-6:]}"
        self._engines: EngineHolder | None = None
        self._triage: ModelHolder | None = None
        # A runtime made for the console shares its parent's engine and triage model: one of each
        # per process, loaded and compiled once.
        self._parent = parent
        #: Services call it to stop the whole process (``serve`` stops on the first reason).
        self.stop_request = StopRequest()

    async def __aenter__(self) -> Runtime:
        try:
            await check_version(self.client)
            await check_shard_count(self.client, self.shards)
            await self.inbox.start()
        except BaseException:
            await self.client.aclose()  # __aexit__ does not run when entering fails
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()

    def for_console(self, web: WebSettings) -> Runtime:
        """A runtime on the same Redis with a pool of its own (``web.redis_connections``), whose
        commands wait up to ``web.redis_wait_s`` for a free connection: a burst of console
        requests queues for its own connections, and never takes the workers' and adapters'.
        ``web``: the console's settings (the ones it was created with, not this runtime's)."""
        return Runtime(
            self.settings, self.url, max_connections=web.redis_connections, wait_s=web.redis_wait_s, parent=self
        )

    @property
    def engines(self) -> EngineHolder:
        """The rule set in force, shared by this process's workers and console (compiled on first
        use: commands that never route do not pay for it)."""
        if self._parent is not None:
            return self._parent.engines
        if self._engines is None:
            self._engines = self.engine_holder(self.settings)
        return self._engines

    async def precheck(self, envs: Sequence[Envelope]) -> list[Precheck]:
        """The P1 lane's ingest precheck (``inbox.p1_lane``) by the rule set in force, checked
        against the published one at most once a second."""
        engine = await self.engines.current()
        model = self.settings.inbox.p1_lane == "model"
        return [engine.precheck(message_in(env), model=model) for env in envs]

    def engine_holder(self, settings: Settings) -> EngineHolder:
        """An engine holder of ``settings``' rule file, compiled with the live triage model."""

        def fallback() -> Engine:
            return Engine.load(settings.rules.file, self.triage.live)

        return EngineHolder(self.rules, fallback(), models=self.triage, fallback=fallback)

    @cached_property
    def model(self) -> IntentModel | None:
        """The configured triage model (``rules.model``), loaded on first use."""
        return self._parent.model if self._parent is not None else load_model(self.settings.rules)

    @property
    def triage(self) -> ModelHolder:
        """The triage models in force in this process: the live published version, else the
        configured one, and the shadow (router/modelstore.py); shared with the console's runtime."""
        if self._parent is not None:
            return self._parent.triage
        if self._triage is None:
            self._triage = ModelHolder(self.models, lambda: self.model)
        return self._triage

    def compile(self, source: str, filename: str) -> Engine:
        """Validate and compile a rule set with the live triage model (``RuleSetError`` also when
        it names a label the model lacks)."""
        return Engine.from_yaml(source, filename, model=self.triage.live)

    async def fits(self, model: IntentModel | None) -> None:
        """Raise ``RuleSetError`` when the rule set in force does not compile with ``model``."""
        published = await self.rules.active()
        if published is not None:
            await asyncio.to_thread(Engine.from_yaml, published.source, f"published-v{published.number}", model)
        else:
            await asyncio.to_thread(Engine.load, self.settings.rules.file, model)

    async def _groups(self) -> tuple[str, ...]:
        """The groups of the rule set in force: the ones a knowledge-base article may serve."""
        return tuple((await self.engine()).groups)

    async def engine(self, *, fresh: bool = False) -> Engine:
        """The rule set in force (published, else the configured file or the default)."""
        return await self.engines.current(fresh=fresh)

    def exclusive(self, name: str, instance: str | None = None) -> Exclusive:
        """The lease ``name`` of the deployment (on the home shard), held by this process (its
        ``instance``; another stands for another replica in tests) while it runs a service that
        only one replica may run (router/leases.py ``Exclusive``)."""
        return Exclusive.named(
            self.client, self.scripts, self.keys.prefix, name, instance or self.instance, self.settings.leases
        )

    def channel_context(
        self, instance: str | None = None, *, leases: LeaseSettings | None = None, web: WebSettings | None = None
    ) -> ChannelContext:
        """The context channel modules get; ``instance`` (the lease owner), ``leases`` and ``web``
        other than this process's stand for another replica or deployment (tests)."""
        return ChannelContext(
            self.client,
            self.shards,
            self.inbox,
            instance or self.instance,
            self.stop_request,
            scripts=self.scripts,
            leases=leases or self.settings.leases,
            web=web or self.settings.web,
            impostors=self.impostor_guard,
            safety_notice=self.settings.safety_notice,
        )

    @cached_property
    def impostor_guard(self) -> ImpostorGuard:
        """The impostor check the channels share (router/impostors.py)."""
        return ImpostorGuard(self.settings.impostors, self.impostor_cases)
