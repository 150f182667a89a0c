"""Published triage models in Redis: versioned, with author and time, live or shadow, rollback.

A model is a directory of files (``triage.json`` and the fastText files ``IntentModel.load``
reads); publishing stores its regular files' bytes as a new version. Before anything is stored the
files are loaded from a temporary directory and the rule set in force is compiled with them: a
corrupt file, an unknown format or a rule set naming a label the model lacks refuses the publish
with the reason (``ModelRefused``), and the running model stays.

States: the **live** version routes (none published: the configured ``[rules] model``); a
**shadow** version (at most one) is asked beside it about each routed message and never routes;
**rollback** makes the version live before the current one live again (the configured model when
there was none). Every change is one transaction with its log entry, its audit entry and its
request id (router/requests.py: a repeat returns the first run's version and writes nothing).

Per process, ``ModelHolder`` keeps the live and shadow models, each version loaded once; the
rules' ``EngineHolder`` asks it at most once a second and recompiles when the live model changed.
The worker writes what the shadow (and the live model) said of each routed message to the capped
``model:observed`` stream; ``ModelStore.status`` scores both against agents' corrections.
"""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from router.audit import Audit
from router.errors import BadRequest, NotFound, SwitchboardError
from router.keys import Keys
from router.labels import Labels
from router.requests import retry_once, run_once
from rules import Decision, RuleSetError
from rules.intent import IntentModel, ModelError, Prediction, Predictor, files_digest

log = logging.getLogger("switchboard.models")

#: A model directory larger than this is refused (the shipped one is ~5 MB: two views of 2.5 MB).
MAX_MODEL_BYTES = 64 * 1024 * 1024
#: ``model:observed`` keeps about this many entries (~300 bytes each).
OBSERVED_MAXLEN = 20_000

#: Raises ``RuleSetError`` when the rule set in force does not compile with the model (None: off).
Fits = Callable[[IntentModel | None], Awaitable[None]]


class ModelRefused(SwitchboardError):
    """A model that cannot be published or made live; the message says why."""


@dataclass(frozen=True, slots=True)
class ModelVersion:
    number: int
    digest: str  # of its files' names and bytes
    author: str
    at: float
    comment: str
    files: dict[str, int]  # name -> size
    meta: dict[str, Any]  # its triage.json

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class ModelState:
    live: int | None  # None: the configured model routes
    shadow: int | None

    @classmethod
    def of(cls, live: bytes | None, shadow: bytes | None) -> ModelState:
        """From the values of the ``model:live`` and ``model:shadow`` keys."""
        return cls(int(live) if live else None, int(shadow) if shadow else None)


def read_dir(directory: Path) -> dict[str, bytes]:
    """The regular files of a model directory (not its subdirectories), by name."""
    if not directory.is_dir():
        raise ModelRefused(f"{directory}: not a directory")
    files = {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}
    size = sum(map(len, files.values()))
    if size > MAX_MODEL_BYTES:
        raise ModelRefused(f"{directory}: {size} bytes, more than a model's {MAX_MODEL_BYTES}")
    return files


def load_files(files: Mapping[str, bytes]) -> IntentModel:
    """Load a model from its files' bytes (written to a temporary directory; fastText reads the
    whole file into memory, so the directory can go). Raises ``ModelError``."""
    with tempfile.TemporaryDirectory(prefix="switchboard-model-") as tmp:
        for name, data in files.items():
            (Path(tmp) / name).write_bytes(data)
        try:
            return IntentModel.load(Path(tmp))
        except ModelError as exc:  # the reason without the temporary directory's name
            raise ModelError(str(exc).replace(tmp, "<model>")) from None


