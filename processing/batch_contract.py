"""The batch contract: the one place that names a batch's files and columns.

A batch is what the streamer writes to S3 and the Preprocess step reads:

    batches/<epic>/<batch_id>/prices.csv        one row per tick, ordered by ts
    batches/<epic>/<batch_id>/transactions.csv  one row per closed paper trade, ordered by open_ts
    batches/<epic>/<batch_id>/batch.json        schema version, row counts, sha256 of each CSV, times, bot settings
    batches/<epic>/<batch_id>/batch.manifest    written LAST, SageMaker's ManifestFile format

Timestamps are UTC ISO-8601 with milliseconds and `Z`; in memory they are
int64 milliseconds since the epoch. Tick times are strictly increasing.

This module is shipped into the SageMaker Processing container next to
`preprocess.py`, so it may import only numpy, pandas and the standard library.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

SCHEMA_VERSION = 1
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
DIRECTIONS = ("BUY", "SELL")
CLOSE_REASONS = ("TAKE_PROFIT", "STOP_LOSS", "EXPIRED")



def feature_names(lookback_seconds: int = LOOKBACK_SECONDS) -> list[str]:
    """Training features in column order, each minus the mid of the last tick at or before the trade's open."""
    return [*PRICE_FIELDS, *(f"mid_lag_{j}s" for j in range(1, lookback_seconds + 1))]


_TEXT_COLUMNS = {"epic", "market_state", "update_time", "trade_id", "direction", "close_reason"}
_TS_COLUMNS = {"ts", "open_ts", "close_ts"}
_FLOAT_FORMAT = "%.10g"
_TS_LENGTH = len("2026-01-05T00:00:00.000Z")


class BatchError(ValueError):
    """A batch that breaks the contract; the message is one line naming the file and the problem."""


@dataclass
class Batch:
    """A validated batch: prices and trades with timestamps as int64 milliseconds."""

    meta: dict
    prices: pd.DataFrame
    trades: pd.DataFrame


def batch_key_prefix(epic: str, batch_id: str) -> str:
    """The S3 key prefix of a batch, with a trailing slash."""
    return f"{BATCHES_PREFIX}/{epic}/{batch_id}/"


def manifest(bucket: str, epic: str, batch_id: str) -> list:
    """The batch's ManifestFile content: the prefix, then the files it lists."""
    return [{"prefix": f"s3://{bucket}/{batch_key_prefix(epic, batch_id)}"}, PRICES_FILE,
            TRANSACTIONS_FILE, BATCH_JSON_FILE]


def format_ts(ms) -> np.ndarray:
    """int64 milliseconds → ISO-8601 strings with milliseconds and `Z`."""
    text = np.datetime_as_string(np.asarray(ms, dtype="int64").astype("datetime64[ms]"), unit="ms")
    return np.char.add(text, "Z")


def parse_ts(values, where: str) -> np.ndarray:
    """ISO-8601 `...T..:..:..mmmZ` strings → int64 milliseconds; BatchError naming `where` if malformed."""
    text = pd.Series(values, dtype="string")
    bad = (text.str.len() != _TS_LENGTH) | ~text.str.endswith("Z") | (text.str.slice(10, 11) != "T") | text.isna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise BatchError(f"{where}: row {row + 1}: timestamp {values[row]!r} is not UTC ISO-8601 "
                         f"like 2026-01-05T09:30:00.123Z")
    try:
        parsed = np.array(text.str.slice(0, _TS_LENGTH - 1).to_numpy(dtype=str), dtype="datetime64[ms]")
    except ValueError as exc:
        raise BatchError(f"{where}: {exc}") from None
    return parsed.astype("int64")


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


def read_batch(directory: str | os.PathLike) -> Batch:
    """Read and validate the batch in `directory` (the files a ManifestFile input downloads).

    Raises BatchError with one line naming the file and the problem.
    """
    directory = Path(directory)
    for name in (BATCH_JSON_FILE, PRICES_FILE, TRANSACTIONS_FILE):
        if not (directory / name).is_file():
            raise BatchError(f"{directory / name}: missing; a batch needs {PRICES_FILE}, "
                             f"{TRANSACTIONS_FILE} and {BATCH_JSON_FILE}")
    meta = _read_meta(directory / BATCH_JSON_FILE)
    prices = _read_csv(directory / PRICES_FILE, PRICE_COLUMNS, meta)
    trades = _read_csv(directory / TRANSACTIONS_FILE, TRADE_COLUMNS, meta)
    _check_prices(prices, PRICES_FILE, meta["epic"])
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


