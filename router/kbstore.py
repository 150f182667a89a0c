"""Published knowledge bases in Redis: versioned, with author, time and diff; rollback is one step.

The model of router/rulestore.py, for the articles of kb/: a knowledge base is a set of Markdown
files (``<article id>/<lang>.md``, docs/knowledge-base.md). Publishing validates the whole set
with the loader of ``kb.load_dir``, against the groups of the rule set in force; a base with any
problem is refused (``KBRefused``, every problem on its own line) and the version in force stays.
A version stores its files in canonical form (``kb.dump_variant``), so diffs between versions show
what an admin changed, not how the YAML was spelled. Publish and rollback take a request id and
are safe to send twice (router/requests.py); each change is audited in its own transaction
(router/audit.py).

Every process follows ``kb:active`` (one GET per ``active()``), so a publish is picked up without
a restart. ``answerer()`` gives the answerer of the version in force, built once per version and
process, in a thread (it embeds every variant and example question: ~20 s for the default base on
a quiet machine). The embeddings are kept in Redis by text digest (``kb:vectors:{embedder}``),
shared by every version: a publish re-embeds only the texts it changed, and a process's start
embeds nothing another process (or an earlier start) embedded already.

kb/ (numpy, bm25s: ~0.4 s to import) is imported when a knowledge base is first used, not by
every command that builds a runtime.
"""

from __future__ import annotations

import asyncio
import difflib
import hashlib
import json
import logging
import re
import tempfile
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from router.audit import Audit
from router.config import KBSettings
from router.errors import NotFound, SwitchboardError
from router.keys import Keys
from router.requests import retry_once, run_once

if TYPE_CHECKING:
    import kb

log = logging.getLogger("switchboard.kb")

#: A knowledge base's files larger than this in all are refused (the default one is ~0.4 MB).
MAX_KB_BYTES = 32 * 1024 * 1024
_PATH = re.compile(r"[^./\\\x00][^/\\\x00]{0,99}/[^./\\\x00][^/\\\x00]{0,99}\.md")

#: The groups an article may serve: the rule set in force's (read when a base is validated).
Groups = Callable[[], Awaitable[Collection[str]]]


class KBRefused(SwitchboardError):
    """A knowledge base that cannot be published or made active; ``errors``: every reason, one a line."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


@dataclass(frozen=True, slots=True)
class ActiveKB:
    """A published knowledge base, loaded and validated."""

    version: int
    digest: str
    base: kb.KnowledgeBase


@dataclass(frozen=True, slots=True)
class KBVersion:
    """A published version's record: who, when, why, and its files."""

    number: int
    digest: str
    author: str
    at: float
    comment: str
    groups: tuple[str, ...]
    files: dict[str, str]  # <article id>/<lang>.md -> its text

    def summary(self) -> dict[str, Any]:
        articles = {path.split("/")[0] for path in self.files}
        return {
            "number": self.number,
            "digest": self.digest,
            "author": self.author,
            "at": self.at,
            "comment": self.comment,
            "articles": len(articles),
            "variants": len(self.files),
        }


def files_of(base: kb.KnowledgeBase) -> dict[str, str]:
    """Every variant's file, canonical form (what ``kb.export_dir`` writes), by its path."""
    from kb import dump_variant

    return {f"{a.id}/{lang}.md": dump_variant(a, lang) for a in base.articles for lang in a.variants}


def read_dir(directory: Path) -> dict[str, str]:
    """The ``<article id>/<lang>.md`` files of a knowledge base directory (what ``kb.load_dir``
    reads; other files are not read); ``KBRefused`` if one cannot be read."""
    if not directory.is_dir():
        raise KBRefused([f"{directory}: not a directory"])
    files: dict[str, str] = {}
    errors: list[str] = []
    for path in sorted(directory.glob("*/*.md")):
        if path.parent.name.startswith("."):
            continue
        try:
            files[f"{path.parent.name}/{path.name}"] = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            errors.append(f"{path}: cannot be read ({exc})")
    if errors:
        raise KBRefused(errors)
    return files


def load_files(files: Mapping[str, str], groups: Collection[str]) -> kb.KnowledgeBase:
    """The knowledge base of ``files`` checked whole, as ``kb.load_dir`` checks a directory (they
    are written to a temporary one); ``KBRefused`` with every problem, each named by its path.
    Blocking."""
    import kb

    bad = [f"{p!r}: not an <article id>/<lang>.md path" for p in files if not _PATH.fullmatch(p)]
    if bad:
        raise KBRefused(bad)
    size = sum(len(t.encode()) for t in files.values())
    if size > MAX_KB_BYTES:
        raise KBRefused([f"{size} bytes of articles, more than a knowledge base's {MAX_KB_BYTES}"])
    with tempfile.TemporaryDirectory(prefix="switchboard-kb-") as tmp:
        root = Path(tmp)
        for path, text in files.items():
            (root / path).parent.mkdir(exist_ok=True)
            (root / path).write_text(text, encoding="utf-8")
        try:
            return kb.load_dir(root, groups)
        except kb.KBError as exc:  # the reasons, named by the files' paths, not the temporary folder's
            errors = [e.replace(f"{root}/", "").replace(str(root), "the knowledge base") for e in exc.errors]
            raise KBRefused(errors) from None


