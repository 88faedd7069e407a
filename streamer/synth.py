"""Synthetic batches: the simulator and the paper trader, with no MongoDB or S3 in between."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from processing.batch_contract import (
    LOOKBACK_SECONDS,
    SHARD_TRADES,
    TRADE_COLUMNS,
    BatchWriter,
    look_back_row,
    shard_rows,
)
from streamer.market import MarketSettings, MarketSimulator
from streamer.trading import BotSettings, PaperTrader


def synthesize(trades: int, seed: int, market: MarketSettings, bot: BotSettings, epic: str,
               chunk_ticks: int = 50_000, progress=sys.stderr) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Simulate until the first `trades` paper trades have opened and all of them have closed; (prices, trades).

    A batch is the first N trades by OPEN time, all closed: taking the first N
    to close instead would favour trades that resolved quickly near the batch's
    end, a label bias that a time-ordered test slice would mistake for skill.
    Trades open only once LOOKBACK_SECONDS of ticks exist, so every trade has
    its full look-back; the prices run from the first tick to the last close.
    """
    simulation = _Simulation(trades, seed, market, bot, epic, chunk_ticks, progress)
    chunks = list(simulation)
    trade_frame = simulation.trades()
    prices = pd.concat(chunks, ignore_index=True)
    return prices[prices["ts"] <= trade_frame["close_ts"].max()].reset_index(drop=True), trade_frame


def write_synthetic_batch(directory, trades: int, seed: int, market: MarketSettings, bot: BotSettings, epic: str,
                          *, bucket: str, batch_id: str, shard_trades: int = SHARD_TRADES, chunk_ticks: int = 50_000,
                          progress=sys.stderr) -> Path:
    """The batch of `synthesize`'s trades and prices, written shard by shard into the new `directory` as it is
    simulated: the files `render_batch` makes of them, with one shard's ticks in memory (a million trades, some
    30 million ticks, need about as much memory as one hundred thousand)."""
    simulation = _Simulation(trades, seed, market, bot, epic, chunk_ticks, progress)
    writer = BatchWriter(directory, bucket=bucket, epic=epic, batch_id=batch_id)
    window: list[pd.DataFrame] = []  # the ticks from the next shard's file start
    first_tick = None
    try:
        for chunk in simulation:
            first_tick = int(chunk["ts"].iat[0]) if first_tick is None else first_tick
            window.append(chunk)
            while (end := (len(writer.shards) + 1) * shard_trades) < trades and len(simulation.opens) > end:
                window = [_write_shard(writer, pd.concat(window, ignore_index=True), np.array(simulation.opens),
                                       end - shard_trades, end)]
        trade_frame = simulation.trades()
        last_close = int(trade_frame["close_ts"].max())
        prices = pd.concat(window, ignore_index=True)
        prices = prices[prices["ts"] <= last_close].reset_index(drop=True)
        _write_shard(writer, prices, trade_frame["open_ts"].to_numpy(), len(writer.shards) * shard_trades, trades)
        return writer.finish(trade_frame, bot.as_dict(), (first_tick, int(prices["ts"].iat[-1])))
    except BaseException:
        writer.abandon()
        raise


def _write_shard(writer: BatchWriter, prices: pd.DataFrame, open_ts: np.ndarray, first: int,
                 end: int) -> pd.DataFrame:
    """Write the shard of trades first … end − 1 from `prices` (which start at its file's first tick); the ticks
    from the next shard's file start on."""
    ts = prices["ts"].to_numpy()
    file_from, file_to, own_from = shard_rows(ts, open_ts, first, end)
    writer.add_shard(prices.iloc[file_from:file_to], (first, end), ts[own_from] if own_from < len(ts) else None)
    if end >= len(open_ts):
        return prices.iloc[len(prices):]
    return prices.iloc[look_back_row(ts, open_ts[end]):]


class _Simulation:
    """The market's ticks, chunk by chunk, through the paper trader until the first `trades` trades have opened
    and closed; `opens` (open times of the trades opened so far, in order) and `trades()` as it goes."""

    def __init__(self, trades: int, seed: int, market: MarketSettings, bot: BotSettings, epic: str,
                 chunk_ticks: int, progress):
        self.wanted, self.chunk_ticks, self.progress = trades, chunk_ticks, progress
        self.simulator, self.trader = MarketSimulator(market, seed, epic), PaperTrader(epic, bot)
        self.opens: list[int] = []
        self.closed: list[dict] = []
        self.ticks = 0

    def __iter__(self):
        first_open_ts, last_report = None, time.monotonic()
        while len(self.opens) < self.wanted or self.trader.book.open:
            chunk = self.simulator.ticks(self.chunk_ticks)
            if first_open_ts is None:
                first_open_ts = int(chunk["ts"].iat[0]) + LOOKBACK_SECONDS * 1000
            for ts, bid, offer in zip(chunk["ts"].tolist(), chunk["bid"].tolist(), chunk["offer"].tolist(),
                                      strict=True):
                new, done = self.trader.on_tick(ts, bid, offer,
                                                may_open=len(self.opens) < self.wanted and ts >= first_open_ts)
                self.opens += [trade.open_ts for trade in new]
                self.closed.extend(done)
                if len(self.opens) >= self.wanted and not self.trader.book.open:
                    break
            self.ticks += len(chunk)
            if self.progress and time.monotonic() - last_report > 2:
                print(f"  simulated {self.ticks:,} ticks, {len(self.closed):,}/{self.wanted:,} trades closed",
                      file=self.progress, flush=True)
                last_report = time.monotonic()
            yield chunk

    def trades(self) -> pd.DataFrame:
        """The first `trades` trades by open time (all closed once the iteration has ended)."""
        frame = pd.DataFrame(self.closed, columns=list(TRADE_COLUMNS))
        return frame.sort_values(["open_ts", "trade_id"], kind="stable").head(self.wanted).reset_index(drop=True)
