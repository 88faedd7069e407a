"""The streamer's MongoDB store: ticks, trades and batches. Nothing committed is ever wiped; a restart resumes.

Collections (one database may hold several epics):
- `ticks`: buckets of consecutive ticks, as MongoDB's time-series collections store measurements: one
  document per flush (at most FLUSH_MAX_TICKS ticks spanning at most BUCKET_MAX_SPAN_MS of market time) with
  `ts` = its first tick's time, `last_ts`, `n` and `data`, one column per price field (numbers as binary
  little-endian int64/float64, as MongoDB's own buckets keep columns in binary form; text as arrays); `_id` =
  `<epic>/<ts>`. One insert per flush, not one per tick, and binary columns let the local server keep up with
  a simulator at full speed.
  Ticks reach the store strictly after the last stored one (streamer.run.Sequencer), so buckets never overlap,
  and a bucket written twice (a retried flush) is a no-op.
- `open_trades`: every paper trade as it was opened (insert-only), `_id` = trade id.
- `trades`: every closed trade, as a row of the batch contract plus `close_seq`, its 0-based position in the
  epic's close order; `_id` = `<epic>/<close_seq>`. Batches are ranges of open order (see claim_batch).
- `checkpoints`: per epic, `ts` = the last tick whose trade openings and closings are all stored, with
  `first_ts` (the first tick), `last_open_ts` (the bot's last opening) and `next_close_seq`.
- `batches`: one document per batch: its range in open order and export state (see `streamer.exporter`);
  `_id` = `<epic>/<seq>`, `batch_id` = `<first open time>-<seq>` (its S3 folder, unique within the epic).

The hot path only inserts: writes are buffered and flushed in bulk, in the order ticks → opened trades →
closed trades → checkpoint; a flush is committed when its checkpoint lands. A crash loses at most the flush in
progress: the writer's restart first deletes what a cut-short flush wrote after the checkpoint
(`discard_uncommitted`), then resumes exactly at the checkpoint, where
- every stored trade refers to a stored tick, and the stored closed trades are the prefix of the close order
  below the checkpoint's `next_close_seq`;
- the open book is rebuilt as the trades that expire after the checkpoint and are not closed: a trade open at
  the checkpoint expires after it (else it would have closed by then).
A recorded source (simulator, replay) then re-delivers the same ticks and the bot makes the same trades, so a
crash changes nothing; a live source loses the ticks of the flush in progress, as it loses unflushed ones.
Batches only ever hold committed writes (see claim_batch's cutoff).

Query shapes suit the local MongoDB-wire server (shared/reference/local-stack.md), where only a secondary
index serves a range, a sort is done on every document the filter matches, and each secondary index makes
inserts slower: one index per hot collection, ((epic, ts), (epic, expires_ts), (epic, close_ts)), and every
query a range on it bounded by something recent (the checkpoint, the last batch, a trade lifetime). No `$or`,
no `$in` lists.
"""

from __future__ import annotations

import time
from dataclasses import asdict, fields
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pymongo
from bson import Binary
from pymongo.errors import BulkWriteError

from processing.batch_contract import LOOKBACK_SECONDS, PRICE_COLUMNS, TRADE_COLUMNS
from streamer.sources import NUMERIC_FIELDS, TICK_FIELDS, Tick
from streamer.trading import Trade

DUPLICATE_KEY = 11000
FLUSH_EVERY_S = 0.25
FLUSH_MAX_TICKS = 2000
BUCKET_MAX_SPAN_MS = 3_600_000  # a range read starts this much before its first tick
BINARY_COLUMNS = {"ts": np.dtype("<i8"), **dict.fromkeys(NUMERIC_FIELDS, np.dtype("<f8"))}
_TRADE_FIELDS = tuple(f.name for f in fields(Trade))
COMMITTED = "committed"


def columns(buckets: list[dict], fields=TICK_FIELDS) -> dict[str, np.ndarray]:
    """Price fields of consecutive tick buckets, concatenated (text fields as object arrays)."""

    def column(field: str) -> np.ndarray:
        if field in BINARY_COLUMNS:
            dtype = BINARY_COLUMNS[field]
            return np.concatenate([np.empty(0, dtype)] + [np.frombuffer(b["data"][field], dtype) for b in buckets])
        return np.array([value for b in buckets for value in b["data"][field]], object)

    return {field: column(field) for field in fields}


def key(epic: str, number: int) -> str:
    """A unique document id within the epic: `<epic>/<13-digit number>` (ms timestamps until the year 2286)."""
    return f"{epic}/{number:013d}"


