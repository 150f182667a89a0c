"""Redis's instructions per routed message, counted by callgrind: a figure that noise does not move.

Run: ``.venv/bin/python bench/route_instructions.py [--ref HEAD] [--messages 2000] [--warm 8000]``

``switchboard bench`` measures CPU time, which the other tenants of a shared machine move by ±10%
from one run to the next: a change of a few percent in the route script cannot be told from noise
there. Here redis-server runs under valgrind's callgrind and counts the instructions it executes
while one worker routes ``--messages`` messages of the bench corpus (the same mix: a quarter of
them start a conversation), after ``--warm`` messages of other users routed uncounted (so queues,
streams and keyspace are the size a bench run reaches). Two runs of the same code agree to 0.1%.

Both sides run on the same corpus: the working tree (with ``--sla-policy N``: as with SLA policy N
in force, router/slatimer.py), and with ``--ref`` the route path of that git revision (its
lua/route.lua and lua/common.lua, and its router/routing.py that encodes their arguments).
Instructions are not time (cache misses and malloc are not weighed), so a change should also be
seen not to lose in ``switchboard bench``. Needs ``valgrind`` on PATH; takes ~30 s a side.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import shutil
import subprocess
import sys
import tempfile
import time
import types
from dataclasses import replace
from pathlib import Path
from typing import Any

from router import bench
from router import routing as tree_routing
from router import worker as worker_module
from router.config import Settings
from router.keys import ROUTER_GROUP, SENDER_GROUP
from router.model import encode
from router.redis import find_redis_server
from router.runtime import Runtime
from router.worker import Worker

ROOT = Path(__file__).resolve().parent.parent


def _at(ref: str, path: str) -> str:
    return subprocess.run(["git", "show", f"{ref}:{path}"], cwd=ROOT, capture_output=True, check=True, text=True).stdout


def _routing_at(ref: str) -> types.ModuleType:
    """router/routing.py as it was at ``ref``, loaded beside the current one."""
    module = types.ModuleType(f"routing_at_{ref}")
    exec(compile(_at(ref, "router/routing.py"), f"{ref}:router/routing.py", "exec"), module.__dict__)
    return module


def _script_at(ref: str) -> str:
    """The route script as router/scripts.py assembles it, from ``ref``'s Lua files."""
    groups = f"local ROUTER_GROUP, SENDER_GROUP = '{ROUTER_GROUP}', '{SENDER_GROUP}'\n"
    return groups + _at(ref, "router/lua/common.lua") + "\n" + _at(ref, "router/lua/route.lua")


def _route_arguments(routing: types.ModuleType) -> Any:
    """``routing.route_arguments``; of a revision before admission control (router/admission.py)
    or wait estimates (docs/waits.md), taking the worker's ``hold`` and ``waits`` too, passed on
    only to a revision that takes them (``hold`` is always "" for the bench corpus: nobody banned,
    no spam; its auto-replies have no placeholders)."""
    encode_args = routing.route_arguments
    known = inspect.signature(encode_args).parameters

    def as_the_revision_takes(entry_id: bytes, env: Any, decision: Any, *, retry: bool, **rest: Any) -> Any:
        return encode_args(entry_id, env, decision, retry=retry, **{k: v for k, v in rest.items() if k in known})

    return as_the_revision_takes


async def _route(worker: Worker, n: int) -> int:
    routed = 0
    while routed < n:
        routed += await worker.step()
    await worker.flush()
    return routed


async def _control(*args: str) -> None:
    """callgrind_control on the server (instrumentation on, counters zeroed, a dump written)."""
    proc = await asyncio.create_subprocess_exec(
        "callgrind_control", *args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    if await proc.wait():
        raise RuntimeError(f"callgrind_control {' '.join(args)} failed")


async def _drive(ref: str | None, messages: int, warm: int, url: str, sla_policy: int | None = None) -> int:
    """Fill the inbox, route ``warm`` messages uncounted, then ``messages`` counted; how many.
    ``sla_policy``: the working tree routes as with that SLA policy number in force."""
    settings = Settings().model_copy(update={"prefix": "bench:"})
    async with Runtime(settings, url) as rt:
        worker = Worker(rt)
        routing = tree_routing if ref is None else _routing_at(ref)
        if ref is not None:
            worker.scripts = replace(rt.scripts, route=rt.client.register_script(_script_at(ref)))
        worker._shared = (
            routing.shared_argument(worker.settings)
            if sla_policy is None
            else routing.shared_argument(worker.settings, sla_policy=sla_policy)
        )
        # The worker module's reference: the revision's argument encoding goes with its script.
        worker_module.route_arguments = _route_arguments(routing)
        envs = bench.corpus(warm, users=warm // 4, seed=5, account="warm")
        envs += bench.corpus(messages + 2 * settings.worker.batch, users=messages // 4, seed=3)
        pipe = rt.client.pipeline(transaction=False)
        for env in envs:
            pipe.xadd(rt.keys.inbox, {"env": encode(env)})
        await pipe.execute()
        await worker.step()  # leaves recovery: this new consumer has no pending entries
        await _route(worker, warm)
        pid = str((await rt.client.info("server"))["process_id"])
        await _control("-i", "on", pid)
        await _control("-z", pid)
        routed = await _route(worker, messages)
        await _control("-d", pid)
        if worker._next is not None:
            await worker._next  # read ahead, not routed: left pending
        return routed


def _count(ref: str | None, messages: int, warm: int, tmp: Path, sla_policy: int | None) -> dict[str, int | str]:
    sock, out = tmp / "redis.sock", tmp / "callgrind.out"
    server = [find_redis_server(), "--port", "0", "--unixsocket", str(sock), "--dir", str(tmp), "--appendonly", "yes"]
    server += ["--save", "", "--auto-aof-rewrite-percentage", "0"]
    valgrind = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
    proc = subprocess.Popen([*valgrind, *server], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            if sock.exists():
                break
            time.sleep(0.1)
        routed = asyncio.run(_drive(ref, messages, warm, f"unix://{sock}?db=0", None if ref else sla_policy))
    finally:
        proc.terminate()
        proc.wait(60)
    dump = tmp / "callgrind.out.1"  # the dump asked for (at exit, callgrind writes the rest to .out)
    totals = next(line for line in dump.read_text().splitlines() if line.startswith(("summary:", "totals:")))
    return {"side": ref or "tree", "messages": routed, "redis_instructions_per_msg": int(totals.split()[1]) // routed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ref", help="also count the route path of this git revision (e.g. HEAD)")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--warm", type=int, default=8000)
    parser.add_argument("--sla-policy", type=int, help="the tree routes with this SLA policy number in force")
    args = parser.parse_args()
    if not shutil.which("valgrind"):
        print("valgrind is not on PATH", file=sys.stderr)
        return 1
    results = []
    for ref in ([args.ref] if args.ref else []) + [None]:
        with tempfile.TemporaryDirectory(prefix="sb-instr-") as tmp:
            results.append(_count(ref, args.messages, args.warm, Path(tmp), args.sla_policy))
        print(json.dumps(results[-1]))
    if len(results) == 2:
        before, after = (int(r["redis_instructions_per_msg"]) for r in results)
        print(json.dumps({"tree/ref": round(after / before, 4)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
