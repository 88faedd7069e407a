"""The batch contract: the one place that names a batch's files and columns.

A batch is what the streamer writes to S3 and the Preprocess step reads:

    batches/<epic>/<batch_id>/prices.csv        one row per tick, ordered by ts
    batches/<epic>/<batch_id>/transactions.csv  one row per closed paper trade, ordered by open_ts
    batches/<epic>/<batch_id>/batch.json        schema version, row counts, sha256 of each CSV, times, bot settings
    batches/<epic>/<batch_id>/batch.manifest    written LAST, SageMaker's ManifestFile format

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

SCHEMA_VERSION = 1
READ_BLOCK_BYTES = 32 << 20  # a CSV is parsed this much at a time, so reading holds little beyond its columns
PRICES_FILE = "prices.csv"
TRANSACTIONS_FILE = "transactions.csv"
BATCH_JSON_FILE = "batch.json"
MANIFEST_FILE = "batch.manifest"
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
    """The batch's ManifestFile content: the prefix, then the files it lists."""
    return [{"prefix": f"s3://{bucket}/{batch_key_prefix(epic, batch_id)}"}, PRICES_FILE,
            TRANSACTIONS_FILE, BATCH_JSON_FILE]


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
                 bot_settings: dict) -> dict[str, bytes]:
    """Every file of a batch as bytes, in write order (the manifest last).

    `prices` has PRICE_COLUMNS and `trades` has TRADE_COLUMNS, timestamps as
    int64 milliseconds. The same inputs always give the same bytes, so a batch
    can be re-rendered after a crash and written again under the same keys.
    """
    prices = prices.sort_values("ts", kind="stable")
    trades = trades.sort_values(["open_ts", "trade_id"], kind="stable")
    prices_csv = _csv_bytes(prices, PRICE_COLUMNS)
    trades_csv = _csv_bytes(trades, TRADE_COLUMNS)
    meta = {
        "schema_version": SCHEMA_VERSION,
        "batch_id": batch_id,
        "epic": epic,
        "files": {
            PRICES_FILE: {"rows": len(prices), "sha256": sha256(prices_csv)},
            TRANSACTIONS_FILE: {"rows": len(trades), "sha256": sha256(trades_csv)},
        },
        "ticks": _time_range(prices["ts"]),
        "trades_open": _time_range(trades["open_ts"]),
        "trades_close": _time_range(trades["close_ts"]),
        "bot": bot_settings,
    }
    batch_json = (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode()
    manifest_json = (json.dumps(manifest(bucket, epic, batch_id)) + "\n").encode()
    return {PRICES_FILE: prices_csv, TRANSACTIONS_FILE: trades_csv, BATCH_JSON_FILE: batch_json,
            MANIFEST_FILE: manifest_json}


def _time_range(ms: pd.Series) -> dict:
    if len(ms) == 0:
        return {"first": None, "last": None}
    first, last = format_ts([ms.min(), ms.max()])
    return {"first": str(first), "last": str(last)}


def write_batch_dir(files: dict[str, bytes], directory: str | os.PathLike) -> Path:
    """Write a rendered batch into `directory` atomically: all files appear at once, or none."""
    target = Path(directory)
    if target.exists():
        raise BatchError(f"{target}: already exists; choose a new --out directory or remove it")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for name, data in files.items():
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
    for name in (PRICES_FILE, TRANSACTIONS_FILE, BATCH_JSON_FILE, MANIFEST_FILE):
        s3.put_object(Bucket=bucket, Key=prefix + name, Body=(directory / name).read_bytes())
    return prefix + MANIFEST_FILE


# ---------------------------------------------------------------- reading


def read_batch(directory: str | os.PathLike, price_columns: tuple[str, ...] = PRICE_COLUMNS) -> Batch:
    """Read and validate the batch in `directory` (the files a ManifestFile input downloads).

    Every column is checked; only `price_columns` of prices.csv are kept (a million trades have some 30
    million ticks: Preprocess keeps the six it uses). Raises BatchError with one line naming the file and
    the problem.
    """
    directory = Path(directory)
    for name in (BATCH_JSON_FILE, PRICES_FILE, TRANSACTIONS_FILE):
        if not (directory / name).is_file():
            raise BatchError(f"{directory / name}: missing; a batch needs {PRICES_FILE}, "
                             f"{TRANSACTIONS_FILE} and {BATCH_JSON_FILE}")
    meta = _read_meta(directory / BATCH_JSON_FILE)
    prices = _read_csv(directory / PRICES_FILE, PRICE_COLUMNS, meta, price_columns, _price_checks(meta["epic"]))
    trades = _read_csv(directory / TRANSACTIONS_FILE, TRADE_COLUMNS, meta, TRADE_COLUMNS)
    if len(prices["ts"]) == 0:
        raise BatchError(f"{PRICES_FILE}: no ticks; an empty batch cannot be processed")
    _check_trades(trades, TRANSACTIONS_FILE, meta["epic"])
    _check_coverage(prices, trades)
    return Batch(meta=meta, prices=prices, trades=trades)


def _read_meta(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise BatchError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("schema_version") != SCHEMA_VERSION:
        raise BatchError(f"{path}: schema_version must be {SCHEMA_VERSION}; re-export the batch "
                         f"with this version of livetrain")
    for key in ("batch_id", "epic", "files"):
        if key not in meta:
            raise BatchError(f"{path}: missing key {key!r}")
    return meta


def _column_dtype(column: str, kept: bool = True) -> str:
    if column in _TS_COLUMNS:
        return f"S{_TS_LENGTH + 1}"  # as parse_ts reads them: one byte more than a timestamp
    if column in _TEXT_COLUMNS:
        return "O" if kept or column == "epic" else "S1"  # a text column not kept is not held either
    return "f8"


def _read_csv(path: Path, columns: tuple[str, ...], meta: dict, keep: tuple[str, ...],
              check_block=None) -> dict[str, np.ndarray]:
    """The `keep` columns of a batch CSV, read READ_BLOCK_BYTES at a time after its sha256 is checked.

    Numbers must be finite and timestamps well-formed; `check_block(block, first_row)` checks each block's
    columns further (row numbers in its messages count from `first_row`)."""
    expected = meta["files"].get(path.name, {})
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


def _price_checks(epic: str):
    """The check of each block of prices.csv: the row rules, the epic, and tick times increasing across blocks."""
    last_ts = None

    def check(block: dict[str, np.ndarray], first_row: int) -> None:
        nonlocal last_ts
        for bad, problem in price_row_problems(block):
            _fail_if(bad, PRICES_FILE, problem, first_row)
        _fail_if(block["epic"] != epic, PRICES_FILE, f"epic is not {epic!r} as in {BATCH_JSON_FILE}", first_row)
        for bad, problem in ts_order_problems(block["ts"], after=last_ts):
            _fail_if(bad, PRICES_FILE, problem, first_row)
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


def _check_coverage(prices: dict[str, np.ndarray], trades: dict[str, np.ndarray]) -> None:
    first, last = prices["ts"][0], prices["ts"][-1]
    outside = (trades["open_ts"] < first) | (trades["close_ts"] > last)
    if outside.any():  # (the message's times are formatted only when needed)
        _fail_if(outside, TRANSACTIONS_FILE, f"trade lies outside the price coverage of {PRICES_FILE} "
                 f"({format_ts([first])[0]} … {format_ts([last])[0]})")
