"""Warm interpreters: one fork server per engine process imports the heavy libraries once, and every training
worker and Processing script starts from it with them already loaded.

A cold Python spends about a second importing pandas, scipy and scikit-learn before its first line of work; a
10k-trade run paid that in each of its three Processing scripts and both training workers, on two cores, more CPU
than the training itself. Here multiprocessing's "forkserver" is started when an execution starts (`start`),
imports WARM_IMPORTS while the execution's first steps run (about a second), and forks a child for each process
asked of it: a new process with its own memory and environment, none of the engine's threads or state, the
libraries already loaded. `ready` is set once it serves. What a Processing bundle ships (arch) is not preloaded: a
script imports its own copy, as in its container.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import os
import threading
from multiprocessing.connection import wait

# What the Processing scripts (scikit-learn image: numpy, pandas, scipy, scikit-learn), the Linear Learner's training
# jobs and the tuner's Gaussian process import.
WARM_IMPORTS = ("numpy", "pandas", "scipy.stats", "sklearn.linear_model", "sklearn.metrics", "sklearn.preprocessing",
                "sklearn.gaussian_process", "threadpoolctl", "pipelines.local.steps.tuning",
                "pipelines.local.forkserver_exit")

context = multiprocessing.get_context("forkserver")
context.set_forkserver_preload(list(WARM_IMPORTS))


ready = threading.Event()  # set once the fork server has done its imports and serves
_watching = threading.Lock()  # held for good by the first start(), which starts the thread that sets `ready`


def start() -> None:
    """Start the fork server now, if it is not running: its imports proceed while the caller goes on."""
    multiprocessing.forkserver.ensure_running()
    if _watching.acquire(blocking=False):
        threading.Thread(target=_signal_when_serving, daemon=True, name="fork-server-ready").start()


def _signal_when_serving() -> None:
    """Set `ready` once the fork server forks: it accepts no request before its imports are done."""
    child = context.Process(target=int, name="fork-server-ready")
    child.start()
    child.join()
    ready.set()


def exit_with_parent() -> None:
    """In a child of the fork server: end at once when the process that asked for it ends, whatever way (its
    sentinel becomes readable), so that no child outlives the engine."""

    def watch() -> None:
        wait([multiprocessing.parent_process().sentinel])
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()
