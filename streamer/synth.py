"""Synthetic batches: the simulator and the paper trader, with no MongoDB or S3 in between."""

from __future__ import annotations

import sys
import time

import pandas as pd

from processing.batch_contract import LOOKBACK_SECONDS, TRADE_COLUMNS
from streamer.market import MarketSettings, MarketSimulator
from streamer.trading import BotSettings, PaperTrader


def synthesize(trades: int, seed: int, market: MarketSettings, bot: BotSettings, epic: str,
               chunk_ticks: int = 50_000, progress=sys.stderr) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Simulate until the first `trades` paper trades have opened and all of them have closed.

    A batch is the first N trades by OPEN time, all closed: taking the first N
    to close instead would favour trades that resolved quickly near the batch's
    end, a label bias that a time-ordered test slice would mistake for skill.
    Trades open only once LOOKBACK_SECONDS of ticks exist, so every trade has
    its full look-back; the prices run from the first tick to the last close.
    """
    simulator = MarketSimulator(market, seed, epic)
    trader = PaperTrader(epic, bot)
    chunks, closed = [], []
    opened = 0
    first_open_ts = None
    last_report = time.monotonic()
    while opened < trades or trader.book.open:
        chunk = simulator.ticks(chunk_ticks)
        chunks.append(chunk)
        if first_open_ts is None:
            first_open_ts = int(chunk["ts"].iat[0]) + LOOKBACK_SECONDS * 1000
        for ts, bid, offer in zip(chunk["ts"].tolist(), chunk["bid"].tolist(), chunk["offer"].tolist(),
                                  strict=True):
            new, done = trader.on_tick(ts, bid, offer, may_open=opened < trades and ts >= first_open_ts)
            opened += len(new)
            closed.extend(done)
            if opened >= trades and not trader.book.open:
                break
        if progress and time.monotonic() - last_report > 2:
            print(f"  simulated {sum(map(len, chunks)):,} ticks, {len(closed):,}/{trades:,} trades closed",
                  file=progress, flush=True)
            last_report = time.monotonic()
    trade_frame = pd.DataFrame(closed, columns=list(TRADE_COLUMNS))
    trade_frame = trade_frame.sort_values(["open_ts", "trade_id"], kind="stable").head(trades)
    prices = pd.concat(chunks, ignore_index=True)
    prices = prices[prices["ts"] <= trade_frame["close_ts"].max()].reset_index(drop=True)
    return prices, trade_frame.reset_index(drop=True)
