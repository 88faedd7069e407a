"""Imported by the fork server alone (the last of warm.WARM_IMPORTS): when the engine ends, the fork server ends at
once instead of tearing down every library it preloaded (0.2 s after each run, in the engine's process group). Its
children (a Processing script runs its own exit handlers) do not inherit this one."""

import atexit
import os
import sys


def _exit_now() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if sys.argv == ["-c"] and "multiprocessing.forkserver" in sys.modules:  # the fork server: `python -c "…main(…)"`
    atexit.register(_exit_now)  # runs first: registered after the handlers of the libraries preloaded before it
    os.register_at_fork(after_in_child=lambda: atexit.unregister(_exit_now))
