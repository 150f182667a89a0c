"""A rule draft from the console is compiled first in a child process with limits.

A draft is untrusted input to an expensive compiler: nested YAML aliases (763 bytes took 13.5 s
and 1.15 GB inside the routing process, one level more 6 GB), huge regex alternations. The loader
refuses what it can recognise (rules/loader.py: node and alias limits; rules/regex.py: pattern
size limits); this is the backstop for what nobody foresaw: the child runs with an address-space
limit (RLIMIT_AS) and a CPU limit, the parent kills it at the wall-time limit, and either way the
draft is refused with the reason while the console and the workers beside it run on.

Only a draft that compiled in the child is compiled again in the console's process (its engine is
needed to try and replay messages), within the limits the child has just shown it respects.

Run as ``python -m router.drafts MEMORY_MB CPU_S`` with the draft on stdin; one JSON object on
stdout: ``{"errors": [...], "warnings": [...]}`` (the RuleError fields).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import resource
import sys
from typing import Any

from router.children import exit_status
from rules import Engine, RuleError, RuleSetError

FILENAME = "draft.yaml"


def _finding(reason: str) -> RuleError:
    return RuleError(FILENAME, 1, 1, None, reason)


def _decode(items: list[dict[str, Any]]) -> list[RuleError]:
    return [RuleError(**item) for item in items]


async def check(source: str, memory_mb: int, timeout_s: float) -> tuple[list[RuleError], list[RuleError]]:
    """(errors, warnings) of compiling ``source`` in a limited child process."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "router.drafts",
        str(memory_mb),
        str(math.ceil(timeout_s)),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(source.encode("utf-8")), timeout_s)
    except TimeoutError:
        return [_finding(f"the draft takes longer than {timeout_s:g} s to compile: simplify it")], []
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    try:
        result = json.loads(out)
        return _decode(result["errors"]), _decode(result["warnings"])
    except (ValueError, KeyError, TypeError):
        # Killed by a limit (SIGXCPU) or a crash: no verdict, so the draft is refused. Out of
        # address space the child usually raises MemoryError (above); with the compiled engine it
        # was also seen to crash (SIGSEGV) or to loop until the CPU limit (which allocation does
        # that was not found).
        tail = err.decode("utf-8", "replace").strip().splitlines()[-1:] or [exit_status(proc.returncode)]
        return [_finding(f"the draft could not be compiled within the limits ({memory_mb} MB): {tail[0]}")], []


def _child(memory_mb: int, cpu_s: int) -> None:
    limit = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
    source = sys.stdin.buffer.read().decode("utf-8", "replace")
    errors: list[RuleError] = []
    warnings: list[RuleError] = []
    try:
        warnings = list(Engine.from_yaml(source, FILENAME).warnings)
    except RuleSetError as exc:
        errors = exc.errors
    except MemoryError:
        errors = [_finding(f"the draft needs more than {memory_mb} MB to compile: simplify it")]
    except RecursionError:
        errors = [_finding("the draft is nested too deeply")]
    json.dump(
        {"errors": [dataclasses.asdict(e) for e in errors], "warnings": [dataclasses.asdict(e) for e in warnings]},
        sys.stdout,
    )


if __name__ == "__main__":
    _child(int(sys.argv[1]), int(sys.argv[2]))
