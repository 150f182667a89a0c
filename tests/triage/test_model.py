"""The triage model's tokens, loading (and refusing) a model directory, and the combining policy.

``tiny-model/`` is a real model, trained by ``tests/triage/test_train.py``'s command on 120
corpus messages (dim 8, 5 epochs): small enough to keep in the repository, real enough to load.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from rules.intent import (
    FORMAT,
    IntentModel,
    ModelError,
    Policy,
    Prediction,
    Ruled,
    calibrated,
    combine,
    tokens,
)

TINY = Path(__file__).resolve().parent / "tiny-model"


def test_tokens_split_chinese_characters_and_hide_values() -> None:
    line = tokens("我的USDT提现 0x" + "ab" * 32 + " 还没到账!! 1,500.5 [redacted:seed_phrase]", "Re: 提现")
    assert line == "re : 提 现 我 的 usdt 提 现 _hex_ 还 没 到 账 ! ! _num_ _secret_"


def test_tokens_fold_width_case_and_hide_addresses() -> None:
    assert tokens("ＨＥＬＬＯ mail me at a.b@x.io or see https://x.io/t?q=1") == "hello mail me at _email_ or see _url_"


def test_a_model_directory_loads_and_predicts_calibrated_probabilities() -> None:
    model = IntentModel.load(TINY)
    p = model.predict("my withdrawal has not arrived", "help")
    assert set(p.group) == set(model.meta["group"]["labels"]) and set(p.priority) == {"P1", "P2", "P3", "P4"}
    assert abs(sum(p.group.values()) - 1) < 1e-6 and abs(sum(p.priority.values()) - 1) < 1e-6


def test_predict_is_calibrated_marginals_to_the_last_bit() -> None:
    # predict() sums and calibrates in lists (the hot path); training fits the temperatures with
    # marginals() and calibrated() on dicts: the two must give the very same floats, in label order.
    model = IntentModel.load(TINY)
    t_group, t_priority = model.meta["group"]["temperature"], model.meta["priority"]["temperature"]
    for text, subject in [
        ("my withdrawal has not arrived", "help"),
        ("我的提现还没到账 0x" + "ab" * 32, None),
        ("", None),
    ]:
        group, priority = model.marginals(text, subject)
        p = model.predict(text, subject)
        assert list(group) == list(model.group_labels) and list(priority) == list(model.priority_labels)
        assert list(p.group.items()) == list(calibrated(group, t_group).items())
        assert list(p.priority.items()) == list(calibrated(priority, t_priority).items())


def test_tokens_of_ascii_text_skip_no_space_scripts_alone() -> None:
    assert tokens("Withdrawal 0.5 BTC, txid 0x" + "ab" * 32 + "!") == "withdrawal _num_ btc , txid _hex_ !"
    assert tokens("提现 BTC") == "提 现 btc"


def _copy(tmp_path: Path) -> Path:
    d = tmp_path / "model"
    shutil.copytree(TINY, d)
    return d


def test_an_unknown_format_is_refused(tmp_path: Path) -> None:
    d = _copy(tmp_path)
    meta = json.loads((d / "triage.json").read_text())
    (d / "triage.json").write_text(json.dumps({**meta, "format": FORMAT + 1}))
    with pytest.raises(ModelError, match=f"format {FORMAT + 1}, this version reads 2 or 3"):
        IntentModel.load(d)


def test_a_corrupt_or_missing_model_file_is_refused(tmp_path: Path) -> None:
    d = _copy(tmp_path)
    (d / "triage.ftz").write_bytes(b"\x00" * 100)
    with pytest.raises(ModelError, match=r"the model cannot be loaded: view triage\.ftz"):
        IntentModel.load(d)
    shutil.copy(TINY / "triage.ftz", d / "triage.ftz")
    (d / "words.ftz").unlink()  # every view is needed
    with pytest.raises(ModelError, match=r"the model cannot be loaded: view words\.ftz"):
        IntentModel.load(d)
    with pytest.raises(ModelError, match=r"no readable triage\.json"):
        IntentModel.load(tmp_path / "nowhere")


def test_labels_that_differ_from_the_metadata_are_refused(tmp_path: Path) -> None:
    d = _copy(tmp_path)
    meta = json.loads((d / "triage.json").read_text())
    meta["group"]["labels"] = ["general", "security"]
    (d / "triage.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="labels"):
        IntentModel.load(d)


def test_the_prediction_is_the_average_of_the_views() -> None:
    """Each view on its own is a model of format 2 (``triage.ftz`` alone, still read); the model's
    uncalibrated probabilities are their average, pair by pair."""
    import fasttext

    model = IntentModel.load(TINY)
    assert model.meta["format"] == FORMAT == 3 and list(model.meta["views"]) == ["triage.ftz", "words.ftz"]
    one = [IntentModel(model.meta, [fasttext.load_model(str(TINY / name))]) for name in model.meta["views"]]
    for text in ("my withdrawal has not arrived", "我的提现还没到账", "hacked!!"):
        group, priority = model.marginals(text)
        parts = [m.marginals(text) for m in one]
        assert parts[0] != parts[1]  # the views differ
        for label in group:
            assert group[label] == pytest.approx((parts[0][0][label] + parts[1][0][label]) / 2, abs=1e-12)
        for label in priority:
            assert priority[label] == pytest.approx((parts[0][1][label] + parts[1][1][label]) / 2, abs=1e-12)


def test_a_model_of_format_2_loads_as_its_one_view(tmp_path: Path) -> None:
    d = _copy(tmp_path)
    meta = json.loads((d / "triage.json").read_text())
    del meta["views"]
    (d / "triage.json").write_text(json.dumps({**meta, "format": 2}))
    (d / "words.ftz").unlink()
    old = IntentModel.load(d)
    import fasttext

    alone = IntentModel(meta, [fasttext.load_model(str(TINY / "triage.ftz"))])
    assert old.marginals("my withdrawal has not arrived") == alone.marginals("my withdrawal has not arrived")


NOT_VIEWS = [[], ["../triage.ftz"], ["triage.json"], "triage.ftz", None, ["triage.ftz", "triage.ftz"], [1]]


@pytest.mark.parametrize("views", NOT_VIEWS)
def test_views_that_are_not_plain_file_names_are_refused(tmp_path: Path, views: object) -> None:
    d = _copy(tmp_path)
    meta = json.loads((d / "triage.json").read_text())
    (d / "triage.json").write_text(json.dumps({**meta, "views": views}))
    with pytest.raises(ModelError, match="views"):
        IntentModel.load(d)


def test_a_two_model_directory_of_format_1_is_refused_with_what_to_do(tmp_path: Path) -> None:
    d = _copy(tmp_path)
    meta = json.loads((d / "triage.json").read_text())
    (d / "triage.json").write_text(json.dumps({**meta, "format": 1}))
    with pytest.raises(ModelError, match=r"reads 2 or 3 \(two models: retrain it with `switchboard model train`\)"):
        IntentModel.load(d)


def test_pairs_missing_from_the_model_are_refused(tmp_path: Path) -> None:
    d = _copy(tmp_path)
    meta = json.loads((d / "triage.json").read_text())
    meta["labels"].append("general|P1" if "general|P1" not in meta["labels"] else "security|P4")
    (d / "triage.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match=r"the labels of view triage\.ftz .* are not those of triage\.json"):
        IntentModel.load(d)


def _prediction(group: str, p_group: float, priority: str, p_priority: float, p1: float = 0.0) -> Prediction:
    groups = {group: p_group, "other": (1 - p_group) / 2, "else": (1 - p_group) / 2}
    priorities = {priority: p_priority, "P1": max(p1, p_priority if priority == "P1" else 0.0)}
    return Prediction(groups, priorities)


NOBODY = Ruled()
HARD = Ruled("general", False, 3, 3, "rule", "rule")  # a hard rule routed to general and set P3


@pytest.mark.parametrize(
    ("ruled", "prediction", "expected"),
    [
        # No rule routed: the model routes when confident enough, and sets the priority.
        (NOBODY, _prediction("payments", 0.8, "P2", 0.7), ("payments", 2)),
        (NOBODY, _prediction("payments", 0.4, "P2", 0.4), ("general", 3)),
        # A hard rule routed and set P3: the model changes neither, not even to a lower priority.
        (HARD, _prediction("trading", 0.99, "P4", 0.99), ("general", 3)),
        # ... but raises any message to P1 when P(P1) is high enough.
        (HARD, _prediction("trading", 0.99, "P4", 0.3, p1=0.9), ("general", 1)),
    ],
)
def test_the_policy_routes_where_no_rule_did_and_only_raises_to_p1(
    ruled: Ruled, prediction: Prediction, expected: tuple[str, int]
) -> None:
    policy = Policy(route_min=0.5, priority_min=0.5, p1_min=0.6, override_route_min=0.5, override_priority_min=0.5)
    assert combine("general", 3, ruled, prediction, policy) == expected


def test_the_shipped_model_loads_and_was_trained_on_this_corpus() -> None:
    """rules/models/ is `make model`'s output, shipped: it must load, and be retrained (its
    ``corpus`` digest changes) whenever triage/corpus/train/ changes."""
    from triage.train import CORPUS, digest

    shipped = Path(__file__).resolve().parents[2] / "rules" / "models"
    model = IntentModel.load(shipped)
    assert model.meta["corpus"] == digest(sorted((CORPUS / "train").glob("*.jsonl")))
    assert set(model.meta["group"]["labels"]) == {
        "complaints", "general", "payments", "security", "trading", "verification"
    }  # fmt: skip
    top, _ = Prediction.top(model.predict("someone logged into my account and withdrew everything").group)
    assert top == "security"
