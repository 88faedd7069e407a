"""Wall time and peak memory of one command, measured the same way for a subject and its baseline."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass


@dataclass
class Measurement:
    seconds: float
    peak_rss_mb: float


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


def table(rows: list[dict]) -> str:
    """A plain text table of dict rows (same keys), for the benchmark's printout."""
    keys = list(rows[0])
    widths = {k: max(len(k), *(len(str(r[k])) for r in rows)) for k in keys}
    lines = ["  ".join(k.ljust(widths[k]) for k in keys)]
    lines += ["  ".join(str(r[k]).ljust(widths[k]) for k in keys) for r in rows]
    return "\n".join(lines)
