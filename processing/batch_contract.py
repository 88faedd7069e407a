"""The batch contract: the one place that names a batch's files and columns.

A batch is what the streamer writes to S3 and the Preprocess step reads:

    batches/<epic>/<batch_id>/transactions.csv        one row per closed paper trade, ordered by open_ts
    batches/<epic>/<batch_id>/prices/part-00000.csv   the ticks, ordered by ts, in time-ordered shards
    batches/<epic>/<batch_id>/prices/part-00001.csv   …
    batches/<epic>/<batch_id>/batch.json              schema version, row counts and sha256 of each CSV, the
                                                      shards, times, bot settings
    batches/<epic>/<batch_id>/batch.manifest.prices   SageMaker's ManifestFile format: the price shards
    batches/<epic>/<batch_id>/batch.manifest          written LAST, ManifestFile: transactions.csv, batch.json

Shard k holds the ticks its trades' features need and no more: trades k·SHARD_TRADES … (k+1)·SHARD_TRADES − 1
(open order), ticks from the last one at or before its first trade's open minus the look-back up to the next
shard's first open (the last shard: up to the last tick). Its own ticks (for rebuilding the whole series) start
at its first trade's open (shard 0: at the first tick) and end where the next shard's start.
So a Processing job can spread the shards over its instances (`ShardedByS3Key` on the prices manifest) while
every instance reads the whole, small, trade table, and each instance holds one shard's ticks at a time.
The prices manifest's key is the batch manifest's plus `.prices`, so a pipeline started with the one can name
the other, and the `batches/*.manifest` event rule sees only the batch manifest.

Timestamps are UTC ISO-8601 with milliseconds and `Z`; in memory they are
int64 milliseconds since the epoch. Tick times are strictly increasing.

This module is shipped into the SageMaker Processing container next to
`preprocess.py`, so it imports only numpy and the standard library: the reader
returns numpy columns, and the writer takes the pandas DataFrames of callers
that have pandas (the streamer) without importing it itself. Keeping pandas off
the reading path saves the Processing step a third of a second of start-up.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

SCHEMA_VERSION = 2  # 2: prices in shards
READ_BLOCK_BYTES = 32 << 20  # a CSV is parsed this much at a time, so reading holds little beyond its columns
PRICES_DIR = "prices"  # the price shards, part-00000.csv …
SHARD_TRADES = 100_000  # trades per price shard: about 3 million ticks with the default bot
TRANSACTIONS_FILE = "transactions.csv"
BATCH_JSON_FILE = "batch.json"
MANIFEST_FILE = "batch.manifest"
PRICES_MANIFEST_SUFFIX = ".prices"  # the price shards' manifest is <batch manifest key><this>
BATCHES_PREFIX = "batches"
LOOKBACK_SECONDS = 600  # a batch's prices cover this long before its first trade opens

PRICE_COLUMNS = (
    "ts", "epic", "bid", "offer", "mid_open", "high", "low",
    "change", "change_pct", "market_state", "update_time",
)  # fmt: skip
TRADE_COLUMNS = (
    "trade_id", "epic", "direction", "open_ts", "open_price", "stop_distance", "limit_distance",
    "close_ts", "close_price", "close_reason", "pnl", "label",
)  # fmt: skip
PRICE_FIELDS = ("bid", "offer", "mid_open", "high", "low")  # positive prices
PRICE_NUMBER_COLUMNS = (*PRICE_FIELDS, "change", "change_pct")
DIRECTIONS = ("BUY", "SELL")
CLOSE_REASONS = ("TAKE_PROFIT", "STOP_LOSS", "EXPIRED")



def feature_names(lookback_seconds: int = LOOKBACK_SECONDS) -> list[str]:
    """Training features in column order, each minus the mid of the last tick at or before the trade's open."""
    return [*PRICE_FIELDS, *(f"mid_lag_{j}s" for j in range(1, lookback_seconds + 1))]


