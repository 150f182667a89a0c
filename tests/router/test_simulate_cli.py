"""``switchboard simulate`` (router/simulate_cli.py): input errors named, the JSON figures."""

from __future__ import annotations

import io
import json
from pathlib import Path

from router.cli import build_parser
from router.simulate_cli import run

POLICY = """\
version: 1
targets:
  P1: {first_response: 5m}
  P2: {first_response: 1h}
  P3: {first_response: 15m}
  P4: {}
"""


def simulate(tmp_path: Path, *argv: str) -> tuple[int, str, str]:
    policy = tmp_path / "sla.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    args = build_parser().parse_args(["simulate", "--policy", str(policy), *argv])
    out, err = io.StringIO(), io.StringIO()
    return run(args, out, err), out.getvalue(), err.getvalue()


def test_a_recorded_export_replayed(tmp_path: Path) -> None:
    export = tmp_path / "arrivals.jsonl"
    lines = [{"group": "payments", "received_at": 1_796_000_000 + 60 * i} for i in range(10)]
    export.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    code, out, _ = simulate(
        tmp_path, "--traffic", str(export), "--agents", "payments=1", "--aht", "120", "--handle", "fixed", "--json"
    )
    [row] = json.loads(out)["groups"]
    # One a minute, two minutes each, one agent: the k-th (from 0) waits k minutes; median of
    # 0 … 9 minutes: 4.5; all within the 15 minutes allowed.
    assert code == 0 and row["arrivals"] == 10 and row["wait_p50_s"] == 270.0 and row["attainment"] == 1.0


def test_a_synthetic_surge_is_seeded(tmp_path: Path) -> None:
    argv = ("--traffic", "surge:payments=120", "--hours", "1", "--start", "2026-12-07T09:00Z", "--agents")
    first = simulate(tmp_path, *argv, "payments=2x2", "--aht", "300", "--json")
    assert first == simulate(tmp_path, *argv, "payments=2x2", "--aht", "300", "--json")
    assert 80 < json.loads(first[1])["groups"][0]["arrivals"] < 160  # Poisson around 120


def test_bad_input_is_named(tmp_path: Path) -> None:
    code, _, err = simulate(tmp_path, "--traffic", "surge:payments=10", "--agents", "payments=two", "--aht", "60")
    assert code == 1 and "--agents 'payments=two': expected GROUP=N or GROUP=NxCAPACITY" in err
    code, _, err = simulate(tmp_path, "--traffic", "surge:payments=10", "--agents", "security=1", "--aht", "60")
    assert code == 1 and "no agents for group(s) payments" in err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"group": "payments"}\n', encoding="utf-8")
    code, _, err = simulate(tmp_path, "--traffic", str(bad), "--agents", "payments=1", "--aht", "60")
    assert code == 1 and "bad.jsonl:1: received_at missing" in err
