"""The second opinion's training (triage/semantic.py) is deterministic for a seed, incremental
through its embedding cache, and writes what the runtime's ``SemanticModel`` loads.

Runs in .venv-train (as tests/triage/test_train.py), on 120 messages and the tiny fastText fixture.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from rules.semantic import FILE, SemanticModel
from tests.triage.test_train import ROOT, TRAIN_PYTHON, _digest, corpus  # noqa: F401 (a fixture)

TINY = Path(__file__).parent / "tiny-model"


def train(out: Path, files: list[Path], cache: Path, seed: int = 1) -> str:
    if not TRAIN_PYTHON.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{TRAIN_PYTHON} is missing: `make test` builds it (make .venv-train/.installed-stamp)")
        pytest.skip("no .venv-train: run `make .venv-train/.installed-stamp`")
    out.mkdir()
    shutil.copy(TINY / "triage.json", out / "triage.json")  # the fastText models it reviews
    args = [str(TRAIN_PYTHON), "-m", "triage.semantic", "--out", str(out), "--seed", str(seed), "--cache", str(cache)]
    for path in files:
        args += ["--corpus", str(path)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(args, cwd=ROOT, env=env, check=True, capture_output=True, text=True).stderr


def test_semantic_training_is_deterministic_and_incremental(tmp_path: Path, corpus: list[Path]) -> None:  # noqa: F811
    first = train(tmp_path / "a", corpus, tmp_path / "cache")
    assert "embedding 120 messages (cache: 0)" in first
    second = train(tmp_path / "b", corpus, tmp_path / "cache")
    assert "embedding" not in second  # every text was in the cache
    assert _digest(tmp_path / "a" / FILE) == _digest(tmp_path / "b" / FILE)
    meta = json.loads((tmp_path / "a" / FILE).read_text())
    assert meta["messages"] == 120 and set(meta["cv"]) == {"fasttext", "semantic", "ensemble", "second_opinion"}
    model = SemanticModel.load(tmp_path / "a")
    assert set(model.predict("提现还没到账").priority) == {"P1", "P2", "P3", "P4"}