_TEXT_COLUMNS = {"epic", "market_state", "update_time", "trade_id", "direction", "close_reason"}
_TS_COLUMNS = {"ts", "open_ts", "close_ts"}
_FLOAT_FORMAT = "%.10g"
# the range of each character of a timestamp (a digit or a fixed one), then the end of the text:
_TS_LOWEST, _TS_HIGHEST = "0000-00-00T00:00:00.000Z\0", "9999-99-99T99:99:99.999Z\0"
_TS_LENGTH = len(_TS_LOWEST) - 1


class BatchError(ValueError):
    """A batch that breaks the contract; the message is one line naming the file and the problem."""


@dataclass
class Batch:
    """A validated batch: prices and trades as {column: numpy array}, timestamps as int64 milliseconds.

    Number columns are float64, text columns hold Python strings (dtype object);
    `pd.DataFrame(batch.trades)` gives a DataFrame where one is wanted.
    """

    meta: dict
    prices: dict[str, np.ndarray]
    trades: dict[str, np.ndarray]


def batch_key_prefix(epic: str, batch_id: str) -> str:
    """The S3 key prefix of a batch, with a trailing slash."""
    return f"{BATCHES_PREFIX}/{epic}/{batch_id}/"


def manifest(bucket: str, epic: str, batch_id: str) -> list:
    """The batch manifest's content (ManifestFile format): the prefix, then the files it lists."""
    return [{"prefix": f"s3://{bucket}/{batch_key_prefix(epic, batch_id)}"}, TRANSACTIONS_FILE, BATCH_JSON_FILE]


def prices_manifest(bucket: str, epic: str, batch_id: str, shard_files: list[str]) -> list:
    """The prices manifest's content: the shards' prefix, then their file names."""
    return [{"prefix": f"s3://{bucket}/{batch_key_prefix(epic, batch_id)}{PRICES_DIR}/"}, *shard_files]


def shard_file(number: int) -> str:
    return f"part-{number:05d}.csv"


@dataclass(frozen=True)
class Shard:
    """One price shard, as row ranges of the whole tick series and of the trades (both end-exclusive)."""

    file: str  # its path in the batch: prices/part-NNNNN.csv
    trades: tuple[int, int]
    ticks: tuple[int, int]  # the rows in its file
    own_from: int  # its own ticks start here (the previous shard's end there)


def plan_shards(ts: np.ndarray, open_ts: np.ndarray, shard_trades: int = SHARD_TRADES,
                lookback_seconds: int = LOOKBACK_SECONDS) -> list[Shard]:
    """The shards of a batch (see the module's docstring) from its tick times and trade opens, both sorted."""
    shards = []
    for k, first in enumerate(range(0, len(open_ts), shard_trades) if len(open_ts) else [0]):
        end = min(first + shard_trades, len(open_ts))
        file_from, file_to, own_from = shard_rows(ts, open_ts, first, end, lookback_seconds)
        shards.append(Shard(f"{PRICES_DIR}/{shard_file(k)}", (first, end), (file_from, file_to), own_from))
    return shards


def look_back_row(ts: np.ndarray, open_ms: int, lookback_seconds: int = LOOKBACK_SECONDS) -> int:
    """The row of the last tick at or before a look-back before `open_ms` (0 if there is none): where the file
    of a shard whose first trade opens then starts."""
    return max(int(np.searchsorted(ts, open_ms - 1000 * lookback_seconds, "right")) - 1, 0)


def shard_rows(ts: np.ndarray, open_ts: np.ndarray, first: int, end: int,
               lookback_seconds: int = LOOKBACK_SECONDS) -> tuple[int, int, int]:
    """(first and end row of its file, first row of its own ticks) in `ts` of the shard of trades first … end − 1.

    `ts` (tick times) and `open_ts` (trade opens) are sorted; `ts` starts at the batch's first tick or at least a
    look-back before the shard's first trade. A shard with `end == len(open_ts)` is the last: its file runs to the
    last tick of `ts`; any other needs `open_ts[end]` (the next shard's first open) and the ticks up to it.
    """
    own_from = 0 if first == 0 else int(np.searchsorted(ts, open_ts[first], "left"))
    file_from = 0 if first == 0 else look_back_row(ts, open_ts[first], lookback_seconds)
    own_to = len(ts) if end >= len(open_ts) else int(np.searchsorted(ts, open_ts[end], "left"))
    file_to = max(own_to, int(np.searchsorted(ts, open_ts[end - 1], "right")) if end > first else 0)
    return file_from, file_to, own_from


