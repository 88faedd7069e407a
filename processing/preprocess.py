"""The Preprocess step: one batch → leak-free features, split by time into train, validation and test.

    python preprocess.py --input-dir D [--prices-dir P] --output-dir O [--lookback-seconds 600]
                         [--train-fraction 0.7 --validation-fraction 0.15] [--min-test-windows 20]
                         [--workers N]

Features of a trade opened at t (`open_ts`, ms): the bid, offer, mid_open, high
and low of the last tick at or before t, then for j = 1 … lookback the mid
((bid + offer) / 2) of the last tick at or before t − j·1000 ms, all minus the
mid of the last tick at or before t. Nothing after t is used; a gap carries the
last tick before it. A trade with no tick at or before t − lookback is dropped
(reason `short_lookback`).

Split (López de Prado, *Advances in Financial Machine Learning*, ch. 7): the
remaining trades are cut by MARKET TIME, not by count, at 70 % and 85 % of the
span of their opens, into train, validation and test. Trades overlap in time:
a label depends on prices up to the trade's close, its features on the
look-back before its open. So at each boundary a trade whose lifetime
[open_ts, close_ts] reaches the boundary is purged (`crosses_split_boundary`),
and a trade opened less than one dependence span after it is embargoed
(`embargoed`). The dependence span is the look-back plus the longest actual
lifetime in the batch (close minus open, not the bot's maximum: most trades
settle long before it). Trades further apart than that share no price, so each
slice holds about (its span of opens) / (dependence span) independent windows;
a test slice with fewer than `--min-test-windows` is not enough market time for
a verdict either way, and the step stops with one line saying how many trades
would be.

The features do not say which side a trade is on, nor its stop or limit
distance: a batch in which any of those varies is refused with one line.

D holds batch.json and transactions.csv, P (default D/prices) the price shards this instance is to do: all of
them, or, in a Processing job of several instances, the share `ShardedByS3Key` gave it. Every instance reads all
trades and makes the same split; each writes the features of its shards' trades, one file per shard and slice
(CSV without header, floats written exactly; `NNNNN` is the shard's number, so the files of all instances sort
into time order), and the same metadata:
    train/train-NNNNN.csv                       label, then the features
    validation/validation-NNNNN.csv             label, then the features
    test/features/test_features-NNNNN.csv       the features only (Batch Transform input)
    test/test_trades.csv         trade_id, open_ms, close_ms, label, pnl of each test row (header row)
    metadata/features.json       feature names, counts, drops by reason, split boundaries, positive rates,
                                 market time (dependence span, hours and independent windows per slice)
    metadata/rows.csv            slice,row,trade_id (header row; row: position in the slice's files in order)
One shard's ticks are held at a time. Everything is written to a staging folder first: bad input or a failure
leaves no output.

Runs in SageMaker's scikit-learn Processing container from a copy of the
`processing/` folder: it imports only numpy, the standard library and the batch
contract next to it (no pandas: its import alone would double the run time of a
10k-trade batch).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

if __name__ == "__main__":  # as a script, before numpy loads: it does no linear algebra here, and OpenBLAS's
    # thread would otherwise spin for ~0.1 s of CPU after the import, on a core the feature writers need
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

try:  # in the Processing container the contract is a sibling file; in tests and the CLI, a package module
    import batch_contract as contract
except ImportError:
    from processing import batch_contract as contract

DEFAULT_INPUT_DIR = "/opt/ml/processing/input/batch"
DEFAULT_PRICES_DIR = "/opt/ml/processing/input/prices"
DEFAULT_OUTPUT_DIR = "/opt/ml/processing/output"
TRAIN_CSV = "train/train.csv"  # … written as train/train-NNNNN.csv, one per shard (see shard_output)
VALIDATION_CSV = "validation/validation.csv"
TEST_FEATURES_DIR = "test/features"  # the Batch Transform input: only feature files under it
TEST_FEATURES_CSV = f"{TEST_FEATURES_DIR}/test_features.csv"
TEST_TRADES_CSV = "test/test_trades.csv"
FEATURES_JSON = "metadata/features.json"
ROWS_CSV = "metadata/rows.csv"
SLICES = ("train", "validation", "test")
TEST_TRADE_COLUMNS = ("trade_id", "open_ms", "close_ms", "label", "pnl")
MIN_TEST_WINDOWS = 20  # independent windows a test slice needs for a verdict (the pipeline's MinTestWindows)
UNIFORM_TRADE_COLUMNS = {  # a column that must not vary within a batch, and how to export one that doesn't
    "direction": "run the bot on one side per batch (--directions BUY or SELL, not BOTH)",
    "stop_distance": "export one stop distance per batch",
    "limit_distance": "export one limit distance per batch",
}

MAX_DECIMALS = 6  # feature values are written with at most this many decimals
MAX_INTEGER_DIGITS = 7  # … and at most this many digits before the point
CHUNK_ROWS = 16  # rows per step: small temporaries stay in the CPU cache and in malloc's heap
# (bigger ones are mmap-ed and page-faulted afresh at every step, which costs more than the work)
WRITE_BUFFER_BYTES = 1 << 20  # writes of 1 MB: less kernel time per byte than 64 KB ones, fewer page faults than 8 MB
MIN_ROWS_PER_WORKER = 1_000  # below this a second process costs more than it saves (at 3k trades it already gains)
PROGRESS_SECONDS = 5.0
PR_SET_PDEATHSIG = 1  # prctl option: the signal a process gets when its parent ends


# ---------------------------------------------------------------- ticks and features


class Ticks:
    """Tick prices as int64 multiples of 10**-decimals, and the last tick at or before any time in O(1).

    The lookup table holds, for each 2**shift-ms bucket of the tick span, the
    number of ticks before the bucket starts (about 4 buckets per tick); a
    lookup then counts the few ticks inside its own bucket.
    """

    def __init__(self, ts: np.ndarray, prices: np.ndarray):
        """`ts`: strictly increasing int64 ms; `prices`: one row per tick, the PRICE_FIELDS columns."""
        self.decimals = feature_decimals(prices)
        self.prices = np.round(prices * 10.0**self.decimals).astype(np.int64)  # PRICE_FIELDS columns
        self.mid = (self.prices[:, 0] + self.prices[:, 1]) // 2  # exact: one more decimal than the quotes
        self._origin = int(ts[0])
        span = int(ts[-1]) - self._origin + 1
        self._shift = max(0, int(np.log2(span / (4 * len(ts)))))
        bucket_starts = self._origin + (np.arange((span >> self._shift) + 1, dtype=np.int64) << self._shift)
        self._ticks_before_bucket = np.searchsorted(ts, bucket_starts, side="left")
        self._ts_then_end = np.append(ts, np.iinfo(np.int64).max)

    def last_at_or_before(self, times: np.ndarray) -> np.ndarray:
        """Index of the last tick at or before each time (int64 ms); -1 before the first tick."""
        count = np.take(self._ticks_before_bucket, (times - self._origin) >> self._shift, mode="clip")
        flat_count, flat_times = count.reshape(-1), times.reshape(-1)
        behind = np.flatnonzero(self._ts_then_end[flat_count] <= flat_times)
        while behind.size:  # count the ticks inside the time's own bucket
            flat_count[behind] += 1
            behind = behind[self._ts_then_end[flat_count[behind]] <= flat_times[behind]]
        return count - 1


def feature_decimals(prices: np.ndarray) -> int:
    """Decimals that write every feature exactly: the prices' own, plus one for a mid's half (capped)."""
    for decimals in range(MAX_DECIMALS):
        scaled = prices * 10.0**decimals
        if np.all(np.abs(scaled - np.round(scaled)) <= 1e-12 * max(1.0, float(np.abs(scaled).max()))):
            return decimals + 1
    return MAX_DECIMALS


def feature_matrix(ticks: Ticks, open_ts: np.ndarray, lookback_seconds: int, out: np.ndarray) -> np.ndarray:
    """Write the features of trades opened at `open_ts` into `out` (rows, 5 + lookback), in price units.

    Columns follow `batch_contract.feature_names(lookback_seconds)`. Every trade
    must have a tick at or before open_ts − lookback_seconds.
    """
    times = open_ts[:, None] - 1000 * np.arange(lookback_seconds + 1, dtype=np.int64)  # column 0: the open
    at = ticks.last_at_or_before(times)
    mids = ticks.mid[at]
    now = mids[:, :1]
    n_fields = len(contract.PRICE_FIELDS)
    np.subtract(ticks.prices[at[:, 0]], now, out=out[:, :n_fields])
    np.subtract(mids[:, 1:], now, out=out[:, n_fields:])
    return out


def trade_features(batch: contract.Batch, rows_per_chunk: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """(features in price units, one row per trade with full look-back; the mask of those trades) of a whole
    batch, unsplit: for scoring fixed models on every trade (the backtest, the gate's benchmark)."""
    ticks = Ticks(batch.prices["ts"], np.column_stack([batch.prices[f] for f in contract.PRICE_FIELDS]))
    open_ts = batch.trades["open_ts"]
    keep = open_ts - 1000 * contract.LOOKBACK_SECONDS >= batch.prices["ts"][0]
    out = np.empty((int(keep.sum()), len(contract.feature_names())), np.int64)
    for start in range(0, len(out), rows_per_chunk):
        feature_matrix(ticks, open_ts[keep][start : start + rows_per_chunk], contract.LOOKBACK_SECONDS,
                       out[start : start + rows_per_chunk])
    return out / 10.0**ticks.decimals, keep


# ---------------------------------------------------------------- CSV text


_BYTE = np.uint64(8)


def _digit_words(numbers: np.ndarray, width: int) -> np.ndarray:
    """Zero-padded decimal text of numbers < 10**width (≤ 8 digits), one little-endian uint64 per number."""
    words = np.zeros(len(numbers), np.uint64)
    for i in range(width):
        digit = (numbers // 10 ** (width - 1 - i) % 10).astype(np.uint64)
        words |= (digit + np.uint64(ord("0"))) << np.uint64(8 * i)
    return words


@functools.lru_cache
def _integer_text(width: int) -> tuple[np.ndarray, np.ndarray]:
    """Text and bit length of 0 … 10**width − 1 (no leading zeros), then of the same numbers with a '-'."""
    numbers = np.arange(10**width, dtype=np.int64)
    digits = (np.ones(len(numbers), np.int64) + sum(numbers >= 10**k for k in range(1, width))).astype(np.uint64)
    words = _digit_words(numbers, width) >> _BYTE * (np.uint64(width) - digits)
    return (np.concatenate([words, (words << _BYTE) | np.uint64(ord("-"))]),
            np.concatenate([_BYTE * digits, _BYTE * (digits + np.uint64(1))]))


@functools.lru_cache
def _fraction_text(decimals: int, separator: str) -> tuple[np.ndarray, np.ndarray]:
    """Text and bit length of '.ddd' for 0 … 10**decimals − 1 (no trailing zeros; '' for 0), then the separator."""
    numbers = np.arange(10**decimals, dtype=np.int64)
    digits = np.full(len(numbers), decimals) - sum(numbers % 10**k == 0 for k in range(1, decimals + 1))
    length = np.where(digits > 0, digits + 1, 0).astype(np.uint64)  # with the point
    words = (_digit_words(numbers, decimals) << _BYTE) | np.uint64(ord("."))
    words &= (np.uint64(1) << _BYTE * length) - np.uint64(1)  # cut after the last non-zero digit
    return words | (np.uint64(ord(separator)) << _BYTE * length), _BYTE * (length + np.uint64(1))


def csv_text(values: np.ndarray, decimals: int) -> bytes:
    """CSV lines for an int64 matrix of multiples of 10**-decimals, each number as short as it can be exact.

    `[[1000, -2500], [5, 0]]` with 3 decimals → b"1,-2.5\\n0.005,0\\n". Vectorised:
    each number becomes a 16-byte token (sign and integer digits from one
    table, '.digits' and the separator from another, joined with shifts), and
    the tokens are packed end to end with one scatter of 16-byte slots at the
    running sum of their lengths: each slot's unused tail is overwritten by the
    next token, because numpy assigns the slots in order.
    """
    rows, columns = values.shape
    if rows == 0:
        return b""
    scale = 10**decimals
    magnitude = np.abs(values)
    integer = magnitude // scale
    fraction = magnitude - integer * scale
    width = len(str(int(integer.max())))
    if width > MAX_INTEGER_DIGITS:
        raise ValueError(f"{int(integer.max())} has more than {MAX_INTEGER_DIGITS} digits before the point")
    int_words, int_bits = _integer_text(width)
    at = integer + (values < 0) * 10**width
    head, head_bits = int_words[at], int_bits[at]
    frac_words, frac_bits = _fraction_text(decimals, ",")
    tail, tail_bits = frac_words[fraction], frac_bits[fraction]
    last_words, _ = _fraction_text(decimals, "\n")
    tail[:, -1] = last_words[fraction[:, -1]]
    tokens = np.empty((rows, columns, 2), np.uint64)  # 16 bytes: head then tail
    tokens[..., 0] = head | (tail << (head_bits - _BYTE) << _BYTE)  # two shifts: a shift by 64 is undefined
    tokens[..., 1] = tail >> (np.uint64(64) - head_bits)
    lengths = ((head_bits + tail_bits) >> np.uint64(3)).astype(np.int64).reshape(-1)
    ends = np.cumsum(lengths)
    text = np.empty(int(ends[-1]) + 16, np.uint8)
    slots = np.ndarray((int(ends[-1]) + 1,), "V16", text, strides=(1,))  # a 16-byte slot at every byte
    slots[ends - lengths] = tokens.reshape(-1).view("V16")
    return text[: ends[-1]].tobytes()


# ---------------------------------------------------------------- split


@dataclass
class Split:
    """Trade positions of each slice (open-time order), boundaries, drops by reason, and market time."""

    rows: dict[str, np.ndarray]
    boundaries: tuple[int, int]  # ms: validation starts, test starts
    dropped: dict[str, int]
    dependence_ms: int  # look-back plus the longest actual lifetime: trades further apart share no price
    spans_ms: dict[str, int]  # from each slice's first open to its last

    @property
    def hours(self) -> dict[str, float]:
        return {name: round(ms / 3.6e6, 3) for name, ms in self.spans_ms.items()}

    @property
    def windows(self) -> dict[str, float]:
        """Independent windows per slice: its span of opens over the dependence span."""
        return {name: round(ms / self.dependence_ms, 1) for name, ms in self.spans_ms.items()}


class NotEnoughMarketTime(contract.BatchError):
    """The test slice is too short for a verdict either way."""


def split_trades(open_ts: np.ndarray, close_ts: np.ndarray, labels: np.ndarray, has_lookback: np.ndarray,
                 lookback_seconds: int, train_fraction: float, validation_fraction: float,
                 min_test_windows: float = 0) -> Split:
    """Cut the trades with full look-back by market time, purging and embargoing at each boundary."""
    kept = np.flatnonzero(has_lookback)
    dropped = {"short_lookback": int(len(open_ts) - len(kept))}
    if len(kept) < 3:
        _too_few(len(open_ts), dropped, f"{len(kept)} are not enough for three slices")
    opened, closed = open_ts[kept], close_ts[kept]
    dependence_ms = 1000 * lookback_seconds + int((closed - opened).max())
    first, span = int(opened[0]), int(opened[-1] - opened[0])
    boundaries = (first + round(span * train_fraction), first + round(span * (train_fraction + validation_fraction)))
    crosses, embargoed = np.zeros(len(kept), bool), np.zeros(len(kept), bool)
    for boundary in boundaries:
        crosses |= (opened < boundary) & (closed >= boundary)
        embargoed |= (opened >= boundary) & (opened < boundary + dependence_ms)
    dropped["crosses_split_boundary"] = int(crosses.sum())
    dropped["embargoed"] = int((embargoed & ~crosses).sum())
    slice_of = np.searchsorted(np.array(boundaries), opened, side="right")
    keep = ~(crosses | embargoed)
    rows = {name: kept[keep & (slice_of == i)] for i, name in enumerate(SLICES)}
    spans = {name: int(open_ts[r[-1]] - open_ts[r[0]]) if len(r) else 0 for name, r in rows.items()}
    split = Split(rows=rows, boundaries=boundaries, dropped=dropped, dependence_ms=dependence_ms, spans_ms=spans)
    if split.windows["test"] < min_test_windows:
        raise NotEnoughMarketTime(_not_enough_market_time(split, len(kept), span, min_test_windows,
                                                          1 - train_fraction - validation_fraction))
    for name, positions in rows.items():
        positives = int(labels[positions].sum())
        if positives in (0, len(positions)):
            _too_few(len(open_ts), dropped, f"the {name} slice has {len(positions)} trades, "
                     f"{positives} of them positive; it needs both labels")
    return split


def _not_enough_market_time(split: Split, trades: int, span_ms: int, min_test_windows: float,
                            test_fraction: float) -> str:
    """One line: what the test slice covers, what a verdict needs, and the batch that would give it."""
    dependence = split.dependence_ms
    needed_span_ms = min_test_windows * dependence / test_fraction + 2 * dependence  # two embargoes
    per_hour = trades / max(span_ms, 1) * 3.6e6
    return (f"not enough market time for a verdict: the test slice covers {_duration(split.spans_ms['test'])}, "
            f"{split.windows['test']:g} independent windows of {_duration(dependence)} (look-back plus the longest "
            f"trade), and a verdict needs {min_test_windows:g}; export batches of about "
            f"{math.ceil(needed_span_ms / 3.6e6 * per_hour):,} trades (about {_duration(needed_span_ms)} of market "
            f"time at this batch's {per_hour:,.0f} trades per hour); this batch is no evidence either way")


def _duration(ms: float) -> str:
    """'45 s', '25 min', '12.6 h'."""
    if ms < 120_000:
        return f"{ms / 1000:.0f} s"
    return f"{ms / 60_000:.0f} min" if ms < 7_200_000 else f"{ms / 3.6e6:.1f} h"


def _too_few(trades: int, dropped: dict[str, int], problem: str):
    raise contract.BatchError(
        f"{contract.TRANSACTIONS_FILE}: too few trades left to split: {trades} trades, "
        f"{dropped.get('short_lookback', 0)} without full look-back, "
        f"{dropped.get('crosses_split_boundary', 0)} purged and {dropped.get('embargoed', 0)} embargoed at "
        f"split boundaries; {problem}; export batches with more trades (the streamer's or the demo's "
        "--batch-size)")


def check_uniform_trades(trades: dict[str, np.ndarray]) -> None:
    """BatchError when a trade setting the features do not encode varies within the batch."""
    for column, fix in UNIFORM_TRADE_COLUMNS.items():
        values = trades[column]
        other = np.flatnonzero(values != values[0])
        if len(other):
            raise contract.BatchError(
                f"{contract.TRANSACTIONS_FILE}: {column} varies within the batch ({values[0]} in row 1, "
                f"{values[other[0]]} in row {other[0] + 1}); the features do not include it, so such trades "
                f"would get the same features and contradictory labels: {fix}")


# ---------------------------------------------------------------- writing


@dataclass(frozen=True)
class FeatureSource:
    """What a feature writer needs: the ticks and, per trade, open time and label."""

    ticks: Ticks
    open_ts: np.ndarray
    labels: np.ndarray
    lookback_seconds: int


@dataclass(frozen=True)
class Part:
    """Rows of one feature file written by one writer, into `<file>.part<writer>`."""

    file: str
    rows: np.ndarray
    with_label: bool


def write_part(source: FeatureSource, part: Part, path: Path, report) -> None:
    """Format the part's rows (label first if asked) chunk by chunk into `path`."""
    decimals = source.ticks.decimals
    n_features = len(contract.feature_names(source.lookback_seconds))
    with open(path, "wb", buffering=WRITE_BUFFER_BYTES) as out:
        for start in range(0, len(part.rows), CHUNK_ROWS):
            rows = part.rows[start : start + CHUNK_ROWS]
            values = np.empty((len(rows), part.with_label + n_features), np.int64)
            if part.with_label:
                values[:, 0] = source.labels[rows] * 10**decimals
            feature_matrix(source.ticks, source.open_ts[rows], source.lookback_seconds, values[:, part.with_label :])
            out.write(csv_text(values, decimals))
            report(len(rows))


def plan_parts(files: list[Part], writers: int) -> list[list[Part]]:
    """Share the rows of all files, in order, into `writers` contiguous runs of equal length."""
    total = sum(len(f.rows) for f in files)
    bounds = [total * w // writers for w in range(writers + 1)]
    plans, first = [[] for _ in range(writers)], 0
    for f in files:
        for w in range(writers):
            lo, hi = max(bounds[w], first), min(bounds[w + 1], first + len(f.rows))
            if lo < hi:
                plans[w].append(Part(f.file, f.rows[lo - first : hi - first], f.with_label))
        first += len(f.rows)
    return plans


def _run_writer(source: FeatureSource, parts: list[Part], staging: Path, writer: int, writers: int) -> None:
    total, done, last = sum(len(p.rows) for p in parts), 0, time.monotonic()

    def report(rows: int) -> None:
        nonlocal done, last
        done += rows
        if time.monotonic() - last > PROGRESS_SECONDS:
            who = f"writer {writer + 1}/{writers}: " if writers > 1 else ""
            print(f"preprocess: {who}{done:,}/{total:,} rows", file=sys.stderr, flush=True)
            last = time.monotonic()

    for part in parts:
        write_part(source, part, staging / f"{part.file}.part{writer}", report)


def _forked(work, name: str) -> int:
    """Fork a process that runs `work()` (it shares this one's arrays) and exits 0 on success; returns its pid.

    The child is killed when this process ends, so a step stopped by its runner (a time limit, a stop) leaves no
    worker behind (Linux; livetrain/processes.py does the same for the local stack's own children)."""
    parent = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    status = 1
    try:
        _die_with(parent)
        work()
        status = 0
    except BaseException as exc:
        print(f"preprocess: {name}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
    finally:
        os._exit(status)  # never returns into the parent's code


def _die_with(parent: int) -> None:
    """SIGKILL for this (forked) process when `parent` ends: prctl(PR_SET_PDEATHSIG) on Linux."""
    if sys.platform != "linux":
        return
    import ctypes
    import signal

    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # it ended before the request took effect
        os._exit(1)


def _in_processes(shares: list, work, name: str) -> None:
    """`work(share)` for each share: the first here, each other one in a forked process; ChildProcessError if
    any of those fails (after all have ended)."""
    children = [_forked(functools.partial(work, share), f"{name} {number + 1}")
                for number, share in enumerate(shares) if number > 0]
    try:
        work(shares[0])
    finally:
        failed = sum(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) != 0 for pid in children)
    if failed:
        raise ChildProcessError(f"{failed} of {len(children)} forked {name}s failed")


def write_feature_files(source: FeatureSource, files: list[Part], staging: Path, writers: int) -> int:
    """Write the feature files with `writers` processes (this one and forked ones), then join the parts;
    returns the number of rows."""
    total = sum(len(f.rows) for f in files)
    writers = max(1, min(writers, -(-total // MIN_ROWS_PER_WORKER)))
    plans = plan_parts(files, writers)
    for f in files:
        (staging / f.file).parent.mkdir(parents=True, exist_ok=True)
    _in_processes(list(range(writers)), lambda w: _run_writer(source, plans[w], staging, w, writers),
                  "feature writer")
    for f in files:
        _join_parts(staging / f.file, [staging / f"{f.file}.part{w}" for w in range(writers)])
    return total


def _join_parts(path: Path, parts: list[Path]) -> None:
    parts = [p for p in parts if p.exists()]
    os.replace(parts[0], path)
    with open(path, "r+b") as out:
        out.seek(0, os.SEEK_END)
        for part in parts[1:]:
            with open(part, "rb") as source:
                size = os.fstat(source.fileno()).st_size
                while size > 0:  # copied inside the kernel
                    size -= os.copy_file_range(source.fileno(), out.fileno(), size)
            part.unlink()


# ---------------------------------------------------------------- the step


def shard_output(name: str, shard: dict) -> str:
    """The output file of slice file `name` for a price shard: train/train.csv, prices/part-00003.csv →
    train/train-00003.csv."""
    path, number = Path(name), Path(shard["file"]).stem.rpartition("-")[2]
    return str(path.with_name(f"{path.stem}-{number}{path.suffix}"))


def slice_files(output_dir: str | os.PathLike, name: str) -> list[Path]:
    """The files of slice file `name` (TRAIN_CSV, VALIDATION_CSV, TEST_FEATURES_CSV) under a Preprocess output,
    in shard order, which is time order."""
    path = Path(output_dir) / name
    return sorted(path.parent.glob(f"{path.stem}-*{path.suffix}"))


def held_shards(meta: dict, prices_dir: Path, every_one: bool) -> list[dict]:
    """The entries of batch.json's price_shards whose files are in `prices_dir`; BatchError for any other CSV,
    and, if `every_one`, for a missing shard."""
    listed = {Path(shard["file"]).name: shard for shard in meta["price_shards"]}
    if every_one:
        return [shard for shard in meta["price_shards"] if contract.shard_path(prices_dir, shard)]
    present = sorted(p.name for p in prices_dir.glob("*.csv")) if prices_dir.is_dir() else []
    unknown = [name for name in present if name not in listed]
    if unknown:
        raise contract.BatchError(f"{prices_dir / unknown[0]}: not a shard of batch {meta['batch_id']} "
                                  f"({contract.BATCH_JSON_FILE} lists {len(listed)}); give the job this batch's "
                                  f"prices manifest")
    return [listed[name] for name in present]


def preprocess(input_dir: str | os.PathLike, output_dir: str | os.PathLike, prices_dir: str | os.PathLike | None = None,
               lookback_seconds: int = contract.LOOKBACK_SECONDS,
               train_fraction: float = 0.7, validation_fraction: float = 0.15,
               min_test_windows: float = MIN_TEST_WINDOWS, workers: int | None = None,
               log=lambda message: print(f"preprocess: {message}", file=sys.stderr, flush=True)) -> dict:
    """Validate the batch in `input_dir` and `prices_dir`, write the slices to `output_dir`; returns
    features.json's content.

    Raises BatchError (one line) for bad input; nothing is written then.
    """
    input_dir = Path(input_dir)
    every_shard = prices_dir is None  # a whole batch; else an instance's share, maybe none
    meta = contract.read_meta(input_dir)
    trades = contract.read_trades(input_dir, meta)
    check_uniform_trades(trades)
    first_tick = int(contract.parse_ts([meta["ticks"]["first"]], contract.BATCH_JSON_FILE)[0])
    open_ts, labels = trades["open_ts"], trades["label"].astype(np.int64)
    split = split_trades(open_ts, trades["close_ts"], labels, open_ts - 1000 * lookback_seconds >= first_tick,
                         lookback_seconds, train_fraction, validation_fraction, min_test_windows)
    summary = _summary(meta, split, labels, lookback_seconds, train_fraction, validation_fraction,
                       min_test_windows)
    test_rows = split.rows["test"]
    test_trades = {"trade_id": trades["trade_id"][test_rows], "open_ms": open_ts[test_rows],
                   "close_ms": trades["close_ts"][test_rows], "label": labels[test_rows],
                   "pnl": trades["pnl"][test_rows]}
    trade_ids = trades["trade_id"]
    prices_dir = input_dir / contract.PRICES_DIR if every_shard else Path(prices_dir)
    shards = held_shards(meta, prices_dir, every_shard)
    del trades  # the writers are forked: keep them small

    output_dir = Path(output_dir).absolute()
    output_dir.parent.mkdir(parents=True, exist_ok=True)  # staged beside it: a bad shard leaves no output folder
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.preprocess-", dir=output_dir.parent))
    try:
        _write_metadata(staging, summary, split, trade_ids, test_trades)
        def do(share: list[dict], writers: int) -> None:
            for shard in share:
                started = time.monotonic()
                ticks = _shard_ticks(prices_dir, meta, shard, open_ts, lookback_seconds, first_tick)
                first, end = shard["trades"]
                files = [Part(shard_output(name, shard), rows[np.searchsorted(rows, first):np.searchsorted(rows, end)],
                              with_label)
                         for name, rows, with_label in ((TRAIN_CSV, split.rows["train"], True),
                                                        (VALIDATION_CSV, split.rows["validation"], True),
                                                        (TEST_FEATURES_CSV, split.rows["test"], False))]
                written = write_feature_files(FeatureSource(ticks, open_ts, labels, lookback_seconds),
                                              [f for f in files if len(f.rows)], staging, writers)
                log(f"{shard['file']} (of {len(meta['price_shards'])}): {len(ticks.mid):,} ticks, {written:,} "
                    f"feature rows in {time.monotonic() - started:.1f} s")

        workers = workers or os.cpu_count() or 1
        if 1 < workers <= len(shards):  # a process per share of the shards: their reading is parallel too
            _in_processes([shards[w::workers] for w in range(workers)], lambda share: do(share, 1), "shard worker")
        elif shards:  # too few shards: the rows of each are shared out among the workers
            do(shards, workers)
        _publish(staging, output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return summary


def _publish(staging: Path, output_dir: Path) -> None:
    """Move the staged files into `output_dir`, once sure that every folder they go to can be made."""
    files = sorted(p.relative_to(staging) for p in staging.rglob("*") if p.is_file())
    for folder in {output_dir / f.parent for f in files}:
        for path in (folder, *folder.parents):
            if path.exists() and not path.is_dir():
                raise NotADirectoryError(f"{path}: exists and is not a folder; choose another --output-dir")
    for relative in files:
        (output_dir / relative).parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / relative, output_dir / relative)


def _shard_ticks(prices_dir: Path, meta: dict, shard: dict, open_ts: np.ndarray, lookback_seconds: int,
                 first_tick: int) -> Ticks:
    """The shard's ticks, checked to reach back a look-back before its first trade (or to the batch's start)."""
    prices = contract.read_shard(prices_dir, meta, shard, ("ts", *contract.PRICE_FIELDS))
    ts = prices["ts"]
    first, end = shard["trades"]
    if first < end and ts[0] > max(open_ts[first] - 1000 * lookback_seconds, first_tick):
        raise contract.BatchError(f"{shard['file']}: starts at {contract.format_ts(ts[:1])[0]}, after the "
                                  f"{lookback_seconds} s look-back of its first trade; export the batch with a "
                                  f"look-back of at least --lookback-seconds")
    if first < end and ts[-1] < open_ts[end - 1]:
        raise contract.BatchError(f"{shard['file']}: ends at {contract.format_ts(ts[-1:])[0]}, before its last "
                                  f"trade opens; export the batch again")
    ticks = Ticks(ts, np.column_stack([prices[field] for field in contract.PRICE_FIELDS]))
    if int(np.abs(ticks.prices).max()) >= 10 ** (MAX_INTEGER_DIGITS + ticks.decimals):
        raise contract.BatchError(f"{shard['file']}: prices of {10**MAX_INTEGER_DIGITS:,} or more are not supported")
    return ticks


def _summary(meta: dict, split: Split, labels: np.ndarray, lookback_seconds: int, train_fraction: float,
             validation_fraction: float, min_test_windows: float) -> dict:
    validation_starts, test_starts = contract.format_ts(split.boundaries)
    return {
        "batch_id": meta["batch_id"],
        "epic": meta["epic"],
        "lookback_seconds": lookback_seconds,
        "feature_names": contract.feature_names(lookback_seconds),
        "counts": {"trades": len(labels), **{name: len(rows) for name, rows in split.rows.items()}},
        "dropped": split.dropped,
        "split": {"train_fraction": train_fraction, "validation_fraction": validation_fraction,
                  "validation_starts": str(validation_starts), "test_starts": str(test_starts)},
        "positive_rate": {name: round(float(labels[rows].mean()), 6) for name, rows in split.rows.items()},
        "market_time": {"lookback_seconds": lookback_seconds,
                        "longest_trade_seconds": split.dependence_ms / 1000 - lookback_seconds,
                        "dependence_seconds": split.dependence_ms / 1000, "hours": split.hours,
                        "independent_windows": split.windows, "min_test_windows": min_test_windows},
    }


def _write_metadata(staging: Path, summary: dict, split: Split, trade_ids: np.ndarray,
                    test_trades: dict[str, np.ndarray]) -> None:
    for name in (TEST_TRADES_CSV, FEATURES_JSON):
        (staging / name).parent.mkdir(parents=True, exist_ok=True)
    (staging / FEATURES_JSON).write_text(json.dumps(summary, indent=2) + "\n")
    rows = zip(*(test_trades[name].tolist() for name in TEST_TRADE_COLUMNS), strict=True)
    (staging / TEST_TRADES_CSV).write_text(
        ",".join(TEST_TRADE_COLUMNS) + "\n" + "".join(",".join(map(str, row)) + "\n" for row in rows))
    lines = [f"{name},{row},{trade_id}\n" for name in SLICES
             for row, trade_id in enumerate(trade_ids[split.rows[name]].tolist())]
    (staging / ROWS_CSV).write_text("slice,row,trade_id\n" + "".join(lines))


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, not {text}")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number of at least 0, not {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, not {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input-dir", default=DEFAULT_INPUT_DIR,
                        help="the batch's batch.json and transactions.csv (default: %(default)s)")
    parser.add_argument("--prices-dir", help="the price shards to do (default: the input dir's prices/)")
    parser.add_argument("--output-dir", default=DEFAULT_OUTPUT_DIR, help="default: %(default)s")
    parser.add_argument("--lookback-seconds", type=_positive_int, default=contract.LOOKBACK_SECONDS)
    parser.add_argument("--train-fraction", type=_fraction, default=0.7)
    parser.add_argument("--validation-fraction", type=_fraction, default=0.15)
    parser.add_argument("--min-test-windows", type=_non_negative, default=MIN_TEST_WINDOWS,
                        help="independent windows the test slice needs for a verdict (default %(default)s)")
    parser.add_argument("--workers", type=_positive_int, help="writer processes (default: one per CPU)")
    args = parser.parse_args(argv)
    if args.train_fraction + args.validation_fraction >= 1:
        parser.error("--train-fraction plus --validation-fraction must leave a test slice (sum below 1)")
    started = time.monotonic()
    try:
        summary = preprocess(args.input_dir, args.output_dir, args.prices_dir, args.lookback_seconds,
                             args.train_fraction, args.validation_fraction, args.min_test_windows, args.workers)
    except (contract.BatchError, OSError) as exc:
        print(f"preprocess: error: {exc}", file=sys.stderr)
        return 1
    counts, dropped = summary["counts"], summary["dropped"]
    print(f"preprocess: {counts['trades']:,} trades: train {counts['train']:,}, validation "
          f"{counts['validation']:,}, test {counts['test']:,} rows of {len(summary['feature_names'])} features; "
          f"dropped {dropped['short_lookback']:,} without full look-back, {dropped['crosses_split_boundary']:,} "
          f"crossing a split boundary, {dropped['embargoed']:,} embargoed; test slice "
          f"{summary['market_time']['independent_windows']['test']:g} independent windows; "
          f"{time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
