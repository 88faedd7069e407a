"""The MongoDB store and the bot over the wire: re-delivery, resume after a restart or a crash, batch claims."""

from __future__ import annotations

import re

import pytest
from streamer_helpers import tick_times

from streamer.bot import Bot
from streamer.market import MarketSettings, MarketSimulator
from streamer.run import Sequencer
from streamer.sources import frame_ticks
from streamer.store import Store
from streamer.trading import BotSettings

EPIC = "CS.D.BITCOIN.CFD.IP"
SETTINGS = BotSettings(directions=("BUY", "SELL"), stop_distance=20, limit_distance=20, max_lifetime_s=300,
                       open_every_s=0)
WARMUP_S = 60


@pytest.fixture(scope="module")
def ticks():
    return list(frame_ticks(MarketSimulator(MarketSettings(), 7, EPIC).ticks(2000)))


@pytest.fixture(scope="module")
def uninterrupted(mongo_uri, ticks):
    """The run every restart and crash is compared with: all ticks, one process. (closed trades, open trade ids)"""
    import pymongo

    client = pymongo.MongoClient(mongo_uri)
    db = client["t_streamer_store_uninterrupted"]
    client.drop_database(db.name)
    whole = stream(db, ticks)
    whole.store.flush()
    yield closed_trades(db), set(whole.trader.book.open)
    client.drop_database(db.name)
    client.close()


def stream(db, ticks, bot=None) -> Bot:
    """Feed ticks as the main loop does (recorded source: ticks already stored are dropped)."""
    store = Store(db, EPIC)
    if bot is None:  # a new writer, as after a restart
        store.discard_uncommitted()
        bot = Bot(store, SETTINGS, WARMUP_S)
    last = store.last_tick()
    sequencer = Sequencer(live=False, last_ts=None if last is None else last.ts)
    for tick in ticks:
        if (tick := sequencer(tick)) is not None:
            bot.on_tick(tick)
            if store.flush_due():
                store.flush()
    return bot


def closed_trades(db) -> list[tuple]:
    return [(d["trade_id"], d["close_ts"], d["close_price"], d["close_reason"], d["close_seq"])
            for d in db.trades.find().sort("close_seq", 1)]


def test_a_restart_continues_exactly_where_the_run_stopped(mongo_db, ticks, uninterrupted):
    whole, still_open = uninterrupted
    first = stream(mongo_db, ticks[:1200])
    first.store.flush()
    resumed = stream(mongo_db, ticks)  # a new Store and Bot: as after a restart
    resumed.store.flush()
    assert resumed.open_trades == len(first.trader.book.open) - resumed.closed + resumed.opened
    assert closed_trades(mongo_db) == whole
    assert len(whole) > 1000
    assert set(resumed.trader.book.open) == still_open


@pytest.mark.parametrize("dies_in", ["open_trades_", "trades", "checkpoints"])
def test_a_crash_in_any_part_of_a_flush_resumes_exactly_at_the_checkpoint(mongo_db, ticks, uninterrupted, monkeypatch,
                                                                          dies_in):
    whole, _ = uninterrupted
    bot = stream(mongo_db, ticks[:1000])
    bot.store.flush()
    for tick in ticks[1000:1100]:  # buffered, then the process "dies" part way through the flush
        bot.on_tick(tick)
    assert bot.store._opened and bot.store._closed, "the lost flush should hold openings and closings"
    collection = getattr(bot.store, dies_in)
    monkeypatch.setattr(collection, "replace_one" if dies_in == "checkpoints" else "insert_many", _die)
    with pytest.raises(SystemExit):
        bot.store.flush()
    assert len(tick_times(mongo_db)) == 1100  # the cut-short flush's ticks were written
    monkeypatch.undo()
    resumed = stream(mongo_db, ticks)
    resumed.store.flush()
    assert closed_trades(mongo_db) == whole  # the same trades, closed at the same ticks, as without the crash
    assert set(resumed.trader.book.open) | {row[0] for row in whole} == \
        {d["trade_id"] for d in mongo_db.open_trades.find()}
    stored = set(tick_times(mongo_db))
    assert len(stored) == len(ticks)
    assert all(d["open_ts"] in stored and d["close_ts"] in stored for d in mongo_db.trades.find())


def _die(*args, **kwargs):
    raise SystemExit("killed")


