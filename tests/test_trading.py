"""Paper-trading rules on hand-made tick paths (the seed judged buys on the wrong side of the spread)."""

import pytest

from streamer.trading import BotSettings, PaperTrader, Trade, TradeBook

EPIC = "TEST.EPIC"


def trader(**settings) -> PaperTrader:
    return PaperTrader(EPIC, BotSettings(**{"open_every_s": 0, **settings}))


def run(paper: PaperTrader, ticks, open_on_first_only=True):
    """Feed (ts, bid, offer) ticks; the bot may open only on the first tick. Returns all closed rows."""
    closed = []
    for i, (ts, bid, offer) in enumerate(ticks):
        closed += paper.on_tick(ts, bid, offer, may_open=not open_on_first_only or i == 0)[1]
    return closed


def test_buy_opens_at_offer_and_takes_profit_on_the_bid():
    paper = trader(stop_distance=50, limit_distance=20)
    # opens at offer 110; the offer reaching 130 is not enough, the BID must reach 130
    closed = run(paper, [(0, 100, 110), (1000, 115, 130), (2000, 130, 140)])
    assert len(closed) == 1
    row = closed[0]
    assert (row["direction"], row["open_price"], row["close_price"]) == ("BUY", 110, 130)
    assert (row["close_reason"], row["pnl"], row["label"], row["close_ts"]) == ("TAKE_PROFIT", 20, 1, 2000)


def test_buy_stop_loss_counts_the_spread():
    # spread 10 with a stop of 8: the first tick after opening at an unchanged price stops the buy out
    paper = trader(stop_distance=8, limit_distance=50)
    closed = run(paper, [(0, 100, 110), (1000, 100, 110)])
    assert [(r["close_reason"], r["close_price"], r["pnl"], r["label"]) for r in closed] == [
        ("STOP_LOSS", 100, -10, 0)]


def test_a_trade_is_not_judged_on_the_tick_that_opened_it():
    paper = trader(stop_distance=8, limit_distance=50)
    opened, closed = paper.on_tick(0, 100, 110)
    assert len(opened) == 1 and closed == []


def test_sell_opens_at_bid_and_is_judged_on_the_offer():
    paper = trader(directions=("SELL",), stop_distance=50, limit_distance=20)
    # opens at bid 100; take-profit at 80 needs the OFFER at or below 80
    closed = run(paper, [(0, 100, 110), (1000, 79, 85), (2000, 70, 80)])
    assert [(r["direction"], r["open_price"], r["close_price"], r["close_reason"], r["pnl"]) for r in closed] == [
        ("SELL", 100, 80, "TAKE_PROFIT", 20)]


def test_sell_stop_loss_on_the_offer():
    paper = trader(directions=("SELL",), stop_distance=30, limit_distance=50)
    closed = run(paper, [(0, 100, 110), (1000, 115, 125), (2000, 120, 131)])
    assert [(r["close_reason"], r["close_price"], r["pnl"], r["label"]) for r in closed] == [
        ("STOP_LOSS", 131, -31, 0)]


def test_a_gap_fills_at_the_market_beyond_the_level():
    paper = trader(stop_distance=50, limit_distance=20)
    closed = run(paper, [(0, 100, 110), (1000, 150, 160)])
    assert (closed[0]["close_reason"], closed[0]["close_price"], closed[0]["pnl"]) == ("TAKE_PROFIT", 150, 40)


def test_expiry_closes_at_the_market_on_the_first_tick_at_or_after_it():
    paper = trader(stop_distance=50, limit_distance=50, max_lifetime_s=10)
    closed = run(paper, [(0, 100, 110), (9_999, 105, 115), (12_000, 111, 121)])
    assert [(r["close_reason"], r["close_ts"], r["close_price"], r["pnl"], r["label"]) for r in closed] == [
        ("EXPIRED", 12_000, 111, 1, 1)]


def test_expired_at_a_loss_is_labelled_zero():
    paper = trader(directions=("SELL",), stop_distance=50, limit_distance=50, max_lifetime_s=1)
    closed = run(paper, [(0, 100, 110), (1000, 101, 111)])
    assert [(r["close_reason"], r["pnl"], r["label"]) for r in closed] == [("EXPIRED", -11, 0)]


def test_zero_pnl_is_not_a_win():
    paper = trader(stop_distance=50, limit_distance=50, max_lifetime_s=1)
    closed = run(paper, [(0, 100, 110), (1000, 110, 120)])
    assert (closed[0]["pnl"], closed[0]["label"]) == (0, 0)


def test_open_every_k_seconds_and_both_directions():
    paper = trader(directions=("BUY", "SELL"), open_every_s=2)
    opened = [len(paper.on_tick(ts, 100, 110)[0]) for ts in (0, 1000, 1999, 2000, 3000, 4500)]
    assert opened == [2, 0, 0, 2, 0, 2]


def test_many_trades_close_by_their_own_levels():
    paper = trader(stop_distance=30, limit_distance=30, max_lifetime_s=1000)
    ticks = [(i * 1000, 100 + i, 110 + i) for i in range(60)] + [(60_000, 200, 210), (61_000, 10, 20)]
    closed = run(paper, ticks, open_on_first_only=False)
    assert len(closed) == 61  # every trade opened before the last tick closed exactly once
    assert len({r["trade_id"] for r in closed}) == 61
    for r in closed:
        expected = "TAKE_PROFIT" if r["close_price"] - r["open_price"] >= 30 else "STOP_LOSS"
        assert r["close_reason"] == expected


def test_stale_levels_are_compacted_without_losing_open_trades():
    book = TradeBook()
    for i in range(10_000):  # trades closed by take-profit leave stale stop-loss entries behind
        book.add(Trade(f"t{i}", EPIC, "BUY", i, 100.0, 50.0, 1.0, 10**9))
        book.on_tick(i + 1, 101.0, 102.0)
    survivor = Trade("survivor", EPIC, "BUY", 0, 100.0, 50.0, 10.0, 10**9)
    book.add(survivor)
    book.on_tick(20_000, 101.0, 102.0)
    assert set(book.open) == {"survivor"}
    assert sum(len(levels) for levels in book._queues.values()) < 4096 + 8  # 10,000 stale without compaction
    assert [r["trade_id"] for r in book.on_tick(20_001, 110.0, 111.0)] == ["survivor"]


def test_book_resumes_from_stored_open_trades():
    trade = Trade("t1", EPIC, "BUY", 0, 110.0, 50.0, 20.0, 60_000)
    book = TradeBook(open={"t1": trade})
    assert [r["close_reason"] for r in book.on_tick(1000, 130.0, 140.0)] == ["TAKE_PROFIT"]


@pytest.mark.parametrize("bad", [dict(stop_distance=0), dict(limit_distance=-1), dict(max_lifetime_s=0),
                                 dict(directions=()), dict(directions=("HOLD",)), dict(open_every_s=-1)])
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValueError):
        BotSettings(**bad)
