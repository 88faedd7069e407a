"""The streamer's MongoDB store: ticks, trades and batches. Nothing is ever wiped; a restart resumes.

Collections (one database may hold several epics). Documents are keyed `<epic>/<number, 13 digits>…` (see `key`),
so that the queries are ranges on `_id`, served by the index every collection has: a secondary index makes
inserts about three times slower on the local MongoDB-wire server.
- `ticks`: one document per tick, `_id` = epic/ts: a re-delivered tick is a no-op.
- `open_trades`: every paper trade as it was opened (insert-only), `_id` = epic/expires_ts/trade_id.
- `trades`: every closed trade, as a row of the batch contract plus `close_seq`, its 0-based position in the
  epic's close order; `_id` = epic/close_seq. Batches are ranges of `close_seq`.
- `checkpoints`: per epic, `ts` = the last tick whose trade openings and closings are all stored, and the bot's
  `last_open_ts`.
- `batches`: one document per batch: its `close_seq` range and export state (see `streamer.exporter`).

The hot path only inserts (updates are also several times slower there than inserts): writes are
buffered and flushed in bulk, in the order ticks → opened trades → closed trades → checkpoint. A crash loses
at most the unflushed writes and leaves a consistent store, because
- every trade refers to a stored tick (ticks are flushed first);
- closed trades are inserted in `close_seq` order, so the stored ones are a prefix of the close order;
- the open book is rebuilt as the trades that expire after the checkpoint and are not closed: a trade open at
  the checkpoint expires after it (else it would have closed by then), whatever happened after it.
Query shapes avoid `$or` and long `$in` lists.
"""

from __future__ import annotations

import time
from dataclasses import asdict, fields
from datetime import UTC, datetime

import pandas as pd
import pymongo
from pymongo.errors import BulkWriteError

from processing.batch_contract import LOOKBACK_SECONDS, PRICE_COLUMNS, TRADE_COLUMNS
from streamer.sources import TICK_FIELDS, Tick
from streamer.trading import Trade

DUPLICATE_KEY = 11000
FLUSH_EVERY_S = 0.25
FLUSH_MAX_TICKS = 2000
_TRADE_FIELDS = tuple(f.name for f in fields(Trade))
COMMITTED = "committed"


def key(epic: str, number: int, suffix: str = "") -> str:
    """A document id that sorts by `number` within the epic: `<epic>/<13-digit number>[/<suffix>]`.

    13 digits hold millisecond timestamps until the year 2286.
    """
    return f"{epic}/{number:013d}" + (f"/{suffix}" if suffix else "")


def connect(uri: str) -> pymongo.database.Database:
    """The database named in the URI (default `livetrain`), after a ping; UserError when unreachable."""
    from livetrain import UserError

    try:
        options = {} if "serverSelectionTimeoutMS" in uri else {"serverSelectionTimeoutMS": 10_000}
        client = pymongo.MongoClient(uri, tz_aware=True, **options)
        client.admin.command("ping")
    except pymongo.errors.PyMongoError as exc:
        hosts = ", ".join(f"{h}:{p}" for h, p in pymongo.uri_parser.parse_uri(uri)["nodelist"]) \
            if uri.startswith("mongodb") else "?"
        raise UserError(f"cannot reach MongoDB at {hosts} ({type(exc).__name__}); check --mongo-uri or "
                        f"MONGODB_URI and that the server is running") from None
    return client.get_default_database("livetrain")