def diff_files(old: Mapping[str, str], new: Mapping[str, str], a: str, b: str) -> dict[str, str]:
    """A unified diff per file that differs (added and removed files too), by path."""
    out: dict[str, str] = {}
    for path in sorted(set(old) | set(new)):
        before, after = old.get(path, ""), new.get(path, "")
        if before != after:
            out[path] = "".join(
                difflib.unified_diff(
                    before.splitlines(keepends=True),
                    after.splitlines(keepends=True),
                    f"{a}/{path}" if path in old else "/dev/null",
                    f"{b}/{path}" if path in new else "/dev/null",
                )
            )
    return out


def _embedder_tag() -> str:
    from kb.retrieval import EMBEDDER

    # In the key: a new embedder starts an empty cache, and the old one goes with one DEL.
    return hashlib.sha256(EMBEDDER.encode()).hexdigest()[:12]


@dataclass(slots=True)
class KBCache:
    """What one process keeps of the knowledge base: the versions loaded, and the answerer of the
    version in force (one build per version; shared by the process's runtimes, router/runtime.py)."""

    loaded: dict[int, ActiveKB] = field(default_factory=dict)
    # Version (None: the unpublished one) -> its answerer's build; only the latest is kept.
    builds: dict[int | None, asyncio.Task[kb.Answerer]] = field(default_factory=dict)


