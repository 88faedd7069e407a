"""The paper-trading bot: the rules of `streamer.trading` fed tick by tick, resumed from and recorded in the store."""

from __future__ import annotations

from streamer.sources import TRADEABLE, Tick
from streamer.store import Store
from streamer.trading import BotSettings, PaperTrader, TradeBook


class Bot:
    """Records each tick, resolves the open trades on it and opens new ones by the policy.

    The bot opens trades only once `warmup_s` seconds of ticks are stored (so that every trade has its
    look-back) and only while the market state is TRADEABLE. Closed trades are numbered in close order
    (`close_seq`), which is how the exporter cuts batches. With a scorer, each closed trade also carries the
    endpoint's answer at its opening (streamer/scoring.py).
    """

    def __init__(self, store: Store, settings: BotSettings, warmup_s: float, scorer=None):
        self.store, self.scorer = store, scorer  # scorer: a streamer.scoring.LiveScorer, or None
        book = TradeBook(open={trade.trade_id: trade for trade in store.open_trades()})
        last_opens = [trade.open_ts for trade in book.open.values()]
        last_opens.append(store.checkpoint().get("last_open_ts"))
        self.trader = PaperTrader(store.epic, settings, book=book,
                                  last_open_ts=max((ts for ts in last_opens if ts is not None), default=None))
        self.next_close_seq = store.stored_close_seq + 1
        self._warmup_ms = round(warmup_s * 1000)
        first = store.first_tick_ts()
        self._opens_from = None if first is None else first + self._warmup_ms
        self.opened = self.closed = 0  # this run

    @property
    def open_trades(self) -> int:
        return len(self.trader.book.open)

    def on_tick(self, tick: Tick) -> None:
        """Store the tick and the trades it opens and closes (buffered: see Store.flush)."""
        if self._opens_from is None:
            self._opens_from = tick.ts + self._warmup_ms
        self.store.add_tick(tick)
        may_open = tick.ts >= self._opens_from and tick.market_state == TRADEABLE
        opened, closed = self.trader.on_tick(tick.ts, tick.bid, tick.offer, may_open=may_open)
        if self.scorer is not None:
            self.scorer.on_tick(tick)
            for trade in opened:
                self.scorer.on_open(trade)
            closed = [{**row, **self.scorer.on_close(row)} for row in closed]
        for trade in opened:
            self.store.add_opened(trade)
        for row in closed:
            self.store.add_closed(row, self.next_close_seq)
            self.next_close_seq += 1
        self.opened += len(opened)
        self.closed += len(closed)
