"""run-local at scale: landed → registered, per-step times and peak RSS of the process tree, 10k and 100k trades.

Default bot and market (`livetrain synth-batch --trades N`, about 30 ticks per trade), one batch per size,
cached under bench/results/ (git-ignored) so the set-up stays short after the first run. Each size gets a fresh
moto server and state folder; the batch is uploaded and the pipeline upserted before the clock starts, then
`livetrain pipeline run-local` is measured alone: its wall time (the process's start and exit included) and the
peaks of the summed RSS and of the summed PSS of it and every descendant (psutil: RSS sampled every 50 ms, PSS and
anonymous RSS every 0.5 s; the RSS sum counts pages that processes share once per process, the PSS sum once; the
anonymous RSS leaves out file pages, which the kernel may drop and reread).
Sizes: LIVETRAIN_BENCH_SCALE_TRADES (default "10000,100000"; 1000000 for the million-trade figure: its batch takes
about 5 min to generate, once). The baseline is main at 4ca8fea (the Linear Learner computing in float64, every
job fetching its inputs from S3, the fork server tearing down its libraries at the end), measured with this
benchmark on 2026-12-05 (10k: three runs alternating with this code; 100k and 1M: one run each, just before this
code's); it is other code, so it is quoted, not rerun.
On a shared 2-core machine the wall time moves 2-4x with the load; the CPU time of the tree is the steadier
comparison.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

from bench.bench_run_local import LIVETRAIN, cli_environment, moto_endpoint, stage, step_rows
from bench.measure import measure_tree, table
from pipelines.local.records import ExecutionStore, step_duration
from processing.batch_contract import SCHEMA_VERSION

RESULTS = Path(__file__).resolve().parent / "results"
SIZES = [int(n) for n in os.environ.get("LIVETRAIN_BENCH_SCALE_TRADES", "10000,100000").split(",")]
SEED = 0
TUNING_STEP = "TuneLinearLearner"
# Main at 4ca8fea (before the float32 Linear Learner, the local copies of S3 objects and the fork server's quick
# exit), this benchmark, 2026-12-05, machine otherwise idle: trades → (CPU seconds of the tree, what else was measured).
BEFORE = {10_000: (7.45, "4.5-4.6 s, 7.4-7.5 CPU-s, 0.94-0.98 / 0.45-0.50 GB RSS / PSS"),
          100_000: (46.8, "32.5 s, 46.8 CPU-s, 1.61 / 1.15 GB RSS / PSS"),
          1_000_000: (399.1, "260.2 s, 399.1 CPU-s, 3.67 / 3.17 GB RSS / PSS")}


def cached_batch(trades: int) -> Path:
    """The default-bot batch of `trades` trades, generated (and timed) on first use."""
    path = RESULTS / f"scale-batch-{trades}-seed{SEED}-v{SCHEMA_VERSION}"
    if not path.exists():
        started = time.perf_counter()
        partial = path.with_name(path.name + ".partial")
        subprocess.run([LIVETRAIN, "synth-batch", "--out", str(partial), "--trades", str(trades), "--seed",
                        str(SEED)], check=True, stdout=subprocess.DEVNULL)
        partial.rename(path)
        print(f"generated {path.name} in {time.perf_counter() - started:.1f} s", flush=True)
    return path


def tuning_rows(record: dict) -> list[dict]:
    """Where the Tuning step's seconds go: before the first job starts, the jobs, after the last one ends."""
    from datetime import datetime

    step = record["Steps"][TUNING_STEP]
    summaries = step.get("Properties", {}).get("TrainingJobSummaries", [])
    if not summaries or step_duration(step) is None:
        return []

    def seconds(value) -> float:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()

    step_start, step_end = seconds(step["StartTime"]), seconds(step["EndTime"])
    starts = [seconds(s["TrainingStartTime"]) for s in summaries]
    ends = [seconds(s["TrainingEndTime"]) for s in summaries]
    busy = sum(end - start for start, end in zip(starts, ends, strict=True))
    return [{"tuning": "step start → first job starts", "seconds": f"{min(starts) - step_start:.1f}"},
            {"tuning": f"first job start → last job end ({len(summaries)} jobs)",
             "seconds": f"{max(ends) - min(starts):.1f}"},
            {"tuning": "sum of job times", "seconds": f"{busy:.1f}"},
            {"tuning": "last job end → step end (artefacts uploaded)", "seconds": f"{step_end - max(ends):.1f}"}]


def run_size(trades: int) -> dict:
    batch = cached_batch(trades)
    with moto_endpoint() as endpoint, tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state"
        command = stage(batch, endpoint, state)
        print(f"running: livetrain pipeline run-local, {trades:,} trades", flush=True)
        result = measure_tree(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=cli_environment())
        (record,) = ExecutionStore(state).all()
    print(table(step_rows(record)))
    tuning = tuning_rows(record)
    if tuning:
        print(table(tuning))
    before_cpu, before = BEFORE.get(trades, (None, "-"))
    return {"trades": f"{trades:,}", "status": record["PipelineExecutionStatus"],
            "landed → verdict (s)": f"{result.seconds:.1f}",
            "CPU, tree (s)": f"{result.cpu_seconds:.1f}",
            "peak RSS, tree (GB)": f"{result.peak_rss_mb / 1024:.2f}",
            "peak PSS, tree (GB)": f"{result.peak_pss_mb / 1024:.2f}",
            "peak anonymous RSS, tree (GB)": f"{result.peak_anon_mb / 1024:.2f}",
            "main 4ca8fea (quoted)": before,
            "CPU, main / now": f"{before_cpu / result.cpu_seconds:.2f}x" if before_cpu else "-"}


def main() -> None:
    rows = [run_size(trades) for trades in SIZES]
    print(table(rows))