def connect(uri: str) -> pymongo.database.Database:
    """The database named in the URI (default `livetrain`), after a ping; UserError when unreachable."""
    from livetrain.errors import UserError

    try:  # (the URI is never shown: it may hold a password)
        if not uri.startswith(("mongodb://", "mongodb+srv://")):
            raise pymongo.errors.InvalidURI("it must begin with mongodb:// or mongodb+srv://")
        options = {} if "serverSelectionTimeoutMS" in uri else {"serverSelectionTimeoutMS": 10_000}
        client = pymongo.MongoClient(uri, tz_aware=True, **options)
    except (pymongo.errors.ConfigurationError, ValueError) as exc:  # InvalidURI is one; a bad port is a ValueError
        raise UserError(f"--mongo-uri (or MONGODB_URI) is not a MongoDB URI ({exc}); pass one like "
                        f"mongodb://HOST:27017/DATABASE") from None
    try:
        client.admin.command("ping")
    except pymongo.errors.PyMongoError as exc:
        hosts = ", ".join(f"{host}:{port}" for host, port in client.topology_description.server_descriptions())
        raise UserError(f"cannot reach MongoDB at {hosts} ({type(exc).__name__}); check --mongo-uri or "
                        f"MONGODB_URI and that the server is running") from None
    return client.get_default_database("livetrain")


