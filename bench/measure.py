"""Wall time and peak memory of one command, measured the same way for a subject and its baseline."""

from __future__ import annotations

import contextlib
import os
import resource
import subprocess
import time
from dataclasses import dataclass

from livetrain.processes import adopt_orphans


@dataclass
class Measurement:
    seconds: float
    peak_rss_mb: float
    cpu_seconds: float | None = None  # user + system, the whole process tree (measure_tree)
    peak_pss_mb: float | None = None  # the tree's proportional set size: shared pages counted once (measure_tree)
    peak_anon_mb: float | None = None  # the tree's anonymous RSS: without file pages the kernel can drop and reread


def measure(command: list[str], **popen_kwargs) -> Measurement:
    """Run `command` to completion; its wall time and peak RSS (from wait4, this child only)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, **popen_kwargs)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited with {process.returncode}")
    return Measurement(seconds=seconds, peak_rss_mb=usage.ru_maxrss / 1024)


def measure_tree(command: list[str], interval: float = 0.05, detail_every: int = 10, **popen_kwargs) -> Measurement:
    """Run `command` to completion; its wall time, the peak of the summed RSS of it and all its descendants, the
    peak of their summed PSS, and their CPU time (user + system; on a busy machine a steadier measure of work
    than the wall time). The RSS sum counts a page shared by several processes (a fork's copy-on-write
    memory, a memory-mapped file that several jobs read) once per process; the PSS sum counts it once. The
    summed anonymous RSS leaves out the pages of files (memory-mapped libraries and data), which are page
    cache the kernel can drop under pressure and read again: what the processes' own memory needs.

    The tree's RSS is sampled every `interval` seconds (psutil), so a peak shorter than that can be missed; its
    PSS and anonymous RSS every `detail_every` samples: they are read from /proc/<pid>/smaps_rollup, which walks
    every mapping of a process (thousands, with numpy, scipy and scikit-learn loaded), and reading them for every
    process at each sample took a fifth of a core from the 2-core run it measured (0.2-0.3 s of 4). The CPU
    time is that of every descendant its parent waited for (multiprocessing and subprocess do); a descendant
    still running when the command ends (a fork server, which ends once it sees its parent gone) is adopted here
    (Linux's child subreaper) and waited for, so its CPU time and that of the children it waited for count too.
    """
    import psutil

    adopt_orphans()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    process = subprocess.Popen(command, **popen_kwargs)
    root = psutil.Process(process.pid)
    peak = peak_pss = peak_anon = 0
    seen: set[int] = set()
    samples = 0
    while process.poll() is None:
        total = total_pss = total_anon = 0
        detail = samples % detail_every == 0
        try:
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            tree = []
        seen.update(member.pid for member in tree)
        for member in tree:
            with contextlib.suppress(psutil.NoSuchProcess):  # ended between the listing and the reading
                memory = member.memory_full_info() if detail else member.memory_info()
                total += memory.rss
                if detail:
                    total_pss += memory.pss
                    total_anon += memory.rss - memory.shared  # Linux: shared = RssFile + RssShmem
        peak, peak_pss, peak_anon = max(peak, total), max(peak_pss, total_pss), max(peak_anon, total_anon)
        samples += 1
        time.sleep(interval)
    seconds = time.perf_counter() - start
    for pid in seen - {process.pid}:
        with contextlib.suppress(ChildProcessError):  # ended (and reaped by its parent) before the command
            os.waitpid(pid, 0)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited with {process.returncode}")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return Measurement(seconds=seconds, peak_rss_mb=peak / 2**20, cpu_seconds=cpu, peak_pss_mb=peak_pss / 2**20,
                       peak_anon_mb=peak_anon / 2**20)


def table(rows: list[dict]) -> str:
    """A plain text table of dict rows (same keys), for the benchmark's printout."""
    keys = list(rows[0])
    widths = {k: max(len(k), *(len(str(r[k])) for r in rows)) for k in keys}
    lines = ["  ".join(k.ljust(widths[k]) for k in keys)]
    lines += ["  ".join(str(r[k]).ljust(widths[k]) for k in keys) for r in rows]
    return "\n".join(lines)