class KnowledgeBaseStore:
    def __init__(
        self,
        client: aioredis.Redis,
        keys: Keys,
        groups: Groups,
        settings: KBSettings,
        audit: Audit,
        *,
        cache: KBCache | None = None,
        embedder: kb.Embedder | None = None,
    ) -> None:
        self._client = client
        self._keys = keys
        self._groups = groups
        self._settings = settings
        self._audit = audit
        self.embedder = embedder
        self.cache = cache or KBCache()

    # -- reading -----------------------------------------------------------------------------
    async def active_number(self) -> int | None:
        raw = await self._client.get(self._keys.kb_active)
        return int(raw) if raw else None

    async def get(self, number: int) -> KBVersion:
        data = await self._client.hgetall(self._keys.kb_version(number))
        if not data:
            raise NotFound(f"knowledge base version {number}")
        d = {k.decode(): v.decode() for k, v in data.items()}
        groups = tuple(json.loads(d["groups"]))
        return KBVersion(number, d["digest"], d["author"], float(d["at"]), d["comment"], groups, json.loads(d["files"]))

    async def load(self, number: int) -> ActiveKB:
        """Version ``number``, loaded (once per process: a version never changes)."""
        if (done := self.cache.loaded.get(number)) is not None:
            return done
        v = await self.get(number)
        # Checked against the groups it was published with: a later rule set is checked at
        # publish and rollback, not each time a process loads a version.
        base = await asyncio.to_thread(load_files, v.files, v.groups)
        loaded = ActiveKB(number, base.digest, base)
        self.cache.loaded = {number: loaded}  # the one in force; older ones are released
        return loaded

    async def active(self) -> ActiveKB | None:
        """The published knowledge base in force; None when nothing was published (the caller
        uses the configured or shipped one: ``unpublished``)."""
        number = await self.active_number()
        return await self.load(number) if number is not None else None

    async def unpublished(self) -> kb.KnowledgeBase:
        """The knowledge base in force while none is published: ``[kb] directory``, else the
        shipped default (``KBRefused`` if it does not fit the rule set in force)."""
        import kb

        directory = self._settings.directory or kb.default_dir()
        files = await asyncio.to_thread(read_dir, directory)
        return await asyncio.to_thread(load_files, files, await self._groups())

    async def in_force(self) -> tuple[int | None, kb.KnowledgeBase]:
        """The version in force (None: unpublished) and its knowledge base."""
        active = await self.active()
        return (active.version, active.base) if active is not None else (None, await self.unpublished())

    async def history(self, count: int = 50) -> list[dict[str, str]]:
        """Publish and rollback entries, newest first: action, number, digest, author, at, comment."""
        entries = await self._client.xrevrange(self._keys.kb_log, count=count)
        return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in entries]

    async def diff(self, a: int, b: int) -> dict[str, str]:
        """Per article file, the unified diff from version ``a`` to ``b`` (changed files only)."""
        old, new = await self.get(a), await self.get(b)
        return diff_files(old.files, new.files, f"v{a}", f"v{b}")

    # -- changing ----------------------------------------------------------------------------
    async def validate(self, files: Mapping[str, str] | kb.KnowledgeBase) -> kb.KnowledgeBase:
        """The knowledge base of ``files`` checked whole against the rule set in force's groups
        (``KBRefused`` with every problem)."""
        import kb

        given = files_of(files) if isinstance(files, kb.KnowledgeBase) else dict(files)
        return await asyncio.to_thread(load_files, given, await self._groups())

    async def publish(
        self,
        files: Mapping[str, str] | kb.KnowledgeBase,
        *,
        author: str,
        comment: str = "",
        request_id: str | None = None,
    ) -> int:
        """Validate (``KBRefused`` with every problem; the version in force stays) and make the
        knowledge base the one in force; its version number."""
        groups = tuple(sorted(await self._groups()))
        base = await self.validate(files)
        canonical = json.dumps(files_of(base), ensure_ascii=False)
        at = time.time()

        async def stage(pipe: Pipeline) -> int:
            # Numbered inside the transaction: a run that does not commit leaves no gap.
            number = int(await pipe.get(self._keys.kb_seq) or 0) + 1
            pipe.multi()
            pipe.set(self._keys.kb_seq, number)
            pipe.hset(
                self._keys.kb_version(number),
                mapping={
                    "digest": base.digest,
                    "author": author,
                    "at": at,
                    "comment": comment,
                    "groups": json.dumps(groups),
                    "files": canonical,
                },
            )
            pipe.set(self._keys.kb_active, number)
            self._record(pipe, "publish", number, base.digest, author, comment)
            return number

        number = await run_once(self._client, self._keys, request_id, self._watched, stage)
        log.info("knowledge base %s (%s, %d articles) published by %s", number, base.digest, len(base), author)
        return number

    async def rollback(self, *, author: str, to: int | None = None, request_id: str | None = None) -> int:
        """Make an earlier version the one in force again (by default the one before the version
        in force); it must still fit the rule set in force (``KBRefused`` otherwise)."""
        digest = ""

        async def stage(pipe: Pipeline) -> int:
            # Read under the transaction's watch, after the request id's record was looked up: a
            # repeat returns the first run's version instead of rolling back once more.
            nonlocal digest
            raw = await pipe.get(self._keys.kb_active)
            current = int(raw) if raw else None
            target = to
            if target is None:
                if current is None or current <= 1:
                    raise NotFound("no earlier knowledge base version to roll back to")
                target = current - 1
            version = await self.get(target)
            await asyncio.to_thread(load_files, version.files, await self._groups())
            digest = version.digest
            pipe.multi()
            pipe.set(self._keys.kb_active, target)
            self._record(pipe, "rollback", target, version.digest, author, f"from {current}")
            return target

        number = await run_once(self._client, self._keys, request_id, self._watched, stage)
        log.info("knowledge base %s (%s) in force again, rolled back by %s", number, digest or "repeat", author)
        return number

    @property
    def _watched(self) -> tuple[str, str]:
        return (self._keys.kb_active, self._keys.kb_seq)

    def _record(self, pipe: Pipeline, action: str, number: int, digest: str, author: str, comment: str) -> None:
        """Queue the log entry and the audit record of a change, written only with it."""
        entry = {"action": action, "number": number, "digest": digest, "author": author, "at": time.time()}
        pipe.xadd(self._keys.kb_log, entry | {"comment": comment})
        self._audit.stage(pipe, f"kb.{action}", actor=author, target=f"version {number} ({digest})", detail=comment)

    # -- answering ---------------------------------------------------------------------------
    async def answerer(self) -> tuple[int | None, kb.Answerer]:
        """The version in force (None: unpublished) and its answerer, built once per version and
        process in a thread; callers asking meanwhile wait for the same build."""
        number = await self.active_number()
        build = self.cache.builds.get(number)
        if build is None or (build.done() and (build.cancelled() or build.exception() is not None)):
            build = asyncio.create_task(self._build(number), name=f"kb-answerer-{number}")
            self.cache.builds = {number: build}  # the previous version's answerer is released
        # Shielded: a caller that stops waiting (a request's timeout) leaves the build running.
        return number, await asyncio.shield(build)

    async def _build(self, number: int | None) -> kb.Answerer:
        import kb

        base = (await self.load(number)).base if number is not None else await self.unpublished()
        key = self._keys.kb_vectors(_embedder_tag())
        raw = await self._client.hgetall(key)
        known = {k.decode(): _vector(v) for k, v in raw.items()}
        started = time.perf_counter()
        answerer = await asyncio.to_thread(kb.answerer, base, self._settings.calibration, self.embedder, known)
        made = answerer.retriever.new_vectors
        if made:
            await retry_once(lambda: self._client.hset(key, mapping={k: v.tobytes() for k, v in made.items()}), key)
        log.info(
            "knowledge base %s (%s): answerer built in %.1f s, %d text(s) embedded, %d cached",
            number or "(unpublished)",
            base.digest,
            time.perf_counter() - started,
            len(made),
            len(known),
        )
        return answerer


def _vector(raw: bytes) -> Any:
    import numpy as np

    return np.frombuffer(raw, dtype=np.float32)