def test_a_redelivered_tick_is_a_no_op(mongo_db, ticks):
    store = Store(mongo_db, EPIC)
    for _ in range(2):
        store.add_tick(ticks[0])
        store.add_tick(ticks[1])
        store.flush()
    assert len(tick_times(mongo_db)) == 2


def test_nothing_is_wiped_at_start(mongo_db, ticks):
    stream(mongo_db, ticks[:700]).store.flush()
    counts = {name: mongo_db[name].count_documents({}) for name in ("ticks", "open_trades", "trades")}
    Bot(Store(mongo_db, EPIC), SETTINGS, WARMUP_S)
    assert {name: mongo_db[name].count_documents({}) for name in counts} == counts
    assert len(tick_times(mongo_db)) == 700 and counts["trades"] > 0


def _eligible(db) -> list[tuple[int, str]]:
    """Stored closed trades opened at or before (stored checkpoint − max lifetime), in open order."""
    cutoff = db.checkpoints.find_one({"_id": EPIC})["ts"] - SETTINGS.max_lifetime_s * 1000
    return sorted((d["open_ts"], d["trade_id"]) for d in db.trades.find({"open_ts": {"$lte": cutoff}}))


def test_batches_claim_consecutive_ranges_in_open_order(mongo_db, ticks):
    bot = stream(mongo_db, ticks)
    bot.store.flush()
    store, eligible = Store(mongo_db, EPIC), _eligible(mongo_db)
    size = len(eligible) // 3
    claims = [store.claim_batch(size, SETTINGS.as_dict()) for _ in range(4)]
    assert claims[3] is None  # fewer than `size` left that have surely all closed
    assert [c["seq"] for c in claims[:3]] == [1, 2, 3]
    claimed = [store.batch_trades(c) for c in claims[:3]]
    assert [len(t) for t in claimed] == [size] * 3
    in_order = [(t.open_ts, t.trade_id) for batch in claimed for t in batch.sort_values(["open_ts", "trade_id"])
                .itertuples()]
    assert in_order == eligible[:3 * size]  # consecutive in open order: none skipped, none twice
    assert all(re.fullmatch(r"\d{8}T\d{6}Z-0000\d", c["batch_id"]) for c in claims[:3])
    assert [c["batch_id"] for c in claims[:3]] == sorted(c["batch_id"] for c in claims[:3])
    assert claimed[1]["close_ts"].max() == claims[1]["last_close_ts"]
    prices = store.batch_prices(claims[1])
    assert prices["ts"].iat[0] <= claims[1]["first_open_ts"] - 600_000 < prices["ts"].iat[1]
    assert prices["ts"].iat[-1] == claims[1]["last_close_ts"]


def test_prices_read_across_buckets_are_exactly_the_stored_ticks(mongo_db, ticks, monkeypatch):
    import streamer.store

    monkeypatch.setattr(streamer.store, "BUCKET_MAX_SPAN_MS", 45_000)  # many buckets per flush
    bot = stream(mongo_db, ticks)
    bot.store.flush()
    assert mongo_db.ticks.count_documents({}) > len(tick_times(mongo_db)) // 100
    store = Store(mongo_db, EPIC)
    assert store.last_tick() == ticks[-1]
    size = len(_eligible(mongo_db)) // 3
    _, batch = store.claim_batch(size, SETTINGS.as_dict()), store.claim_batch(size, SETTINGS.as_dict())
    prices = store.batch_prices(batch)  # the second batch: its look-back starts after the first tick
    start = max(t.ts for t in ticks if t.ts <= batch["first_open_ts"] - 600_000)
    expected = [t for t in ticks if start <= t.ts <= batch["last_close_ts"]]
    assert list(prices.drop(columns="epic").itertuples(index=False, name="Tick")) == expected
    assert set(prices["epic"]) == {EPIC}


def test_unflushed_closed_trades_are_never_claimed(mongo_db, ticks):
    bot = stream(mongo_db, ticks[:1500])
    bot.store.flush()
    flushed = len(_eligible(mongo_db))
    for tick in ticks[1500:]:
        bot.on_tick(tick)  # closes more trades, but nothing is flushed
    assert bot.next_close_seq > bot.store.stored_close_seq + 10
    assert bot.store.claim_batch(flushed + 1, SETTINGS.as_dict()) is None
    assert bot.store.claim_batch(flushed, SETTINGS.as_dict())["trades"] == flushed