def _read_csv(path: Path, columns: tuple[str, ...], meta: dict) -> pd.DataFrame:
    data = path.read_bytes()
    expected = meta["files"].get(path.name, {})
    if expected.get("sha256") != sha256(data):
        raise BatchError(f"{path}: sha256 does not match {BATCH_JSON_FILE}; the file is corrupt "
                         f"or incomplete, export the batch again")
    header = io.BytesIO(data).readline().decode(errors="replace").strip()
    if header != ",".join(columns):
        raise BatchError(f"{path}: header is {header!r}, expected {','.join(columns)!r}")
    numbers = {column: "float64" for column in columns if column not in _TEXT_COLUMNS | _TS_COLUMNS}
    try:
        try:  # fast: the C parser converts the numbers
            frame = pd.read_csv(io.BytesIO(data), dtype=dict.fromkeys(columns, str) | numbers, keep_default_na=False)
        except ValueError:  # something is not a number: read text, so that _numeric names the row
            frame = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
    except pd.errors.ParserError as exc:
        raise BatchError(f"{path}: not a valid CSV file ({str(exc).strip()})") from None
    if len(frame) != expected.get("rows"):
        raise BatchError(f"{path}: {len(frame)} rows but {BATCH_JSON_FILE} says {expected.get('rows')}")
    for column in columns:
        if column in _TS_COLUMNS:
            frame[column] = parse_ts(frame[column], f"{path}: column {column}")
        elif column not in _TEXT_COLUMNS:
            frame[column] = _numeric(frame[column], f"{path}: column {column}")
    return frame


def _numeric(values: pd.Series, where: str) -> pd.Series:
    numbers = pd.to_numeric(values, errors="coerce")
    bad = numbers.isna() | ~np.isfinite(numbers)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise BatchError(f"{where}: row {row + 1}: {values.iloc[row]!r} is not a number")
    return numbers.astype("float64")


def _first_bad_row(bad: np.ndarray) -> int | None:
    rows = np.flatnonzero(bad)
    return int(rows[0]) + 1 if len(rows) else None


def _fail_if(bad, where: str, problem: str) -> None:
    row = _first_bad_row(np.asarray(bad))
    if row is not None:
        raise BatchError(f"{where}: row {row}: {problem}")


def _check_prices(prices: pd.DataFrame, name: str, epic: str) -> None:
    if prices.empty:
        raise BatchError(f"{name}: no ticks; an empty batch cannot be processed")
    for field in PRICE_FIELDS:
        _fail_if(prices[field].to_numpy() <= 0, name, f"{field} is not a positive price")
    _fail_if(prices["bid"].to_numpy() > prices["offer"].to_numpy(), name, "bid is above offer")
    _fail_if(prices["epic"].to_numpy() != epic, name, f"epic is not {epic!r} as in {BATCH_JSON_FILE}")
    ts = prices["ts"].to_numpy()
    _fail_if(np.r_[False, ts[1:] < ts[:-1]], name, "ticks are not ordered by ts")
    _fail_if(np.r_[False, ts[1:] == ts[:-1]], name, "duplicated tick timestamp")


def _check_trades(trades: pd.DataFrame, name: str, epic: str) -> None:
    if trades.empty:
        raise BatchError(f"{name}: no trades; an empty batch cannot be processed")
    _fail_if(~trades["direction"].isin(DIRECTIONS), name, f"direction must be one of {DIRECTIONS}")
    _fail_if(~trades["close_reason"].isin(CLOSE_REASONS), name, f"close_reason must be one of {CLOSE_REASONS}")
    _fail_if(trades["epic"].to_numpy() != epic, name, f"epic is not {epic!r} as in {BATCH_JSON_FILE}")
    for field in ("open_price", "close_price", "stop_distance", "limit_distance"):
        _fail_if(trades[field].to_numpy() <= 0, name, f"{field} is not positive")
    _fail_if(trades["close_ts"].to_numpy() < trades["open_ts"].to_numpy(), name, "close_ts is before open_ts")
    _fail_if(~trades["label"].isin((0.0, 1.0)), name, "label must be 0 or 1")
    _fail_if(trades["label"].to_numpy() != (trades["pnl"].to_numpy() > 0), name, "label is not (pnl > 0)")
    _fail_if(trades["trade_id"].duplicated().to_numpy(), name, "duplicated trade_id")
    opened = trades["open_ts"].to_numpy()
    _fail_if(np.r_[False, opened[1:] < opened[:-1]], name, "trades are not ordered by open_ts")


def _check_coverage(prices: pd.DataFrame, trades: pd.DataFrame) -> None:
    first, last = prices["ts"].iat[0], prices["ts"].iat[-1]
    outside = (trades["open_ts"].to_numpy() < first) | (trades["close_ts"].to_numpy() > last)
    _fail_if(outside, TRANSACTIONS_FILE, f"trade lies outside the price coverage of {PRICES_FILE} "
             f"({format_ts([first])[0]} … {format_ts([last])[0]})")
