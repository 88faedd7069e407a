"""preprocess.py against a naive per-trade pandas baseline: wall time and peak RSS at 10k and 1M trades.

Batches come from `livetrain synth-batch --open-every 2` (a trade every 2 s, so
1M trades come with ~2M ticks; at the bot's default of one trade per 30 s they
carry ~30M ticks, a year of market: bench_scale's batches; a trade on every tick,
as the seed traded, leaves 10k trades too little market time for a validation
slice once purged and embargoed) and are cached under
bench/results/ (git-ignored); outputs go to a temporary folder there and are
deleted. Peak RSS is that of the largest process (preprocess forks its writers,
which share its arrays). preprocess.py at 10k trades takes a quarter of a second,
so it is run FAST_RUNS times and its median run is reported; the baseline
(~30 s) and the 1M-trade run are run once.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench.measure import measure, table
from processing import preprocess
from processing.batch_contract import SCHEMA_VERSION

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
LIVETRAIN = Path(sys.executable).parent / "livetrain"
SEED = 1
OPEN_EVERY_S = 2
FAST_RUNS = 5
TARGET_RATIO, TARGET_SECONDS, TARGET_RSS_MB = 100, 30, 3072


def synthetic_batch(trades: int) -> Path:
    """The cached batch of `trades` trades, generated (and timed) on first use."""
    path = RESULTS / f"batch-{trades}-seed{SEED}-every-{OPEN_EVERY_S}s-v{SCHEMA_VERSION}"
    if not path.exists():
        started = time.perf_counter()
        subprocess.run([str(LIVETRAIN), "synth-batch", "--out", str(path), "--trades", str(trades), "--seed",
                        str(SEED), "--open-every", str(OPEN_EVERY_S)], check=True)
        print(f"generated {path.name} in {time.perf_counter() - started:.1f} s", flush=True)
    return path


def run_preprocess(batch: Path, output: Path):
    return measure([sys.executable, str(ROOT / "processing" / "preprocess.py"), "--input-dir", str(batch),
                    "--output-dir", str(output), "--min-test-windows", "0"])  # speed, not a verdict: as the naive


def median_run(batch: Path, output: Path):
    """The median (by wall time) of FAST_RUNS runs of preprocess.py; `output` holds the last run's files."""
    runs = []
    for _ in range(FAST_RUNS):
        shutil.rmtree(output, ignore_errors=True)
        runs.append(run_preprocess(batch, output))
    return sorted(runs, key=lambda m: m.seconds)[len(runs) // 2]


def same_numbers(naive: Path, ours: Path) -> bool:
    """The naive script's one file per slice holds the numbers of preprocess.py's files of that slice."""
    def read(files: list[Path]) -> pd.DataFrame:
        return pd.concat([pd.read_csv(file, header=None) for file in files], ignore_index=True)

    return all(np.allclose(read([naive / name]), read(preprocess.slice_files(ours, name)), rtol=0, atol=1e-9)
               for name in (preprocess.TRAIN_CSV, preprocess.VALIDATION_CSV, preprocess.TEST_FEATURES_CSV))


def main() -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    small, large = synthetic_batch(10_000), synthetic_batch(1_000_000)
    with tempfile.TemporaryDirectory(dir=RESULTS) as scratch:
        scratch = Path(scratch)
        print("10k trades: naive baseline …", flush=True)
        naive = measure([sys.executable, str(ROOT / "bench" / "naive_preprocess.py"), "--input-dir", str(small),
                         "--output-dir", str(scratch / "naive")])
        fast = median_run(small, scratch / "fast")
        if not same_numbers(scratch / "naive", scratch / "fast"):
            raise SystemExit("bench_preprocess: the baseline and preprocess.py disagree; the comparison is void")
        print("1M trades: preprocess.py …", flush=True)
        big = run_preprocess(large, scratch / "large")
    runs = {"naive baseline, 10k trades": naive, f"preprocess.py, 10k trades (median of {FAST_RUNS})": fast,
            "preprocess.py, 1M trades": big}
    rows = [{"run": name, "seconds": f"{m.seconds:.2f}", "peak RSS MB": f"{m.peak_rss_mb:.0f}"}
            for name, m in runs.items()]
    print(table(rows))
    ratio = naive.seconds / fast.seconds
    print(f"10k: {ratio:.0f}x the baseline (target >= {TARGET_RATIO}x): {'met' if ratio >= TARGET_RATIO else 'MISSED'}")
    met = big.seconds <= TARGET_SECONDS and big.peak_rss_mb <= TARGET_RSS_MB
    print(f"1M: {big.seconds:.1f} s, {big.peak_rss_mb:.0f} MB (targets <= {TARGET_SECONDS} s, <= {TARGET_RSS_MB} MB): "
          f"{'met' if met else 'MISSED'}")