class Store:
    """One epic's view of the database, with the write buffer of the streamer's hot path."""

    def __init__(self, db: pymongo.database.Database, epic: str):
        self.db, self.epic = db, epic
        self.ticks, self.open_trades_ = db["ticks"], db["open_trades"]
        self.trades, self.batches, self.checkpoints = db["trades"], db["batches"], db["checkpoints"]
        self.ticks.create_index([("epic", 1), ("ts", 1)])
        self.open_trades_.create_index([("epic", 1), ("expires_ts", 1)])
        self.trades.create_index([("epic", 1), ("close_ts", 1)])
        self.batches.create_index([("epic", 1), ("seq", 1)], unique=True)
        self._ticks: list[dict] = []
        self._opened: list[dict] = []
        self._closed: list[dict] = []
        self._first_buffered = 0.0
        self._checkpoint = self.checkpoint()
        self.stored_close_seq = self._checkpoint.get("next_close_seq", 0) - 1  # closed trades ≤ this: committed
        self.stored_ticks = 0  # this run
        self._next_claim_check_ts = 0  # stored checkpoint ts before which no new batch can be complete

    # ------------------------------------------------------------ resuming

    def checkpoint(self) -> dict:
        """The epic's checkpoint document (see the module's docstring), or {} before the first flush."""
        return self.checkpoints.find_one({"_id": self.epic}) or {}

    def discard_uncommitted(self) -> int:
        """Delete the writes of a flush whose checkpoint never landed (the writer calls this once, first);
        returns how many documents were deleted."""
        after = self._checkpoint.get("ts", -1)
        deleted = [self.ticks.delete_many({"epic": self.epic, "ts": {"$gt": after}}),
                   self.open_trades_.delete_many({"epic": self.epic, "expires_ts": {"$gt": after},
                                                  "open_ts": {"$gt": after}}),
                   self.trades.delete_many({"epic": self.epic, "close_ts": {"$gt": after}})]
        return sum(result.deleted_count for result in deleted)

    def last_tick(self) -> Tick | None:
        """The last stored tick (the checkpoint's, once uncommitted writes are discarded)."""
        buckets = self.ticks.find({"epic": self.epic,
                                   "ts": {"$gte": self._checkpoint.get("ts", 0) - BUCKET_MAX_SPAN_MS}})
        bucket = max(buckets, key=lambda d: d["ts"], default=None)
        return None if bucket is None else Tick(*(values.tolist()[-1] for values in columns([bucket]).values()))

    def first_tick_ts(self) -> int | None:
        if "first_ts" in self._checkpoint:
            return self._checkpoint["first_ts"]
        doc = self.ticks.find_one({"epic": self.epic}, {"ts": 1}, sort=[("ts", 1)])  # at most one flush stored
        return None if doc is None else doc["ts"]

    def open_trades(self) -> list[Trade]:
        """The open book as of the checkpoint: trades expiring after it that are not closed."""
        after = self._checkpoint.get("ts", -1)
        candidates = [Trade(**{f: doc[f] for f in _TRADE_FIELDS})
                      for doc in self.open_trades_.find({"epic": self.epic, "expires_ts": {"$gt": after}})]
        if not candidates:
            return []
        since = min(trade.open_ts for trade in candidates)
        closed = {doc["trade_id"] for doc in self.trades.find({"epic": self.epic, "close_ts": {"$gte": since}},
                                                              {"trade_id": 1})}
        return [trade for trade in candidates if trade.trade_id not in closed]

    # ------------------------------------------------------------ buffered writes (the hot path)

    def add_tick(self, tick: Tick) -> None:
        if not self._ticks:
            self._first_buffered = time.monotonic()
        self._ticks.append(tick)
        self._checkpoint["ts"] = tick.ts
        self._checkpoint.setdefault("first_ts", tick.ts)

    def add_opened(self, trade: Trade) -> None:
        self._opened.append({"_id": trade.trade_id, **asdict(trade)})
        self._checkpoint["last_open_ts"] = trade.open_ts

    def add_closed(self, row: dict, close_seq: int) -> None:
        self._closed.append({"_id": key(self.epic, close_seq), **row, "close_seq": close_seq})
        self._checkpoint["next_close_seq"] = close_seq + 1

    def flush_due(self) -> bool:
        return bool(self._ticks) and (len(self._ticks) >= FLUSH_MAX_TICKS
                                      or time.monotonic() - self._first_buffered >= FLUSH_EVERY_S)

    def flush(self) -> None:
        """Write the buffer: ticks, opened trades, closed trades (in close order), then the checkpoint."""
        if not self._ticks:
            return
        try:
            self.ticks.insert_many(self._buckets(self._ticks), ordered=False)
        except BulkWriteError as exc:  # a bucket written before (a retried flush) is a no-op
            if any(error["code"] != DUPLICATE_KEY for error in exc.details["writeErrors"]):
                raise
        if self._opened:
            self.open_trades_.insert_many(self._opened, ordered=True)
        if self._closed:
            self.trades.insert_many(self._closed, ordered=True)
            self.stored_close_seq = self._closed[-1]["close_seq"]
        self.checkpoints.replace_one({"_id": self.epic}, self._checkpoint, upsert=True)
        self.stored_ticks += len(self._ticks)
        self._ticks, self._opened, self._closed = [], [], []

    def _buckets(self, ticks: list[Tick]) -> list[dict]:
        """Consecutive ticks as bucket documents, each spanning at most BUCKET_MAX_SPAN_MS."""
        buckets, start = [], 0
        for end in range(1, len(ticks) + 1):
            if end == len(ticks) or ticks[end].ts - ticks[start].ts > BUCKET_MAX_SPAN_MS:
                part = ticks[start:end]
                buckets.append({"_id": key(self.epic, part[0].ts), "epic": self.epic, "ts": part[0].ts,
                                "last_ts": part[-1].ts, "n": len(part),
                                "data": {field: self._column(part, field) for field in TICK_FIELDS}})
                start = end
        return buckets

    @staticmethod
    def _column(ticks: list[Tick], field: str) -> Binary | list:
        values = [getattr(tick, field) for tick in ticks]
        return Binary(np.asarray(values, BINARY_COLUMNS[field]).tobytes()) if field in BINARY_COLUMNS else values

    # ------------------------------------------------------------ batches (used by the exporter)

    def last_batch(self) -> dict | None:
        return self.batches.find_one({"epic": self.epic}, sort=[("seq", -1)])

    def committed_batches(self) -> int:
        return self.batches.count_documents({"epic": self.epic, "state": COMMITTED})

    def unfinished_batches(self) -> list[dict]:
        return list(self.batches.find({"epic": self.epic, "state": {"$ne": COMMITTED}}).sort("seq", 1))

    def batch_answering(self, request: str) -> dict | None:
        """The batch claimed for an export request, if any."""
        return self.batches.find_one({"epic": self.epic, "request": request})

    def claim_batch(self, size: int, bot_settings: dict, request: str | None = None) -> dict | None:
        """Claim the next `size` closed trades BY OPEN TIME for a new batch; None until they are all closed.
        With an export `request` (an alarm asked for a batch now), the batch is the trades that can be claimed now,
        at most `size` and at least one, and it records the request.

        A batch is the first `size` trades, in (open_ts, trade_id) order, after the previous batch's last one.
        Cutting by close order instead would favour trades that resolved quickly near each batch's end: a label
        bias that a time-ordered test slice mistakes for skill. Every trade opened at or before
        (stored checkpoint − max lifetime) has closed, so the claim waits for that cutoff to pass the batch.
        The batch id is `<UTC time of its first open, yyyymmddThhmmssZ>-<batch number>`: ids sort in export
        order and the same claim always gets the same id.
        """
        last = self.last_batch()
        after = (-1, "") if last is None else (last["last_open_ts"], last["last_trade_id"])
        batched = 0 if last is None else last["trades_before"] + last["trades"]
        needed = 1 if request else size
        if self.stored_close_seq + 1 - batched < needed:  # every batched trade is closed: a cheap lower bound
            return None
        checkpoint_ts = self.checkpoint().get("ts")
        if checkpoint_ts is None or (checkpoint_ts < self._next_claim_check_ts and not request):
            return None
        cutoff = checkpoint_ts - round(bot_settings["max_lifetime_s"] * 1000)
        rows = [row for row in self.trades.find({"epic": self.epic, "close_ts": {"$gte": after[0]},
                                                 "open_ts": {"$gte": after[0], "$lte": cutoff}},
                                                {"_id": 0, "trade_id": 1, "open_ts": 1, "close_ts": 1})
                if (row["open_ts"], row["trade_id"]) > after]
        if len(rows) < needed:  # the missing trades open at least open_every_s apart: no use asking sooner
            openings = -(-(size - len(rows)) // len(bot_settings["directions"]))
            self._next_claim_check_ts = checkpoint_ts + round(openings * bot_settings["open_every_s"] * 1000)
            return None
        rows = sorted(rows, key=lambda row: (row["open_ts"], row["trade_id"]))[:size]
        seq = 1 if last is None else last["seq"] + 1
        first_open = datetime.fromtimestamp(rows[0]["open_ts"] / 1000, UTC)
        batch = {
            "_id": key(self.epic, seq), "batch_id": f"{first_open:%Y%m%dT%H%M%SZ}-{seq:05d}", "epic": self.epic,
            "seq": seq,
            "after_open_ts": after[0], "after_trade_id": after[1],
            "first_open_ts": rows[0]["open_ts"], "last_open_ts": rows[-1]["open_ts"],
            "last_trade_id": rows[-1]["trade_id"], "trades": len(rows), "trades_before": batched,
            "first_close_ts": min(r["close_ts"] for r in rows), "last_close_ts": max(r["close_ts"] for r in rows),
            "bot": bot_settings, "state": "claimed", "claimed_at": datetime.now(UTC),
            **({"request": request} if request else {}),
        }  # fmt: skip
        self.batches.insert_one(batch)
        return batch

    def batch_trades(self, batch: dict) -> pd.DataFrame:
        """The batch's closed trades: (open_ts, trade_id) after its cursor, up to its last trade."""
        docs = self.trades.find({"epic": self.epic,
                                 "close_ts": {"$gte": batch["first_close_ts"], "$lte": batch["last_close_ts"]},
                                 "open_ts": {"$gte": batch["first_open_ts"], "$lte": batch["last_open_ts"]}},
                                {"_id": 0, **dict.fromkeys(TRADE_COLUMNS, 1)})
        after, last = (batch["after_open_ts"], batch["after_trade_id"]), (batch["last_open_ts"], batch["last_trade_id"])
        rows = [doc for doc in docs if after < (doc["open_ts"], doc["trade_id"]) <= last]
        return pd.DataFrame(rows, columns=list(TRADE_COLUMNS))

    def batch_prices(self, batch: dict) -> pd.DataFrame:
        """Ticks from the last one at or before (first open − LOOKBACK_SECONDS) to the last close."""
        start_ts = self._last_tick_ts_at_or_before(batch["first_open_ts"] - LOOKBACK_SECONDS * 1000) or 0
        end_ts = batch["last_close_ts"]
        buckets = list(self.ticks.find({"epic": self.epic, "last_ts": {"$gte": start_ts},
                                        "ts": {"$gte": start_ts - BUCKET_MAX_SPAN_MS, "$lte": end_ts}},
                                       {"data": 1}).sort("ts", 1))
        prices = pd.DataFrame(columns(buckets))
        prices = prices[(prices["ts"] >= start_ts) & (prices["ts"] <= end_ts)]
        return prices.assign(epic=self.epic)[list(PRICE_COLUMNS)].reset_index(drop=True)

    def _last_tick_ts_at_or_before(self, ts: int) -> int | None:
        """Searched in windows reaching back 1 h, 10 h, 100 h … (each query stays small). Buckets do not overlap:
        the last bucket that starts at or before `ts` holds the answer."""
        first, span = self.first_tick_ts(), BUCKET_MAX_SPAN_MS
        while first is not None and ts >= first:
            bucket = self.ticks.find_one({"epic": self.epic, "ts": {"$gt": ts - span, "$lte": ts}},
                                         {"data.ts": 1}, sort=[("ts", -1)])
            if bucket is not None:
                times = columns([bucket], ["ts"])["ts"]
                return int(times[times <= ts].max())
            span *= 10
        return None

    def set_batch(self, batch: dict, **values) -> None:
        self.batches.update_one({"_id": batch["_id"]}, {"$set": values})
