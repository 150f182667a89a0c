"""``switchboard model publish|versions|live|shadow|rollback|status|train``: published triage models
(router/modelstore.py) from the command line, and training one in the trainer's environment."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from router.errors import BadRequest, NotFound
from router.modelstore import ModelRefused, ModelVersion, read_dir

if TYPE_CHECKING:
    from router.runtime import Runtime

#: The source checkout this package runs from (training needs its ``triage/`` and, by default, its
#: ``.venv-train``: the fastText trainer cannot live in the runtime's environment, docs/triage.md).
CHECKOUT = Path(__file__).resolve().parents[1]


def version_or_off(value: str) -> int | None:
    """``model shadow``'s argument: a version number, or "off"."""
    return None if value == "off" else int(value)


def _line(v: ModelVersion, live: int | None, shadow: int | None) -> str:
    at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(v.at))
    state = "live" if v.number == live else "shadow" if v.number == shadow else ""
    trained = f"{v.meta.get('messages', '?')} messages, seed {v.meta.get('seed', '?')}"
    return f"v{v.number:<4} {state:<6} {v.digest}  {at}  by {v.author}  ({trained})  {v.comment}"


async def run(rt: Runtime, args: argparse.Namespace) -> int:
    """One of the published-model actions; a refusal is printed with its reason (exit 1)."""
    try:
        return await _run(rt, args)
    except (ModelRefused, NotFound, BadRequest) as exc:
        print(f"refused: {exc}", file=sys.stderr)
        if args.action in ("publish", "live", "rollback"):
            print("the running model stays in force", file=sys.stderr)
        return 1


async def _run(rt: Runtime, args: argparse.Namespace) -> int:
    store = rt.models
    if args.action == "publish":
        files = read_dir(Path(args.dir))
        v = await store.publish(files, args.by, args.comment, shadow=args.shadow, request_id=args.request_id)
        print(f"published model v{v.number} ({v.digest}) as {'shadow' if args.shadow else 'live'} by {v.author}")
    elif args.action == "versions":
        state, versions = await store.state(), await store.versions()
        if args.json:
            _print_json({"live": state.live, "shadow": state.shadow, "versions": [v.to_dict() for v in versions]})
        else:
            if state.live is None:
                print("live: the configured model ([rules] model)")
            for v in versions:
                print(_line(v, state.live, state.shadow))
    elif args.action == "live":
        v = await store.make_live(args.number, args.by, request_id=args.request_id)
        print(f"model v{v.number} ({v.digest}) is live")
    elif args.action == "shadow":
        shadow = await store.set_shadow(args.number, args.by, request_id=args.request_id)
        print(f"model v{shadow.number} ({shadow.digest}) is the shadow" if shadow else "no shadow model")
    elif args.action == "rollback":
        back = await store.rollback(args.by, request_id=args.request_id)
        print(f"model v{back.number} ({back.digest}) is live again" if back else "the configured model is live again")
    elif args.action == "status":
        status = await store.status()
        if args.json:
            _print_json(status)
        else:
            _print_status(status)
    return 0


def _print_status(status: dict[str, Any]) -> None:
    print(f"live: {_name(status['live'])}   shadow: {status['shadow'] or 'none'}")
    print(f"messages the shadow was asked about: {status['observed']}")
    for key, what in (("corrected", "agents' corrections"), ("closed_uncorrected", "closed without a correction")):
        scores = status[key]
        n = scores["messages"]
        print(f"agreement with {what} ({n} messages): group / priority")
        for who in ("shadow", "live", "routed"):
            g, p = scores[who]["group"], scores[who]["priority"]
            print(f"  {who:<7} {g:>5} {_pct(g, n):>7}   {p:>5} {_pct(p, n):>7}")


def _name(live: int | None) -> str:
    return f"v{live}" if live is not None else "the configured model"


def _pct(k: int, n: int) -> str:
    return f"{100 * k / n:.1f}%" if n else "-"


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


def train(args: argparse.Namespace, trainer: Path | None) -> int:
    """``python -m triage.train`` under the trainer's interpreter (``rules.trainer_python``, else
    the checkout's ``.venv-train``): the shipped corpus plus a team's exported labels
    (``--labels``), into ``--out``. Returns the trainer's exit status."""
    python = trainer or CHECKOUT / ".venv-train" / "bin" / "python"
    if not (CHECKOUT / "triage" / "train.py").is_file():
        print(f"training needs a source checkout (triage/ is not beside {CHECKOUT / 'router'})", file=sys.stderr)
        return 2
    if not python.is_file():
        print(
            f"no trainer interpreter at {python}: build it with `make .venv-train/.installed-stamp` (or `make model`)"
            ", or set [rules] trainer_python",
            file=sys.stderr,
        )
        return 2
    command = [str(python), "-m", "triage.train", "--out", str(args.out.resolve()), "--seed", str(args.seed)]
    if args.labels is not None:
        # --corpus replaces the default training files: name them, then the team's own.
        for path in [*sorted((CHECKOUT / "triage" / "corpus" / "train").glob("*.jsonl")), args.labels.resolve()]:
            command += ["--corpus", str(path)]
    if args.params is not None:
        command += ["--params", args.params]
    env = {**os.environ, "PYTHONPATH": str(CHECKOUT)}
    return subprocess.run(command, cwd=CHECKOUT, env=env, check=False).returncode