class ModelStore:
    def __init__(self, client: aioredis.Redis, keys: Keys, fits: Fits, audit: Audit, labels: Labels) -> None:
        self._client = client
        self._keys = keys
        self._labels = labels
        self._fits = fits
        self._audit = audit

    # -- reading -----------------------------------------------------------------------------
    async def state(self) -> ModelState:
        return ModelState.of(*await self._client.mget(self._keys.model_live, self._keys.model_shadow))

    async def get(self, number: int) -> ModelVersion:
        data = await self._client.hgetall(self._keys.model_version(number))
        if not data:
            raise NotFound(f"model version {number}")
        d = {k.decode(): v.decode() for k, v in data.items()}
        files, meta = json.loads(d["files"]), json.loads(d["meta"])
        return ModelVersion(number, d["digest"], d["author"], float(d["at"]), d["comment"], files, meta)

    async def versions(self) -> list[ModelVersion]:
        last = int(await self._client.get(self._keys.model_seq) or 0)
        return [await self.get(n) for n in range(1, last + 1)]

    async def load(self, number: int) -> IntentModel:
        """Version ``number``'s model (``ModelError`` if this process cannot read it)."""
        raw = await self._client.hgetall(self._keys.model_files(number))
        if not raw:
            raise NotFound(f"model version {number}")
        return await asyncio.to_thread(load_files, {k.decode(): v for k, v in raw.items()})

    async def log(self, count: int = 50) -> list[dict[str, str]]:
        entries = await self._client.xrevrange(self._keys.model_log, count=count)
        return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in entries]

    # -- changing ----------------------------------------------------------------------------
    async def publish(
        self,
        files: Mapping[str, bytes],
        author: str,
        comment: str = "",
        *,
        shadow: bool = False,
        request_id: str | None = None,
    ) -> ModelVersion:
        """Validate ``files`` (``ModelRefused`` with the reason) and store them as a new version,
        made live, or the shadow with ``shadow``."""
        model = await self._validate(files)
        sizes = {name: len(data) for name, data in files.items()}
        version = files_digest(files)
        at = time.time()
        state = "shadow" if shadow else "live"

        async def stage(pipe: Pipeline) -> int:
            # Numbered inside the transaction: a run that does not commit leaves no gap.
            number = int(await pipe.get(self._keys.model_seq) or 0) + 1
            pipe.multi()
            pipe.set(self._keys.model_seq, number)
            pipe.hset(
                self._keys.model_version(number),
                mapping={
                    "digest": version,
                    "author": author,
                    "at": at,
                    "comment": comment,
                    "files": json.dumps(sizes),
                    "meta": json.dumps(model.meta),
                },
            )
            pipe.hset(self._keys.model_files(number), mapping=dict(files))
            self._point(pipe, state, number)
            self._record(pipe, "publish", number, version, author, f"{state}; {comment}" if comment else state)
            return number

        number = await self._once(request_id, stage)
        log.info("triage model %s (%s) published %s by %s", number, version, state, author)
        return await retry_once(lambda: self.get(number), str(number))

    async def make_live(self, number: int, author: str, request_id: str | None = None) -> ModelVersion:
        """Make a published version live (the shadow, if it was that one, is then none)."""
        await self._fits_rules(await self._model(number))
        await self._move("live", number, author, request_id)
        return await self.get(number)

    async def set_shadow(self, number: int | None, author: str, request_id: str | None = None) -> ModelVersion | None:
        """Make a published version the shadow (None: no shadow)."""
        if number is not None:
            await self._model(number)  # this process can read it
        await self._move("shadow", number, author, request_id)
        return await self.get(number) if number is not None else None

    async def rollback(self, author: str, request_id: str | None = None) -> ModelVersion | None:
        """Make the version live before the current one live again; None: the configured model."""
        lives = [int(n) for n in await self._client.lrange(self._keys.model_lives, 0, 1)]
        if not lives:
            raise NotFound("no published model is live: nothing to roll back")
        target = lives[1] if len(lives) > 1 else None
        await self._fits_rules(await self._model(target) if target is not None else None)
        await self._move("rollback", target, author, request_id, expect=lives[0])
        return await self.get(target) if target is not None else None

    async def _move(
        self, action: str, number: int | None, author: str, request_id: str | None, expect: int | None = None
    ) -> None:
        async def stage(pipe: Pipeline) -> int:
            if number is not None and not await pipe.exists(self._keys.model_version(number)):
                raise NotFound(f"model version {number}")
            state = ModelState.of(*await pipe.mget(self._keys.model_live, self._keys.model_shadow))
            if action in ("live", "shadow") and number is not None and number == state.live:
                raise BadRequest(f"model version {number} is live already")
            if action == "rollback" and state.live != expect:
                raise NotFound("the live model changed meanwhile; look again before rolling back")
            version = (await pipe.hget(self._keys.model_version(number), "digest") or b"").decode() if number else ""
            pipe.multi()
            if action == "rollback":
                pipe.lpop(self._keys.model_lives)
                if number is None:
                    pipe.delete(self._keys.model_live)
                else:
                    pipe.set(self._keys.model_live, number)
            elif number is None:
                pipe.delete(self._keys.model_shadow)
            else:
                self._point(pipe, action, number)
                if action == "live" and state.shadow == number:
                    pipe.delete(self._keys.model_shadow)  # a shadow promoted to live is no longer one
            detail = f"from {expect}" if action == "rollback" else ""
            self._record(pipe, action, number, version, author, detail)
            return number or 0

        await self._once(request_id, stage)
        log.info("triage model: %s %s by %s", action, number or "none", author)

    def _point(self, pipe: Pipeline, state: str, number: int) -> None:
        """Queue making ``number`` the live or the shadow version."""
        if state == "live":
            pipe.set(self._keys.model_live, number)
            pipe.lpush(self._keys.model_lives, number)
        else:
            pipe.set(self._keys.model_shadow, number)

    def _record(self, pipe: Pipeline, action: str, number: int | None, version: str, author: str, detail: str) -> None:
        target = f"version {number} ({version})" if number else "the configured model"
        pipe.xadd(
            self._keys.model_log,
            {"action": action, "number": number or "", "version": version, "author": author, "at": time.time()}
            | {"detail": detail},
        )
        self._audit.stage(pipe, f"model.{action}", actor=author, target=target, detail=detail)

    async def _once(self, request_id: str | None, stage: Callable[[Pipeline], Awaitable[int]]) -> int:
        keys = self._keys
        watched = (keys.model_seq, keys.model_live, keys.model_shadow, keys.model_lives)
        return await run_once(self._client, keys, request_id, watched, stage)

    # -- validating --------------------------------------------------------------------------
    async def _validate(self, files: Mapping[str, bytes]) -> IntentModel:
        try:
            model = await asyncio.to_thread(load_files, files)
        except ModelError as exc:
            raise ModelRefused(str(exc)) from None
        await self._fits_rules(model)
        return model

    async def _model(self, number: int) -> IntentModel:
        try:
            return await self.load(number)
        except ModelError as exc:
            raise ModelRefused(f"model version {number}: {exc}") from None

    async def _fits_rules(self, model: IntentModel | None) -> None:
        try:
            await self._fits(model)
        except RuleSetError as exc:
            reasons = "; ".join(str(e) for e in exc.errors)
            raise ModelRefused(f"the rule set in force does not compile with this model: {reasons}") from None

    # -- shadow scores -----------------------------------------------------------------------
    async def status(self) -> dict[str, Any]:
        """The live and shadow versions and how often each model (and the routing) agreed with
        agents' corrections, and with the group and priority of conversations closed without one
        (a close is a label too: router/labels.py), over the messages the current shadow was
        asked about."""
        state = await self.state()
        corrected: dict[str, tuple[str, str]] = {}
        closed: dict[str, tuple[str, str]] = {}
        async for c in self._labels.corrections():
            msg, right = str(c.message.get("msg")), (c.group, f"P{c.priority}")
            if c.kind != "close":
                corrected[msg] = right  # the latest wins
                closed.pop(msg, None)
            elif msg not in corrected and c.reason != "spam":  # spam says nothing about routing
                closed[msg] = right
        observed = [o for o in await self.observed() if state.shadow is not None and o["shadow"] == str(state.shadow)]
        return {
            "live": state.live,
            "shadow": state.shadow,
            "observed": len(observed),
            "corrected": _agreement([(o, corrected[o["msg"]]) for o in observed if o["msg"] in corrected]),
            "closed_uncorrected": _agreement([(o, closed[o["msg"]]) for o in observed if o["msg"] in closed]),
        }

    async def observed(self) -> list[dict[str, str]]:
        rows = await self._client.xrange(self._keys.model_observed)
        return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in rows]


