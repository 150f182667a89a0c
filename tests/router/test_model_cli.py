"""``switchboard model publish|versions|shadow|status|rollback|train`` as an operator runs them."""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import pytest

from router import model_cli
from rules.intent import IntentModel
from tests.router.test_cli import sb
from tests.router.test_modelstore import TINY
from tests.triage.test_train import TINY as TINY_PARAMS
from tests.triage.test_train import TRAIN_PYTHON


def test_publish_versions_shadow_status_rollback(env: dict[str, str], tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt"
    shutil.copytree(TINY, corrupt)
    (corrupt / "triage.ftz").write_bytes(b"not a model")
    refused = sb(env, "model", "publish", str(corrupt), "--by", "mallory", check=False)
    assert refused.returncode == 1
    assert "refused: <model>: the model cannot be loaded" in refused.stderr
    assert "the running model stays in force" in refused.stderr

    published = sb(env, "model", "publish", str(TINY), "--by", "alice", "--comment", "first")
    assert "published model v1 (" in published.stdout and "as live by alice" in published.stdout
    sb(env, "model", "publish", str(TINY), "--by", "bob", "--shadow")
    versions = json.loads(sb(env, "model", "versions", "--json").stdout)
    assert (versions["live"], versions["shadow"]) == (1, 2)
    assert [(v["number"], v["author"], v["comment"]) for v in versions["versions"]] == [
        (1, "alice", "first"),
        (2, "bob", ""),
    ]
    same = sb(env, "model", "shadow", "1", check=False)
    assert same.returncode == 1 and "model version 1 is live already" in same.stderr
    status = json.loads(sb(env, "model", "status", "--json").stdout)
    assert (status["live"], status["shadow"], status["corrected"]["messages"]) == (1, 2, 0)
    assert "shadow: 2" in sb(env, "model", "status").stdout
    assert "the configured model is live again" in sb(env, "model", "rollback", "--by", "carol").stdout
    assert "no shadow model" in sb(env, "model", "shadow", "off").stdout


def _train_args(out: Path, labels: Path | None) -> argparse.Namespace:
    fast = {**TINY_PARAMS, "epoch": 1}  # the whole shipped corpus: one pass is enough here
    return argparse.Namespace(out=out, labels=labels, seed=1, params=json.dumps(fast))


def test_train_without_the_trainer_says_how_to_get_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert model_cli.train(_train_args(tmp_path / "out", None), tmp_path / "no-python") == 2
    assert "make .venv-train/.installed-stamp" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_train_adds_a_teams_labels_to_the_shipped_corpus(tmp_path: Path) -> None:
    if not TRAIN_PYTHON.exists():  # as tests/triage/test_train.py: `make test` builds it
        if os.environ.get("CI"):
            pytest.fail(f"{TRAIN_PYTHON} is missing: make .venv-train/.installed-stamp")
        pytest.skip("no .venv-train: run `make .venv-train/.installed-stamp`")
    corpus = sorted((model_cli.CHECKOUT / "triage" / "corpus" / "train").glob("*.jsonl"))
    shipped = sum(len(p.read_text(encoding="utf-8").splitlines()) for p in corpus)
    labels = tmp_path / "labels.jsonl"
    example = {"id": "agent-1", "channel": "telegram", "lang": "en", "text": "my coins vanished after a call"}
    labels.write_text(json.dumps({**example, "expect": {"group": "security", "priority": "P1"}}) + "\n")
    assert model_cli.train(_train_args(tmp_path / "out", labels), None) == 0
    model = IntentModel.load(tmp_path / "out")
    assert model.meta["messages"] == shipped + 1 and model.meta["seed"] == 1
