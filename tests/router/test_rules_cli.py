"""The offline commands, called directly (and once through the CLI when it exists)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from router import bench_rules, rules_cli
from tests.rules.conftest import rules_yaml

ROOT = Path(__file__).resolve().parents[2]
SEED = "athlete mechanic twin pluck cousin physical route trend jaguar pet already around"
RULES = """\
  - id: pay
    when: {contains_any: [withdraw, 提现]}
    then: {tags: [payments], route: payments, priority: P2}
  - id: sec
    when: {any: [{contains_any: [hacked, seed phrase]}, {detector: seed_phrase}]}
    then: {tags: [security], route: security, priority: P1}
"""


@pytest.fixture
def rule_file(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(rules_yaml(RULES), encoding="utf-8")
    return path


def test_validate_ok(rule_file: Path) -> None:
    out = io.StringIO()
    assert rules_cli.validate(str(rule_file), out) == 0
    assert "ok — 2 rules" in out.getvalue()


def test_validate_prints_every_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        rules_yaml(
            "  - {id: a, when: {regex: '(?=x)'}, then: {route: nope}}\n  - {id: a, when: {}, then: {tags: [x]}}\n"
        ),
        encoding="utf-8",
    )
    out = io.StringIO()
    assert rules_cli.validate(str(path), out) == 1
    lines = out.getvalue().splitlines()
    errors = [ln for ln in lines if ln.startswith(f"{path}:") and ": rule a: " in ln]
    assert len(errors) == 4, lines  # regex, route, duplicate id, empty condition
    assert all(ln.split(":")[1].isdigit() and ln.split(":")[2].isdigit() for ln in errors)


def test_validate_prints_warnings(tmp_path: Path) -> None:
    path = tmp_path / "w.yaml"
    path.write_text(
        rules_yaml(
            "  - {id: all, when: {always: true}, then: {tags: [x], stop: true}}\n"
            "  - {id: dead, when: {channel: x}, then: {tags: [y]}}\n"
        ),
        encoding="utf-8",
    )
    out = io.StringIO()
    assert rules_cli.validate(str(path), out) == 0
    assert ": rule dead: warning: never fires" in out.getvalue()


def test_validate_missing_file(tmp_path: Path) -> None:
    out = io.StringIO()
    assert rules_cli.validate(str(tmp_path / "nope.yaml"), out) == 1


def test_route_json_lines(rule_file: Path) -> None:
    inp = io.StringIO(
        json.dumps({"id": "m1", "channel": "telegram", "text": "我的提现没到", "lang": "xx"})
        + "\n"
        + "not json\n"
        + json.dumps(
            {
                "channel": "email",
                "text": f"my words {SEED}",
                "subject": "help",
                "sender": {"tier": "vip"},
                "conversation": "follow_up",
                "extra": 1,
            }
        )
        + "\n"
        + json.dumps({"text": "no channel"})
        + "\n"
    )
    out = io.StringIO()
    assert rules_cli.route(str(rule_file), inp, out) == 1  # some lines failed
    rows = [json.loads(ln) for ln in out.getvalue().splitlines()]
    assert len(rows) == 4
    assert rows[0]["id"] == "m1" and rows[0]["group"] == "payments" and rows[0]["priority"] == "P2"
    assert rows[0]["language"] == "zh"  # detected; the samples' `lang` is not read
    assert rows[1]["error"].startswith("line 2:") and rows[1]["line"] == 2
    assert rows[2]["group"] == "security" and SEED not in json.dumps(rows[2])
    assert "secret-leak" in rows[2]["tags"] and rows[2]["redactions"][0]["kind"] == "seed_phrase"
    for key in ("group", "priority", "tags", "language", "text", "subject", "redactions", "auto_reply", "trace"):
        assert key in rows[2]
    assert "channel" in rows[3]["error"]


def test_route_default_rules() -> None:
    out = io.StringIO()
    inp = io.StringIO(json.dumps({"channel": "telegram", "text": "hello"}) + "\n")
    assert rules_cli.route(None, inp, out) == 0
    assert json.loads(out.getvalue())["group"]


def test_route_bad_rules(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("version: 1\n", encoding="utf-8")
    out = io.StringIO()
    assert rules_cli.route(str(path), io.StringIO(""), out) == 1
    assert json.loads(out.getvalue())["error"] == "invalid rule file"


@pytest.fixture
def samples(tmp_path: Path) -> Path:
    rows = [
        {
            "id": "s1",
            "channel": "telegram",
            "text": "withdraw stuck",
            "expect": {"group": "payments", "priority": "P2", "tags": ["payments"]},
            "note": "ok",
        },
        {
            "id": "s2",
            "channel": "telegram",
            "text": "I was hacked",
            "expect": {"group": "security", "priority": "P1", "tags": ["security"]},
            "note": "ok",
        },
        {
            "id": "s3",
            "channel": "telegram",
            "text": f"is this right {SEED}",
            "expect": {"group": "security", "priority": "P1", "tags": ["security", "secret-leak"]},
            "note": "seed",
        },
        {
            "id": "s4",
            "channel": "telegram",
            "text": "random question about fees",
            "expect": {"group": ["payments", "general"], "priority": "P3", "tags": []},
            "note": "list",
        },
        {
            "id": "s5",
            "channel": "telegram",
            "text": "my account was hijacked",
            "expect": {"group": "security", "priority": "P1", "tags": ["security"]},
            "note": "miss",
        },
    ]
    path = tmp_path / "samples.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def test_eval_json(rule_file: Path, samples: Path) -> None:
    out = io.StringIO()
    assert rules_cli.evaluate_samples(str(rule_file), str(samples), True, out) == 0
    report = json.loads(out.getvalue())
    assert report["samples"] == 5
    assert report["group_accuracy"] == 0.8
    assert report["p1_recall"] == pytest.approx(2 / 3, abs=1e-3)
    assert report["secrets"] == {
        "expected": 1,
        "redacted": 1,
        "failures": [],
        "false_positives": [],
        "ok": True,
    }
    assert [m["id"] for m in report["misrouted"]] == ["s5"]
    assert report["confusion"]["security"] == {"general": 1, "security": 2}
    assert report["per_group"]["security"]["recall"] == pytest.approx(2 / 3, abs=1e-3)
    assert report["per_group"]["security"]["precision"] == 1.0


def test_eval_reads_a_directory_of_sample_files_as_one_set(rule_file: Path, samples: Path, tmp_path: Path) -> None:
    """A held-out set kept as several files (triage/corpus/dev2/) is one ``--samples`` argument."""
    whole = io.StringIO()
    rules_cli.evaluate_samples(str(rule_file), str(samples), True, whole)
    lines = samples.read_text(encoding="utf-8").splitlines()
    parts = tmp_path / "parts"
    parts.mkdir()
    (parts / "A.jsonl").write_text("\n".join(lines[:2]) + "\n", encoding="utf-8")
    (parts / "B.jsonl").write_text("\n".join(lines[2:]) + "\n", encoding="utf-8")
    (parts / "notes.txt").write_text("not a sample file", encoding="utf-8")
    out = io.StringIO()
    assert rules_cli.evaluate_samples(str(rule_file), str(parts), True, out) == 0
    assert json.loads(out.getvalue()) == json.loads(whole.getvalue())
    with (parts / "B.jsonl").open("a", encoding="utf-8") as f:
        f.write("not json\n")
    out = io.StringIO()
    assert rules_cli.evaluate_samples(str(rule_file), str(parts), True, out) == 1  # a bad line is an error
    assert json.loads(out.getvalue())["bad_lines"] == [f"B.jsonl line {len(lines) - 1}: Expecting value"]
    (tmp_path / "empty").mkdir()
    out = io.StringIO()
    assert rules_cli.evaluate_samples(str(rule_file), str(tmp_path / "empty"), True, out) == 1
    assert "no *.jsonl file" in out.getvalue()


def test_eval_text(rule_file: Path, samples: Path) -> None:
    out = io.StringIO()
    assert rules_cli.evaluate_samples(str(rule_file), str(samples), False, out) == 0
    text = out.getvalue()
    assert "group accuracy:" in text and "80.0%" in text
    assert "misrouted (1):" in text and "s5" in text
    assert "confusion" in text and SEED not in text


def test_eval_counts_p4_raised_to_p1_in_a_table_of_priorities(rule_file: Path, samples: Path) -> None:
    """Issue 15 bounds the questions the model or a rule sends to the P1 lane: the table says
    how many P4 samples were decided P1, and every expected priority against the one decided."""
    question = {
        "id": "s6",
        "channel": "telegram",
        "text": "how do I avoid getting hacked?",
        "expect": {"group": "general", "priority": "P4"},
        "note": "a question, caught by the P1 rule",
    }
    with samples.open("a", encoding="utf-8") as f:
        f.write(json.dumps(question) + "\n")
    out = io.StringIO()
    rules_cli.evaluate_samples(str(rule_file), str(samples), True, out)
    report = json.loads(out.getvalue())
    assert report["p4_to_p1"] == 1.0 and report["p4_support"] == 1
    assert report["priority_confusion"] == {"P1": {"P1": 2, "P3": 1}, "P2": {"P2": 1}, "P3": {"P3": 1}, "P4": {"P1": 1}}
    out = io.StringIO()
    rules_cli.evaluate_samples(str(rule_file), str(samples), False, out)
    text = out.getvalue()
    assert "P4 raised to P1:   100.0% (1/1)" in text
    table = text.split("priorities (rows: expected, columns: got)\n")[1].splitlines()[:5]
    assert table[1].split() == ["P1", "2", "0", "1", "0"] and table[4].split() == ["P4", "1", "0", "0", "0"]


def test_eval_figures_only_leaves_out_the_samples_it_got_wrong(rule_file: Path, samples: Path) -> None:
    """``--figures-only``: the figures of a test set without a word of its messages, for whoever
    tunes rules or a model and must not read that set."""
    full, figures = io.StringIO(), io.StringIO()
    rules_cli.evaluate_samples(str(rule_file), str(samples), True, full)
    rules_cli.evaluate_samples(str(rule_file), str(samples), True, figures, only_figures=True)
    whole = json.loads(full.getvalue())
    assert whole["misrouted"] and json.loads(figures.getvalue()) == {
        k: v for k, v in whole.items() if k not in ("misrouted", "priority_misses", "tag_misses")
    }
    text = io.StringIO()
    rules_cli.evaluate_samples(str(rule_file), str(samples), False, text, only_figures=True)
    assert "group accuracy:" in text.getvalue() and "misrouted" not in text.getvalue()
    assert "hijacked" not in text.getvalue() and "s5" not in text.getvalue()
    cli = subprocess.run(
        [sys.executable, "-m", "router", "rules", "eval", str(rule_file), "--samples", str(samples), "--figures-only"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert cli.returncode == 0 and "P1 recall:" in cli.stdout and "hijacked" not in cli.stdout, cli.stderr


def test_secret_check_fails_when_a_secret_is_not_redacted(rule_file: Path, tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_text(
        json.dumps(
            {
                "id": "x",
                "channel": "telegram",
                "text": "no secret here",
                "expect": {"group": "general", "tags": ["secret-leak"]},
            }
        )
        + "\n"
    )
    out = io.StringIO()
    rules_cli.evaluate_samples(str(rule_file), str(path), True, out)
    assert json.loads(out.getvalue())["secrets"]["ok"] is False


def test_schema_command() -> None:
    out = io.StringIO()
    assert rules_cli.schema(out) == 0
    assert json.loads(out.getvalue())["title"] == "Switchboard rule file"


def test_bench_small_run_json() -> None:
    out = io.StringIO()
    assert bench_rules.run(True, out, messages=300) == 0
    r = json.loads(out.getvalue())
    for key in ("msgs_per_s", "naive_msgs_per_s", "avg_rules_matched", "build_s"):
        assert set(r[key]) == {"10", "100", "1000", "10000"}
    assert r["avg_rules_matched"]["10000"] <= 2 * r["avg_rules_matched"]["10"]
    assert r["redos_ms"] < 1000
    for key in (
        "default_msgs_per_s",
        "default_no_model_msgs_per_s",
        "default_carried_msgs_per_s",
        "precheck_msgs_per_s",
    ):
        assert r[key] > 0, key


def test_cli_rules_validate(rule_file: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "router", "rules", "validate", str(rule_file)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok" in proc.stdout
