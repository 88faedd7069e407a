"""Child processes that do not outlive the process that started them (Linux's PR_SET_PDEATHSIG).

A process killed with SIGKILL cannot stop its children; with `preexec_fn=dies_with_parent()` the kernel sends
each child SIGKILL when its parent ends. (Linux ties this to the parent *thread*: start the child from a thread
that outlives it, as a thread waiting for the child does.) Elsewhere than Linux it does nothing.
`adopt_orphans()` is the other direction (PR_SET_CHILD_SUBREAPER): descendants whose parent ended become this
process's children, to be waited for (bench/measure.py).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
_prctl = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True).prctl if sys.platform == "linux" else None


def dies_with_parent():
    """A `preexec_fn` for subprocess.Popen: the child gets SIGKILL when this process (thread) ends."""
    parent = os.getpid()

    def preexec() -> None:
        if _prctl is None:
            return
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent ended before the request took effect
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def adopt_orphans() -> None:
    """Become the child subreaper of this process's descendants: one whose parent ends is reparented here, where it
    can be waited for (Linux; elsewhere nothing)."""
    if _prctl is not None:
        _prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