def format_ts(ms) -> np.ndarray:
    """int64 milliseconds → ISO-8601 strings with milliseconds and `Z`."""
    return np.datetime_as_string(np.asarray(ms, dtype="int64").astype("datetime64[ms]"), unit="ms", timezone="UTC")


def parse_ts(values, where: str, first_row: int = 0) -> np.ndarray:
    """ISO-8601 `YYYY-MM-DDTHH:MM:SS.mmmZ` strings → int64 milliseconds; BatchError naming `where` if malformed.

    `values`: strings or bytes, e.g. a numpy U or S array (checked as it is, without a copy per string);
    `first_row`: how many rows of the file come before them (for the row number in the message).
    """
    ms, bad = parse_ts_rows(values)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        shown = np.asarray(values).reshape(-1)[row]
        shown = (shown.decode(errors="replace") if isinstance(shown, bytes) else str(shown))[: _TS_LENGTH + 1]
        raise BatchError(f"{where}: row {first_row + row + 1}: timestamp {shown!r} is not UTC ISO-8601 "
                         f"like 2026-01-05T09:30:00.123Z")
    return ms


def parse_ts_rows(values) -> tuple[np.ndarray, np.ndarray]:
    """Like `parse_ts`, row by row: (int64 milliseconds, True where the row is malformed and its value is 0)."""
    text = np.asarray(values)
    kind = text.dtype.kind if text.dtype.kind in "SU" else "U"
    text = np.ascontiguousarray(text, dtype=f"{kind}{_TS_LENGTH + 1}").reshape(-1)  # one more: a longer one shows
    chars = text.view(f"u{text.dtype.itemsize // (_TS_LENGTH + 1)}").reshape(-1, _TS_LENGTH + 1)
    lowest, highest = (np.array([ord(c) for c in pattern], chars.dtype) for pattern in (_TS_LOWEST, _TS_HIGHEST))
    bad = np.any((chars < lowest) | (chars > highest), axis=1)
    without_z = chars[:, : _TS_LENGTH - 1].copy().view(f"{kind}{_TS_LENGTH - 1}").reshape(-1)
    without_z[bad] = _TS_LOWEST[: _TS_LENGTH - 1].replace("0000-00-00", "1970-01-01")
    try:
        ms = without_z.astype("datetime64[ms]").astype("int64")
    except ValueError:  # e.g. month 13: find the rows, one by one (rare)
        ms = np.zeros(len(without_z), "int64")
        for row, value in enumerate(without_z):
            try:
                ms[row] = np.datetime64(value, "ms").astype("int64")
            except ValueError:
                bad[row] = True
    ms[bad] = 0
    return ms, bad


def price_row_problems(prices) -> list[tuple[np.ndarray, str]]:
    """The batch contract's rules for one price row at a time: (True where a row breaks it, the rule) per rule.

    The one home of these rules: the batch reader and the streamer (live and replayed ticks) use them. `prices`
    maps the price columns to arrays, or to scalars for one tick. Order (`ts_order_problems`) is checked apart.
    """
    numbers = {column: np.asarray(prices[column], dtype="f8") for column in PRICE_NUMBER_COLUMNS}
    problems = [(~np.isfinite(numbers[column]), f"{column} is not a finite number") for column in PRICE_NUMBER_COLUMNS]
    problems += [(numbers[field] <= 0, f"{field} is not a positive price") for field in PRICE_FIELDS]
    problems.append((numbers["bid"] > numbers["offer"], "bid is above offer"))
    return problems