def _agreement(pairs: list[tuple[dict[str, str], tuple[str, str]]]) -> dict[str, Any]:
    """How many of the messages each opinion (shadow model, live model, routing) got right."""
    out: dict[str, Any] = {"messages": len(pairs)}
    for who in ("shadow", "live", "routed"):
        group = sum(o.get(f"{who}_group") == right[0] for o, right in pairs)
        prio = sum(o.get(f"{who}_prio") == right[1] for o, right in pairs)
        out[who] = {"group": group, "priority": prio}
    return out


def observation(
    msg: str, ref: str, state: ModelState, decision: Decision, shadow: Predictor, live: Predictor | None
) -> dict[str, str]:
    """The ``model:observed`` entry of one routed message: what routed it, and what the shadow and
    the live model alone said (their best group and priority). Both are asked about the decision's
    text, where secrets are masked; the live model's answer is taken from the trace when the rules
    asked it already about that same text (one prediction a message instead of two)."""
    entry = {
        "msg": msg,
        "ref": ref,
        "shadow": str(state.shadow),
        "live": str(state.live or ""),
        "routed_group": decision.group,
        "routed_prio": f"P{decision.priority}",
    }
    tops = {"shadow": _best(shadow.predict(decision.text, decision.subject))}
    said = next((t.model for t in decision.trace if t.model is not None), None)
    # The rules ask the model before their `redact:` actions apply: its answer is about the text
    # the shadow sees only when nothing was redacted.
    if said is not None and not decision.redactions:
        tops["live"] = (said.group[0][0], said.priority[0][0], said.group[0][1])
    elif live is not None:
        tops["live"] = _best(live.predict(decision.text, decision.subject))
    for who, (group, prio, confidence) in tops.items():
        entry |= {f"{who}_group": group, f"{who}_prio": prio, f"{who}_p": f"{confidence:.3f}"}
    return entry


