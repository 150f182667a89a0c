"""Child processes: how one ended, and children that must not outlive the process that started
them (Linux's parent-death signal).

``set_parent_death_signal`` asks the kernel to send this process a signal when its parent dies
(``PR_SET_PDEATHSIG``); ``dies_with_parent`` is the same for a child that is not Python (a
benchmark's or a test's redis-server), run between the fork and the exec. The kernel ties the
signal to the *thread* that started the child: started from a worker thread, the child is
signalled when that thread ends. Elsewhere than Linux both do nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def exit_status(code: int | None) -> str:
    """How a child ended, for people: ``killed by SIGKILL``, ``exit code 1`` (``code``: a
    ``returncode``, negative for a signal; None: it never started)."""
    if code is None:
        return "not started"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


def set_parent_death_signal(sig: int = signal.SIGTERM) -> int:
    """Have ``sig`` sent to this process when its parent dies. Returns 0, or the errno of a
    failure (always 0 off Linux, where nothing is done)."""
    if sys.platform != "linux":
        return 0
    libc = ctypes.CDLL(None, use_errno=True)
    return 0 if libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) == 0 else ctypes.get_errno()


def dies_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` for ``subprocess.Popen``: the child gets SIGTERM when this process dies
    (however it dies, ``kill -9`` included), and exits at once if this process died before the
    signal was set. None off Linux."""
    if sys.platform != "linux":
        return None
    parent = os.getpid()
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork, not in the child

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return preexec