def ts_order_problems(ts: np.ndarray, after: int | None = None, skip: np.ndarray | None = None
                      ) -> list[tuple[np.ndarray, str]]:
    """Rows whose tick time is not after every earlier row's (and `after`): tick times strictly increase.

    Rows where `skip` is True (rejected already) neither count as earlier rows nor are checked.
    """
    ts = np.asarray(ts, dtype="int64")
    counted = ts if skip is None else np.where(skip, np.iinfo("int64").min, ts)
    earlier = np.maximum.accumulate(np.r_[np.iinfo("int64").min if after is None else after, counted])[:-1]
    checked = True if skip is None else ~skip
    return [(checked & (ts < earlier), "ticks are not ordered by ts"),
            (checked & (ts == earlier), "duplicated tick timestamp")]


def _csv_bytes(frame: pd.DataFrame, columns: tuple[str, ...]) -> bytes:
    out = frame.loc[:, list(columns)].copy()
    for column in _TS_COLUMNS & set(columns):
        out[column] = format_ts(out[column].to_numpy())
    buffer = io.StringIO()
    out.to_csv(buffer, index=False, float_format=_FLOAT_FORMAT, lineterminator="\n")
    return buffer.getvalue().encode()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def render_batch(*, bucket: str, epic: str, batch_id: str, prices: pd.DataFrame, trades: pd.DataFrame,
                 bot_settings: dict, shard_trades: int = SHARD_TRADES) -> dict[str, bytes]:
    """Every file of a batch as bytes, keyed by path in the batch, in write order (the batch manifest last).

    `prices` has PRICE_COLUMNS and `trades` has TRADE_COLUMNS, timestamps as
    int64 milliseconds. The same inputs always give the same bytes, so a batch
    can be re-rendered after a crash and written again under the same keys.
    """
    prices = prices.sort_values("ts", kind="stable")
    trades = trades.sort_values(["open_ts", "trade_id"], kind="stable")
    ts = prices["ts"].to_numpy()
    files, entries = {}, []
    for shard in plan_shards(ts, trades["open_ts"].to_numpy(), shard_trades):
        files[shard.file] = _csv_bytes(prices.iloc[slice(*shard.ticks)], PRICE_COLUMNS)
        entries.append(shard_entry(shard.file, shard.trades, ts[shard.own_from] if shard.own_from < len(ts) else None))
    files[TRANSACTIONS_FILE] = _csv_bytes(trades, TRADE_COLUMNS)
    digests = {name: _digest(data) for name, data in files.items()}
    return {**files, **_closing_files(bucket=bucket, epic=epic, batch_id=batch_id, digests=digests, shards=entries,
                                      ticks=ts[[0, -1]] if len(ts) else (), trades=trades, bot_settings=bot_settings)}


def shard_entry(file: str, trades: tuple[int, int], own_ticks_from_ms) -> dict:
    """A shard as batch.json lists it."""
    return {"file": file, "trades": list(trades),
            "own_ticks_from": None if own_ticks_from_ms is None else str(format_ts([own_ticks_from_ms])[0])}


def _digest(data: bytes) -> dict:
    """What batch.json records of a CSV file."""
    return {"rows": data.count(b"\n") - 1, "sha256": sha256(data)}


