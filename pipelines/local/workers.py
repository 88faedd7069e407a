"""Warm worker processes for training jobs: started once, their imports done before the first job, reused.

A `WorkerPool` holds `size` processes forked from the engine's fork server (pipelines/local/warm.py, where
numpy, pandas and the algorithm are imported already), each running one job at a time. A worker imports its
`preload` modules and limits its BLAS threads as soon as it starts, so a job never waits for a cold import.
A job that kills its process (a segfault, the OOM killer, `os._exit`) fails alone with a reason, and a fresh
worker takes the dead one's place; the other jobs run on. Workers exit when the process that asked for them
does, whatever way it ends (SIGTERM, SIGKILL), so none is left behind.

`checkout` hands out an idle pool of the wanted shape, or starts one; `checkin` keeps it warm for the next
tuning step in this process (the local stack runs many executions in one process). `prestart` starts one
ahead of need, while other work (the channels' download) runs.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import os
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from typing import Any

from pipelines.local import warm
from pipelines.local.errors import StepFailure

STOP_SECONDS = 2.0  # how long close() waits for a worker to exit before killing it
MAX_IDLE = 1  # warm pools kept between tuning steps (each holds its workers' memory)


def run_job(job: Callable, args: tuple) -> dict:
    """Run `job(*args)`; {"start", "end", "pid"} and "metrics" or "failure_reason". Never raises."""
    outcome: dict[str, Any] = {"start": time.time(), "pid": os.getpid()}
    try:
        outcome["metrics"] = {k: float(v) for k, v in job(*args).items()}
    except ValueError as exc:  # the job's input or hyperparameters are wrong
        outcome["failure_reason"] = f"ClientError: {exc}"
    except Exception as exc:
        outcome["failure_reason"] = f"AlgorithmError: {type(exc).__name__}: {exc}"
    outcome["end"] = time.time()
    return outcome


def _serve(connection: Connection, preload: tuple[str, ...], threads: int) -> None:
    """A worker's life: warm up, then run the jobs it receives until it receives None."""
    warm.exit_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the parent decides
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)  # parallel jobs share the cores instead of each using all of them
    for name in preload:
        importlib.import_module(name)
    while True:
        try:
            task = connection.recv()
        except EOFError:
            return
        except Exception as exc:  # a job that cannot be unpickled here
            connection.send({"start": time.time(), "end": time.time(), "pid": os.getpid(),
                             "failure_reason": f"AlgorithmError: the job could not be loaded: {exc}"})
            continue
        if task is None:
            return
        connection.send(run_job(*task))


class _Worker:
    def __init__(self, context, preload: tuple[str, ...], threads: int):
        self.connection, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, preload, threads), daemon=True,
                                       name="livetrain-training-worker")
        self.process.start()
        child.close()
        self.busy = False
        self.ticket: Any = None


def death(process) -> str:
    """How a child process ended, once it has ("killed by SIGKILL", "exit code 3")."""
    process.join(STOP_SECONDS)
    code = process.exitcode
    if code is not None and code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


class WorkerPool:
    """`size` warm worker processes; `submit` a job to an idle one, `wait` for finished jobs."""

    def __init__(self, size: int, preload: tuple[str, ...] = (), threads: int = 1):
        self.key = (size, tuple(preload), threads)
        self._context = warm.context  # forked from the fork server: its imports done, none of this process's threads
        self._workers = [self._start() for _ in range(size)]
        self.closed = False
        with _lock:
            _live.add(self)

    def _start(self) -> _Worker:
        return _Worker(self._context, self.key[1], self.key[2])

    def _replace(self, worker: _Worker) -> _Worker:
        """A fresh worker in a dead one's place."""
        worker.connection.close()
        fresh = self._workers[self._workers.index(worker)] = self._start()
        return fresh

    @property
    def pids(self) -> list[int]:
        return [worker.process.pid for worker in self._workers]

    @property
    def idle(self) -> bool:
        return not any(w.busy for w in self._workers)

    def _check_open(self) -> None:
        if self.closed:
            raise StepFailure("the training jobs were stopped (the execution is stopping)")

    def submit(self, ticket: Any, job: Callable, *args) -> None:
        """Start `job(*args)` on an idle worker; `ticket` names it in what `wait` returns."""
        self._check_open()
        worker = next((w for w in self._workers if not w.busy), None)
        if worker is None:
            raise RuntimeError("every worker is busy; wait for a job to finish before submitting another")
        if not worker.process.is_alive():  # died while idle
            worker = self._replace(worker)
        worker.connection.send((job, args))
        worker.busy, worker.ticket = True, ticket

    def wait(self) -> list[tuple[Any, dict]]:
        """Block until at least one running job ends; [(ticket, outcome as run_job returns it)]."""
        running = [w for w in self._workers if w.busy]
        if not running:
            raise RuntimeError("no job is running")
        ready = set(wait([w.connection for w in running] + [w.process.sentinel for w in running]))
        self._check_open()  # closed by stop_all() from another thread
        finished = []
        for worker in running:
            if worker.connection not in ready and worker.process.sentinel not in ready:
                continue
            worker.busy = False
            try:
                outcome = worker.connection.recv()
            except (EOFError, OSError):  # the process died during the job
                now = time.time()
                reason = f"AlgorithmError: the training job's process died ({death(worker.process)})"
                outcome = {"start": now, "end": now, "pid": worker.process.pid, "failure_reason": reason}
                self._replace(worker)
            finished.append((worker.ticket, outcome))
        return finished

    def close(self) -> None:
        """Stop every worker: ask, then terminate, then kill what is still running."""
        self.closed = True
        with _lock:
            _live.discard(self)
        for worker in self._workers:
            with contextlib.suppress(OSError):  # already gone
                worker.connection.send(None)
        deadline = time.monotonic() + STOP_SECONDS
        for worker in self._workers:
            if worker.busy:
                worker.process.terminate()
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()


_idle: list[WorkerPool] = []
_live: set[WorkerPool] = set()  # every pool not closed yet, idle or in use
_lock = threading.Lock()


def checkout(size: int, preload: tuple[str, ...] = (), threads: int = 1) -> WorkerPool:
    """An idle warm pool of this shape (workers, preloaded modules, threads per worker), or a new one."""
    key = (size, tuple(preload), threads)
    with _lock:
        for pool in _idle:
            if pool.key == key:
                _idle.remove(pool)
                return pool
    return WorkerPool(size, preload, threads)


def checkin(pool: WorkerPool) -> None:
    """Keep `pool` warm for the next checkout if no job runs on it (the pool kept before is closed)."""
    if not pool.idle:
        pool.close()
        return
    with _lock:
        _idle.append(pool)
        retired = _idle[:-MAX_IDLE]
        del _idle[:-MAX_IDLE]
    for old in retired:
        old.close()


def prestart(size: int, preload: tuple[str, ...] = (), threads: int = 1) -> None:
    """Have a warm pool of this shape ready for the next checkout (it starts warming up now)."""
    checkin(checkout(size, preload, threads))


@atexit.register
def stop_all() -> None:
    """Close every pool, in use or idle: running jobs are stopped and their tuning steps fail at once.

    For an engine that is being interrupted; the threads running tuning steps would otherwise keep
    the process alive until their jobs end."""
    with _lock:
        pools, _idle[:] = list(_live), []
    for pool in pools:
        pool.close()
