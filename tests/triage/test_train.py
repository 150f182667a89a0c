"""Training is deterministic for a seed, and the models it writes load at run time.

The trainer runs in ``.venv-train`` (``make model``; ``make test`` builds it): fasttext-wheel and
the runtime's fasttext-predict install the same module, so it is a process of its own here too.
"""

from __future__ import annotations

import json
import os
import subprocess
from hashlib import sha256
from pathlib import Path

import pytest

from rules.intent import IntentModel

ROOT = Path(__file__).resolve().parents[2]
TRAIN_PYTHON = ROOT / ".venv-train" / "bin" / "python"
# The tiny-model/ fixture's settings, every one given (a change of the defaults must not change it):
# a few seconds, a few dozen KB.
TINY = {"dim": 8, "epoch": 5, "lr": 0.5, "bucket": 2000, "wordNgrams": 1, "minn": 2, "maxn": 4}


def train(out: Path, corpus: list[Path], seed: int = 1) -> None:
    if not TRAIN_PYTHON.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{TRAIN_PYTHON} is missing: `make test` builds it (make .venv-train/.installed-stamp)")
        pytest.skip("no .venv-train: run `make .venv-train/.installed-stamp`")
    args = [str(TRAIN_PYTHON), "-m", "triage.train", "--out", str(out), "--seed", str(seed)]
    args += ["--params", json.dumps(TINY)]
    for path in corpus:
        args += ["--corpus", str(path)]
    subprocess.run(args, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True, capture_output=True)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    d = tmp_path_factory.mktemp("corpus")
    out = []
    for part in ("TEN", "TZH"):
        lines = (ROOT / "triage" / "corpus" / "train" / f"{part}.jsonl").read_text(encoding="utf-8").splitlines()
        path = d / f"{part}.jsonl"
        path.write_text("\n".join(lines[:60]) + "\n", encoding="utf-8")
        out.append(path)
    return out


def _digest(path: Path) -> str:
    # Digests, not bytes: a failing comparison of two 40 KB byte strings takes minutes to print.
    return sha256(path.read_bytes()).hexdigest()


def test_training_is_deterministic_for_a_seed(tmp_path: Path, corpus: list[Path]) -> None:
    train(tmp_path / "a", corpus)
    train(tmp_path / "b", corpus)
    train(tmp_path / "c", corpus, seed=2)
    for name in ("triage.ftz", "words.ftz", "triage.json"):
        assert _digest(tmp_path / "a" / name) == _digest(tmp_path / "b" / name), name
    assert _digest(tmp_path / "a" / "triage.ftz") != _digest(tmp_path / "c" / "triage.ftz")
    meta = json.loads((tmp_path / "a" / "triage.json").read_text())
    assert meta["messages"] == 120 and meta["params"]["dim"] == 8
    # What the trainer wrote, the runtime's predictor reads (the fixture is this same output).
    model = IntentModel.load(tmp_path / "a")
    assert set(model.predict("提现还没到账").priority) == {"P1", "P2", "P3", "P4"}
    for name in ("triage.ftz", "words.ftz"):
        assert _digest(tmp_path / "a" / name) == _digest(Path(__file__).parent / "tiny-model" / name), name


def test_vietnamese_and_russian_are_also_learnt_in_their_other_script() -> None:
    """``augmented``: each Vietnamese message with diacritics is learnt again without them, each
    Russian one in Cyrillic again in Latin letters, with the same labels; nothing else is added."""
    from triage.train import augmented

    expect = {"group": "payments", "priority": "P2"}
    rows = [
        {"id": "v", "lang": "vi", "text": "Rút tiền chưa về, đã 2 ngày", "expect": expect},
        {"id": "a", "lang": "vi", "text": "rut tien chua ve", "expect": expect},  # already without
        {"id": "r", "lang": "ru", "text": "Вывод не пришёл", "subject": "Счёт", "expect": expect},
        {"id": "l", "lang": "ru", "text": "vivod ne prishel", "expect": expect},  # already Latin
        {"id": "e", "lang": "en", "text": "withdrawal not arrived", "expect": expect},
    ]
    out = augmented(rows)
    assert out[: len(rows)] == rows
    assert [(r["id"], r["text"], r.get("subject"), r["expect"]) for r in out[len(rows) :]] == [
        ("v", "Rut tien chua ve, da 2 ngay", None, expect),
        ("r", "vyvod ne prishel", "schet", expect),
    ]
