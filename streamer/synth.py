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
    """Simulate until `trades` paper trades have closed; returns (prices, trades) for a batch.

    Trades open only once LOOKBACK_SECONDS of ticks exist, so every trade has
    its full look-back; the prices run from the first tick to the last close.
    """
    simulator = MarketSimulator(market, seed, epic)
    trader = PaperTrader(epic, bot)
    chunks, closed = [], []
    first_open_ts = None
    last_report = time.monotonic()
    while len(closed) < trades:
        chunk = simulator.ticks(chunk_ticks)
        chunks.append(chunk)
        if first_open_ts is None:
            first_open_ts = int(chunk["ts"].iat[0]) + LOOKBACK_SECONDS * 1000
        for ts, bid, offer in zip(chunk["ts"].tolist(), chunk["bid"].tolist(), chunk["offer"].tolist(),
                                  strict=True):
            closed.extend(trader.on_tick(ts, bid, offer, may_open=ts >= first_open_ts)[1])
            if len(closed) >= trades:
                break
        if progress and time.monotonic() - last_report > 2:
            print(f"  simulated {sum(map(len, chunks)):,} ticks, {min(len(closed), trades):,}/{trades:,} "
                  f"trades closed", file=progress, flush=True)
            last_report = time.monotonic()
    trade_frame = pd.DataFrame(closed[:trades], columns=list(TRADE_COLUMNS))
    prices = pd.concat(chunks, ignore_index=True)
    prices = prices[prices["ts"] <= trade_frame["close_ts"].max()].reset_index(drop=True)
    return prices, trade_frame