def _closing_files(*, bucket: str, epic: str, batch_id: str, digests: dict[str, dict], shards: list[dict], ticks,
                   trades: pd.DataFrame, bot_settings: dict) -> dict[str, bytes]:
    """batch.json (the CSV files' digests, the shards, the trades) and the two manifests, in write order."""
    meta = {
        "schema_version": SCHEMA_VERSION,
        "batch_id": batch_id,
        "epic": epic,
        "files": digests,
        "price_shards": shards,
        "ticks": _time_range(ticks),
        "trades_open": _time_range(trades["open_ts"]),
        "trades_close": _time_range(trades["close_ts"]),
        "bot": bot_settings,
    }
    shard_names = [Path(shard["file"]).name for shard in shards]
    return {BATCH_JSON_FILE: (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode(),
            MANIFEST_FILE + PRICES_MANIFEST_SUFFIX: _json_line(prices_manifest(bucket, epic, batch_id, shard_names)),
            MANIFEST_FILE: _json_line(manifest(bucket, epic, batch_id))}


def _json_line(value) -> bytes:
    return (json.dumps(value) + "\n").encode()


def _time_range(ms) -> dict:
    if len(ms) == 0:
        return {"first": None, "last": None}
    first, last = format_ts([np.min(ms), np.max(ms)])
    return {"first": str(first), "last": str(last)}


class BatchWriter:
    """A batch written into a new directory shard by shard, for batches too big to render in memory at once: the
    files `render_batch` makes of the same data, all appearing at once when `finish` renames the staging folder."""

    def __init__(self, directory: str | os.PathLike, *, bucket: str, epic: str, batch_id: str):
        self.target = Path(directory)
        if self.target.exists():
            raise BatchError(f"{self.target}: already exists; choose a new --out directory or remove it")
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.staging = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.", dir=self.target.parent))
        (self.staging / PRICES_DIR).mkdir()
        self.names = {"bucket": bucket, "epic": epic, "batch_id": batch_id}
        self.digests: dict[str, dict] = {}
        self.shards: list[dict] = []

    def add_shard(self, prices: pd.DataFrame, trades: tuple[int, int], own_ticks_from_ms) -> None:
        """The next shard: its file's rows (PRICE_COLUMNS), its trades' rows, where its own ticks start."""
        name = f"{PRICES_DIR}/{shard_file(len(self.shards))}"
        self._write(name, _csv_bytes(prices, PRICE_COLUMNS))
        self.shards.append(shard_entry(name, trades, own_ticks_from_ms))

    def finish(self, trades: pd.DataFrame, bot_settings: dict, ticks: tuple[int, int]) -> Path:
        """Write the trades (TRADE_COLUMNS, sorted by open), batch.json and the manifests; the batch's directory."""
        self._write(TRANSACTIONS_FILE, _csv_bytes(trades, TRADE_COLUMNS))
        for name, data in _closing_files(**self.names, digests=self.digests, shards=self.shards, ticks=ticks,
                                         trades=trades, bot_settings=bot_settings).items():
            (self.staging / name).write_bytes(data)
        os.rename(self.staging, self.target)
        return self.target

    def abandon(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)

    def _write(self, name: str, data: bytes) -> None:
        (self.staging / name).write_bytes(data)
        self.digests[name] = _digest(data)


def write_batch_dir(files: dict[str, bytes], directory: str | os.PathLike) -> Path:
    """Write a rendered batch into `directory` atomically: all files appear at once, or none."""
    target = Path(directory)
    if target.exists():
        raise BatchError(f"{target}: already exists; choose a new --out directory or remove it")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for name, data in files.items():
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            (staging / name).write_bytes(data)
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def upload_batch_dir(s3, bucket: str, directory: str | os.PathLike) -> str:
    """Put a batch directory into S3 under its key prefix, the manifest LAST; returns the manifest's key.

    `s3` is a boto3 S3 client (this module imports no AWS SDK).
    """
    directory = Path(directory)
    meta = json.loads((directory / BATCH_JSON_FILE).read_text())
    prefix = batch_key_prefix(meta["epic"], meta["batch_id"])
    for name in (*meta["files"], BATCH_JSON_FILE, MANIFEST_FILE + PRICES_MANIFEST_SUFFIX, MANIFEST_FILE):
        with open(directory / name, "rb") as body:  # one PUT each (shards stay far below S3's 5 GB)
            s3.put_object(Bucket=bucket, Key=prefix + name, Body=body)
    return prefix + MANIFEST_FILE


# ---------------------------------------------------------------- reading


def read_batch(directory: str | os.PathLike, price_columns: tuple[str, ...] = PRICE_COLUMNS) -> Batch:
    """Read and validate the whole batch in `directory` (batch.json, transactions.csv and prices/ as the
    manifests download them), the shards' own ticks joined into one series.

    Every column is checked; only `price_columns` of the shards are kept (a million trades have some 30
    million ticks). Raises BatchError with one line naming the file and the problem.
    """
    directory = Path(directory)
    meta = read_meta(directory)
    trades = read_trades(directory, meta)
    shards = meta["price_shards"]
    starts = [np.iinfo("int64").min, *parse_ts([shard["own_ticks_from"] for shard in shards[1:]], BATCH_JSON_FILE),
              np.iinfo("int64").max]
    parts = []
    for shard, own_from, own_to in zip(shards, starts, starts[1:], strict=False):
        prices = read_shard(directory, meta, shard, price_columns)
        own = (prices["ts"] >= own_from) & (prices["ts"] < own_to)
        parts.append({column: values[own] for column, values in prices.items()})
    prices = {column: np.concatenate([part[column] for part in parts]) for column in price_columns}
    _fail_if(np.r_[False, prices["ts"][1:] <= prices["ts"][:-1]], f"{directory / PRICES_DIR}",
             "the shards' own ticks overlap or are out of order; export the batch again")
    _check_coverage(prices["ts"][[0, -1]], trades)
    return Batch(meta=meta, prices=prices, trades=trades)


def read_meta(directory: str | os.PathLike) -> dict:
    """batch.json of the batch in `directory`, checked for the keys and schema version this reader needs."""
    path = Path(directory) / BATCH_JSON_FILE
    if not path.is_file():
        raise BatchError(f"{path}: missing; a batch needs {BATCH_JSON_FILE}, {TRANSACTIONS_FILE} and "
                         f"{PRICES_DIR}/")
    try:
        meta = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise BatchError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("schema_version") != SCHEMA_VERSION:
        raise BatchError(f"{path}: schema_version must be {SCHEMA_VERSION}; re-export the batch "
                         f"with this version of livetrain")
    for key in ("batch_id", "epic", "files", "price_shards", "ticks"):
        if key not in meta:
            raise BatchError(f"{path}: missing key {key!r}")
    return meta


def read_trades(directory: str | os.PathLike, meta: dict) -> dict[str, np.ndarray]:
    """transactions.csv of the batch in `directory`, validated, within the tick span batch.json names."""
    path = Path(directory) / TRANSACTIONS_FILE
    if not path.is_file():
        raise BatchError(f"{path}: missing; a batch needs {BATCH_JSON_FILE}, {TRANSACTIONS_FILE} and "
                         f"{PRICES_DIR}/")
    trades = _read_csv(path, TRANSACTIONS_FILE, TRADE_COLUMNS, meta, TRADE_COLUMNS)
    _check_trades(trades, TRANSACTIONS_FILE, meta["epic"])
    _check_coverage(parse_ts([meta["ticks"]["first"] or "", meta["ticks"]["last"] or ""], BATCH_JSON_FILE), trades)
    return trades


def shard_path(prices_dir: str | os.PathLike, shard: dict) -> Path:
    """Where a shard is: in `prices_dir` (as a prices manifest downloads it), or under its prices/ folder (a
    whole batch's directory); BatchError if in neither."""
    for path in (Path(prices_dir) / Path(shard["file"]).name, Path(prices_dir) / shard["file"]):
        if path.is_file():
            return path
    raise BatchError(f"{shard['file']}: missing from {prices_dir}; a batch needs every shard its {BATCH_JSON_FILE} "
                     f"lists")


def read_shard(prices_dir: str | os.PathLike, meta: dict, shard: dict,
               price_columns: tuple[str, ...] = PRICE_COLUMNS) -> dict[str, np.ndarray]:
    """One price shard (an entry of batch.json's price_shards), validated, from `prices_dir` or its
    prices/ folder: its file's `price_columns`."""
    name = shard["file"]
    prices = _read_csv(shard_path(prices_dir, shard), name, PRICE_COLUMNS, meta, price_columns,
                       _price_checks(name, meta["epic"]))
    if len(prices["ts"]) == 0:
        raise BatchError(f"{name}: no ticks; an empty batch cannot be processed")
    return prices


def _column_dtype(column: str, kept: bool = True) -> str:
    if column in _TS_COLUMNS:
        return f"S{_TS_LENGTH + 1}"  # as parse_ts reads them: one byte more than a timestamp
    if column in _TEXT_COLUMNS:
        return "O" if kept or column == "epic" else "S1"  # a text column not kept is not held either
    return "f8"


def _read_csv(path: Path, name: str, columns: tuple[str, ...], meta: dict, keep: tuple[str, ...],
              check_block=None) -> dict[str, np.ndarray]:
    """The `keep` columns of the batch's CSV `name` at `path`, read READ_BLOCK_BYTES at a time after its sha256
    is checked.

    Numbers must be finite and timestamps well-formed; `check_block(block, first_row)` checks each block's
    columns further (row numbers in its messages count from `first_row`)."""
    expected = meta["files"].get(name, {})
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(READ_BLOCK_BYTES):
            digest.update(chunk)
    if expected.get("sha256") != digest.hexdigest():
        raise BatchError(f"{path}: sha256 does not match {BATCH_JSON_FILE}; the file is corrupt "
                         f"or incomplete, export the batch again")
    dtype = [(c, _column_dtype(c, c in keep)) for c in columns]
    parts: dict[str, list[np.ndarray]] = {column: [] for column in keep}
    rows = 0
    with open(path, "rb") as file:
        header = file.readline().decode(errors="replace").strip()
        if header != ",".join(columns):
            raise BatchError(f"{path}: header is {header!r}, expected {','.join(columns)!r}")
        for data in _line_blocks(file):
            table = _parse_block(path, data, dtype, columns, rows)
            block = {}
            for column in columns:
                values = table[column]
                if column in _TS_COLUMNS:
                    values = parse_ts(values, f"{path}: column {column}", rows)
                elif column not in _TEXT_COLUMNS:
                    _fail_if(~np.isfinite(values), f"{path}: column {column}", "not a finite number", rows)
                block[column] = values
            if check_block is not None:
                check_block(block, rows)
            for column in keep:
                parts[column].append(block[column])
            rows += len(table)
    if rows != expected.get("rows"):
        raise BatchError(f"{path}: {rows} rows but {BATCH_JSON_FILE} says {expected.get('rows')}")
    return {column: np.concatenate(blocks) for column, blocks in parts.items()}


def _line_blocks(file):
    """The rest of `file` in pieces of about READ_BLOCK_BYTES, each ending at the end of a line (at least one
    piece, maybe empty)."""
    carry, empty = b"", True
    while chunk := file.read(READ_BLOCK_BYTES):
        data, _, carry = (carry + chunk).rpartition(b"\n")  # no line end yet: all of it is carried
        if data.strip():
            empty = False
            yield data + b"\n"
    if carry.strip() or empty:
        yield carry


def _parse_block(path: Path, data: bytes, dtype: list, columns: tuple[str, ...], first_row: int) -> np.ndarray:
    try:
        with warnings.catch_warnings():  # a file with no rows is reported by the checks, not as a warning
            warnings.simplefilter("ignore", UserWarning)
            return np.loadtxt(io.BytesIO(data), dtype=dtype, delimiter=",", quotechar='"', comments=None,
                              ndmin=1, encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise BatchError(f"{path}: not UTF-8 text ({exc.reason}); export the batch again") from None
    except ValueError:
        raise BatchError(_first_unreadable_row(path, data.decode(errors="replace"), columns, first_row)) from None


def _first_unreadable_row(path: Path, text: str, columns: tuple[str, ...], first_row: int) -> str:
    """The problem numpy's CSV reader stopped at in `text` (rows after `first_row`), as one line naming the row
    (read again, row by row)."""
    numbers = [(i, column) for i, column in enumerate(columns) if _column_dtype(column) == "f8"]
    rows = csv.reader(io.StringIO(text))
    for row_number, fields in enumerate((fields for fields in rows if fields), start=first_row + 1):
        if len(fields) != len(columns):
            return f"{path}: row {row_number}: {len(fields)} fields, expected {len(columns)}"
        for i, column in numbers:
            try:
                float(fields[i])
            except ValueError:
                return f"{path}: column {column}: row {row_number}: {fields[i]!r} is not a number"
    return f"{path}: not a valid CSV file; export the batch again"


def _first_bad_row(bad: np.ndarray) -> int | None:
    rows = np.flatnonzero(bad)
    return int(rows[0]) + 1 if len(rows) else None


def _fail_if(bad, where: str, problem: str, first_row: int = 0) -> None:
    row = _first_bad_row(np.asarray(bad))
    if row is not None:
        raise BatchError(f"{where}: row {first_row + row}: {problem}")


def _price_checks(name: str, epic: str):
    """The check of each block of a price shard: the row rules, the epic, and tick times increasing across
    blocks."""
    last_ts = None

    def check(block: dict[str, np.ndarray], first_row: int) -> None:
        nonlocal last_ts
        for bad, problem in price_row_problems(block):
            _fail_if(bad, name, problem, first_row)
        _fail_if(block["epic"] != epic, name, f"epic is not {epic!r} as in {BATCH_JSON_FILE}", first_row)
        for bad, problem in ts_order_problems(block["ts"], after=last_ts):
            _fail_if(bad, name, problem, first_row)
        if len(block["ts"]):
            last_ts = int(block["ts"][-1])

    return check


def _check_trades(trades: dict[str, np.ndarray], name: str, epic: str) -> None:
    if len(trades["trade_id"]) == 0:
        raise BatchError(f"{name}: no trades; an empty batch cannot be processed")
    _fail_if(~np.isin(trades["direction"], DIRECTIONS), name, f"direction must be one of {DIRECTIONS}")
    _fail_if(~np.isin(trades["close_reason"], CLOSE_REASONS), name, f"close_reason must be one of {CLOSE_REASONS}")
    _fail_if(trades["epic"] != epic, name, f"epic is not {epic!r} as in {BATCH_JSON_FILE}")
    for field in ("open_price", "close_price", "stop_distance", "limit_distance"):
        _fail_if(trades[field] <= 0, name, f"{field} is not positive")
    _fail_if(trades["close_ts"] < trades["open_ts"], name, "close_ts is before open_ts")
    _fail_if(~np.isin(trades["label"], (0.0, 1.0)), name, "label must be 0 or 1")
    _fail_if(trades["label"] != (trades["pnl"] > 0), name, "label is not (pnl > 0)")
    _fail_if(_repeated(trades["trade_id"]), name, "duplicated trade_id")
    opened = trades["open_ts"]
    _fail_if(np.r_[False, opened[1:] < opened[:-1]], name, "trades are not ordered by open_ts")


def _repeated(values: np.ndarray) -> np.ndarray:
    """True where a value equals one in an earlier row."""
    _, first_rows = np.unique(values, return_index=True)
    repeated = np.ones(len(values), bool)
    repeated[first_rows] = False
    return repeated


def _check_coverage(tick_span: np.ndarray, trades: dict[str, np.ndarray]) -> None:
    """BatchError for a trade opened before the first tick or closed after the last."""
    first, last = tick_span
    outside = (trades["open_ts"] < first) | (trades["close_ts"] > last)
    if outside.any():  # (the message's times are formatted only when needed)
        _fail_if(outside, TRANSACTIONS_FILE, f"trade lies outside the price coverage of {PRICES_DIR}/ "
                 f"({format_ts([first])[0]} … {format_ts([last])[0]})")
