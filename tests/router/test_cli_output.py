"""Issue 21, small things a new user trips on: what `queue`, `show` and every command print."""

from __future__ import annotations

import argparse
import json
import subprocess
import tomllib

import pytest

from router import cli
from router.model import Attachment
from router.runtime import Runtime
from router.worker import Worker
from tests.conftest import SWITCHBOARD
from tests.router.helpers import drain, message
from tests.router.test_config import EXAMPLE


async def _three_in_payments(rt: Runtime) -> None:
    await rt.inbox.append_many([message(f"deposit {i} is missing", user=f"u{i}") for i in range(3)])
    await drain(Worker(rt))


async def test_queue_says_when_the_list_is_cut(rt: Runtime, capsys: pytest.CaptureFixture[str]) -> None:
    await _three_in_payments(rt)
    await cli._queue(rt, argparse.Namespace(group="payments", limit=2, json=False))
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("queue payments: 3 waiting")
    assert "showing 2 of 3" in out and "--limit" in out
    await cli._queue(rt, argparse.Namespace(group="payments", limit=2, json=True))
    cut = json.loads(capsys.readouterr().out)
    assert (cut["depth"], cut["shown"], cut["truncated"], len(cut["conversations"])) == (3, 2, True, 2)
    await cli._queue(rt, argparse.Namespace(group="payments", limit=50, json=True))
    assert json.loads(capsys.readouterr().out)["truncated"] is False
    await cli._queue(rt, argparse.Namespace(group="payments", limit=50, json=False))
    assert "showing" not in capsys.readouterr().out


async def test_show_mentions_attachments(rt: Runtime, capsys: pytest.CaptureFixture[str]) -> None:
    files = (
        Attachment(name="receipt.pdf", type="application/pdf", size=52_113),
        Attachment(name="x.png", type="image/png"),
    )
    await rt.inbox.append(message("my deposit is missing, receipt attached", attachments=files))
    await drain(Worker(rt))
    [conv] = await rt.queues.head("payments")
    await cli._show(rt, argparse.Namespace(conversation=conv.id, json=False))
    out = capsys.readouterr().out
    assert "attachment: receipt.pdf (application/pdf, 52113 bytes)" in out
    assert "attachment: x.png (image/png)" in out


def test_commands_do_not_log_the_rule_compilation(env: dict[str, str]) -> None:
    done = subprocess.run([*SWITCHBOARD, "stats"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "compiled" not in done.stderr


def test_example_configuration_documents_the_web_console() -> None:
    raw = tomllib.loads(EXAMPLE.read_text())
    assert raw["web"]["port"] == 8080 and raw["web"]["host"] == "127.0.0.1"