def _best(p: Prediction) -> tuple[str, str, float]:
    """The best group and priority, and the group's confidence."""
    group, confidence = Prediction.top(p.group)
    return group, Prediction.top(p.priority)[0], confidence


@dataclass(slots=True)
class ModelHolder:
    """The triage models this process uses: the live published version (else ``configured``) and
    the shadow, each version loaded once; the state read at most when ``refresh`` is called."""

    store: ModelStore
    configured: Callable[[], IntentModel | None]
    state: ModelState = ModelState(None, None)
    _loaded: dict[int, IntentModel] = field(default_factory=dict)
    _broken: set[int] = field(default_factory=set)
    # The workers' loop and the console's requests refresh the same holder: one load at a time.
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def live(self) -> IntentModel | None:
        return self._loaded[self.state.live] if self.state.live is not None else self.configured()

    @property
    def shadow(self) -> IntentModel | None:
        return self._loaded.get(self.state.shadow) if self.state.shadow is not None else None

    async def refresh(self) -> None:
        """Follow the published live and shadow versions; one this process cannot load is logged
        once and skipped (the live model in force stays)."""
        async with self._lock:
            await self._follow(await self.store.state())

    async def _follow(self, state: ModelState) -> None:
        if state == self.state:
            return
        for number in (state.live, state.shadow):
            if number is None or number in self._loaded or number in self._broken:
                continue
            try:
                self._loaded[number] = await self.store.load(number)
            except (ModelError, NotFound) as exc:
                log.error("triage model version %s cannot be loaded here, skipped: %s", number, exc)
                self._broken.add(number)
        live = state.live if state.live is None or state.live in self._loaded else self.state.live
        shadow = state.shadow if state.shadow is None or state.shadow in self._loaded else None
        self.state = ModelState(live, shadow)
        for number in set(self._loaded) - {live, shadow}:
            del self._loaded[number]  # the models no longer in use are released