class Store:
    """One epic's view of the database, with the write buffer of the streamer's hot path."""

    def __init__(self, db: pymongo.database.Database, epic: str):
        self.db, self.epic = db, epic
        self.ticks, self.open_trades_ = db["ticks"], db["open_trades"]
        self.trades, self.batches, self.checkpoints = db["trades"], db["batches"], db["checkpoints"]
        self.batches.create_index([("epic", 1), ("seq", 1)], unique=True)
        self._ticks: list[dict] = []
        self._opened: list[dict] = []
        self._closed: list[dict] = []
        self._checkpoint = self.checkpoint()
        self._first_buffered = 0.0
        last = self.trades.find_one(self._ids(), {"close_seq": 1}, sort=[("_id", -1)])
        self.stored_close_seq = -1 if last is None else last["close_seq"]  # closed trades ≤ this are stored
        self.stored_ticks = 0  # this run

    def _ids(self, low: int = 0, high: int | None = None) -> dict:
        """The filter for this epic's documents whose key number is in [low, high] (no upper limit: None)."""
        upper = f"{self.epic}/~" if high is None else key(self.epic, high + 1)  # "~" sorts after the digits
        return {"_id": {"$gte": key(self.epic, max(low, 0)), "$lt": upper}}

    # ------------------------------------------------------------ resuming

    def last_tick(self) -> Tick | None:
        doc = self.ticks.find_one(self._ids(), sort=[("_id", -1)])
        return None if doc is None else Tick(**{field: doc[field] for field in TICK_FIELDS})

    def first_tick_ts(self) -> int | None:
        doc = self.ticks.find_one(self._ids(), {"ts": 1}, sort=[("_id", 1)])
        return None if doc is None else doc["ts"]

    def checkpoint(self) -> dict:
        """{"ts": last tick with all its trade effects stored, "last_open_ts": the bot's last opening} or {}."""
        return self.checkpoints.find_one({"_id": self.epic}) or {}

    def open_trades(self) -> list[Trade]:
        """The open book as of the checkpoint: trades expiring after it that are not closed."""
        after = self.checkpoint().get("ts", -1)
        candidates = [Trade(**{f: doc[f] for f in _TRADE_FIELDS})
                      for doc in self.open_trades_.find(self._ids(low=after + 1))]
        if not candidates:
            return []
        since, closed = min(trade.open_ts for trade in candidates), set()
        for doc in self.trades.find(self._ids(), {"trade_id": 1, "close_ts": 1}).sort("_id", -1):
            if doc["close_ts"] < since:  # closed trades are keyed in close order: the rest closed earlier
                break
            closed.add(doc["trade_id"])
        return [trade for trade in candidates if trade.trade_id not in closed]

    # ------------------------------------------------------------ buffered writes (the hot path)

    def add_tick(self, tick: Tick) -> None:
        if not self._ticks:
            self._first_buffered = time.monotonic()
        self._ticks.append({"_id": key(self.epic, tick.ts), "epic": self.epic, **tick._asdict()})
        self._checkpoint["ts"] = tick.ts

    def add_opened(self, trade: Trade) -> None:
        self._opened.append({"_id": key(self.epic, trade.expires_ts, trade.trade_id), **asdict(trade)})
        self._checkpoint["last_open_ts"] = trade.open_ts

    def add_closed(self, row: dict, close_seq: int) -> None:
        self._closed.append({"_id": key(self.epic, close_seq), **row, "close_seq": close_seq})

    def flush_due(self) -> bool:
        return bool(self._ticks) and (len(self._ticks) >= FLUSH_MAX_TICKS
                                      or time.monotonic() - self._first_buffered >= FLUSH_EVERY_S)

    def flush(self) -> None:
        """Write the buffer: ticks, opened trades, closed trades (in close order), then the checkpoint."""
        if not self._ticks:
            return
        try:
            self.ticks.insert_many(self._ticks, ordered=False)
        except BulkWriteError as exc:  # a re-delivered tick is a no-op
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

    # ------------------------------------------------------------ batches (used by the exporter)

    def last_batch(self) -> dict | None:
        return self.batches.find_one({"epic": self.epic}, sort=[("seq", -1)])

    def unfinished_batches(self) -> list[dict]:
        return list(self.batches.find({"epic": self.epic, "state": {"$ne": COMMITTED}}).sort("seq", 1))

    def claim_batch(self, size: int, bot_settings: dict) -> dict | None:
        """Claim the next `size` stored closed trades (by close_seq) for a new batch; None if fewer wait.

        The batch id is `<UTC time of its first close, yyyymmddThhmmssZ>-<batch number>`, so ids sort in export
        order and the same claim always gets the same id.
        """
        last = self.last_batch()
        after, seq = (-1, 1) if last is None else (last["seq_to"], last["seq"] + 1)
        if self.stored_close_seq - after < size:
            return None
        rows = list(self.trades.find(self._ids(low=after + 1), {"_id": 0, "close_seq": 1, "open_ts": 1, "close_ts": 1})
                    .sort("_id", 1).limit(size))
        if len(rows) < size:
            return None
        first_close = datetime.fromtimestamp(rows[0]["close_ts"] / 1000, UTC)
        batch = {
            "_id": f"{first_close:%Y%m%dT%H%M%SZ}-{seq:05d}", "epic": self.epic, "seq": seq,
            "seq_from": rows[0]["close_seq"], "seq_to": rows[-1]["close_seq"], "trades": len(rows),
            "first_open_ts": min(r["open_ts"] for r in rows), "last_close_ts": max(r["close_ts"] for r in rows),
            "bot": bot_settings, "state": "claimed", "claimed_at": datetime.now(UTC),
        }  # fmt: skip
        self.batches.insert_one(batch)
        return batch

    def batch_trades(self, batch: dict) -> pd.DataFrame:
        docs = self.trades.find(self._ids(batch["seq_from"], batch["seq_to"]),
                                {"_id": 0, **dict.fromkeys(TRADE_COLUMNS, 1)})
        return pd.DataFrame(list(docs), columns=list(TRADE_COLUMNS))

    def batch_prices(self, batch: dict) -> pd.DataFrame:
        """Ticks from the last one at or before (first open − LOOKBACK_SECONDS) to the last close."""
        lookback_start = batch["first_open_ts"] - LOOKBACK_SECONDS * 1000
        start = self.ticks.find_one(self._ids(high=lookback_start), {"ts": 1}, sort=[("_id", -1)])
        start_ts = start["ts"] if start else self.first_tick_ts()
        docs = self.ticks.find(self._ids(start_ts, batch["last_close_ts"]),
                               {"_id": 0, **dict.fromkeys(PRICE_COLUMNS, 1)}).sort("_id", 1)
        return pd.DataFrame(list(docs), columns=list(PRICE_COLUMNS))

    def set_batch(self, batch_id: str, **values) -> None:
        self.batches.update_one({"_id": batch_id}, {"$set": values})
