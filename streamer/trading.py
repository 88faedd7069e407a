"""Paper-trading rules: pure logic, no I/O.

A BUY opens at the OFFER and is judged and closed at the BID; a SELL opens at
the BID and is judged and closed at the OFFER. Take-profit sits at
open ± limit distance and stop-loss at open ∓ stop distance (price points).
A trade is judged from the first tick after the one that opened it; on the
tick whose price reaches a level it closes at that tick's price (a market
fill, so a gap can close it beyond the level). A trade still open at its
maximum lifetime closes at the market on the first tick at or after expiry.
The label is 1 when the closed trade's P&L is > 0.
"""

from __future__ import annotations

import heapq
from dataclasses import asdict, dataclass, field

from livetrain.config import Config

BUY, SELL = "BUY", "SELL"


def parse_directions(choice: str) -> tuple[str, ...]:
    """BUY, SELL or BOTH → the directions the bot trades."""
    return (BUY, SELL) if choice == "BOTH" else (choice,)


@dataclass(frozen=True)
class BotSettings:
    """When the bot opens trades and how each trade is closed; the defaults are Config's."""

    directions: tuple[str, ...] = parse_directions(Config.directions)
    stop_distance: float = Config.stop_distance
    limit_distance: float = Config.limit_distance
    max_lifetime_s: float = Config.max_lifetime_s
    # 0 opens on every tick; spacing trades out gives a batch more independent market time (trades
    # opened a second apart share one price path, so their labels are nearly one sample)
    open_every_s: float = Config.open_every_s

    def __post_init__(self):
        if not self.directions or set(self.directions) - {BUY, SELL}:
            raise ValueError(f"directions must be BUY, SELL or both, not {self.directions}")
        if self.stop_distance <= 0 or self.limit_distance <= 0 or self.max_lifetime_s <= 0:
            raise ValueError("stop distance, limit distance and maximum lifetime must be positive")
        if self.open_every_s < 0:
            raise ValueError("open_every_s must be >= 0")

    def as_dict(self) -> dict:
        return {**asdict(self), "directions": list(self.directions)}


@dataclass
class Trade:
    """An open paper trade."""

    trade_id: str
    epic: str
    direction: str
    open_ts: int
    open_price: float
    stop_distance: float
    limit_distance: float
    expires_ts: int

    @property
    def take_profit(self) -> float:
        return self.open_price + self.limit_distance if self.direction == BUY else \
            self.open_price - self.limit_distance

    @property
    def stop_loss(self) -> float:
        return self.open_price - self.stop_distance if self.direction == BUY else \
            self.open_price + self.stop_distance

    def close(self, ts: int, price: float, reason: str) -> dict:
        """The closed trade as a row of the batch contract's transactions."""
        pnl = round(price - self.open_price if self.direction == BUY else self.open_price - price, 6)
        return {
            "trade_id": self.trade_id, "epic": self.epic, "direction": self.direction,
            "open_ts": self.open_ts, "open_price": self.open_price,
            "stop_distance": self.stop_distance, "limit_distance": self.limit_distance,
            "close_ts": ts, "close_price": price, "close_reason": reason,
            "pnl": pnl, "label": int(pnl > 0),
        }  # fmt: skip


class _Levels:
    """Trade ids keyed by a price level, released once the price reaches the level."""

    def __init__(self, fires_at_or_above: bool):
        self._sign = 1 if fires_at_or_above else -1
        self._heap: list[tuple[float, str]] = []

    def add(self, level: float, trade_id: str) -> None:
        heapq.heappush(self._heap, (self._sign * level, trade_id))

    def reached(self, price: float) -> list[str]:
        key, released = self._sign * price, []
        while self._heap and self._heap[0][0] <= key:
            released.append(heapq.heappop(self._heap)[1])
        return released

    def keep_only(self, open_ids) -> None:
        """Drop entries of trades closed by another rule (keeps memory flat on long runs)."""
        self._heap = [entry for entry in self._heap if entry[1] in open_ids]
        heapq.heapify(self._heap)

    def __len__(self) -> int:
        return len(self._heap)


@dataclass
class TradeBook:
    """The open trades, resolved tick by tick in O(log n) per opened or closed trade."""

    open: dict[str, Trade] = field(default_factory=dict)

    def __post_init__(self):
        self._queues = {  # (direction, reason) → levels; BUY is judged on the bid, SELL on the offer
            (BUY, "TAKE_PROFIT"): _Levels(fires_at_or_above=True),
            (BUY, "STOP_LOSS"): _Levels(fires_at_or_above=False),
            (SELL, "TAKE_PROFIT"): _Levels(fires_at_or_above=False),
            (SELL, "STOP_LOSS"): _Levels(fires_at_or_above=True),
        }
        self._expiry: list[tuple[int, str]] = []
        trades, self.open = self.open, {}
        for trade in trades.values():
            self.add(trade)

    def add(self, trade: Trade) -> None:
        self.open[trade.trade_id] = trade
        self._queues[trade.direction, "TAKE_PROFIT"].add(trade.take_profit, trade.trade_id)
        self._queues[trade.direction, "STOP_LOSS"].add(trade.stop_loss, trade.trade_id)
        heapq.heappush(self._expiry, (trade.expires_ts, trade.trade_id))

    def on_tick(self, ts: int, bid: float, offer: float) -> list[dict]:
        """Close every open trade this tick resolves; returns the closed trades' rows."""
        closed = []
        for (direction, reason), levels in self._queues.items():
            price = bid if direction == BUY else offer
            for trade_id in levels.reached(price):
                trade = self.open.pop(trade_id, None)
                if trade is not None:
                    closed.append(trade.close(ts, price, reason))
        while self._expiry and self._expiry[0][0] <= ts:
            trade = self.open.pop(heapq.heappop(self._expiry)[1], None)
            if trade is not None:
                closed.append(trade.close(ts, bid if trade.direction == BUY else offer, "EXPIRED"))
        if closed and sum(map(len, self._queues.values())) > 4 * len(self.open) + 4096:
            for levels in self._queues.values():
                levels.keep_only(self.open)
        return closed


@dataclass
class PaperTrader:
    """Opens trades by the bot's policy and resolves them on every tick."""

    epic: str
    settings: BotSettings
    book: TradeBook = field(default_factory=TradeBook)
    last_open_ts: int | None = None

    def on_tick(self, ts: int, bid: float, offer: float, may_open: bool = True) -> tuple[list[Trade], list[dict]]:
        """Resolve the open trades on this tick, then open new ones; returns (opened, closed)."""
        closed = self.book.on_tick(ts, bid, offer)
        opened = []
        due = self.last_open_ts is None or ts - self.last_open_ts >= self.settings.open_every_s * 1000
        if may_open and due:
            for direction in self.settings.directions:
                trade = Trade(
                    trade_id=f"{self.epic}-{ts}-{direction}", epic=self.epic, direction=direction,
                    open_ts=ts, open_price=offer if direction == BUY else bid,
                    stop_distance=self.settings.stop_distance, limit_distance=self.settings.limit_distance,
                    expires_ts=ts + round(self.settings.max_lifetime_s * 1000),
                )
                self.book.add(trade)
                opened.append(trade)
            self.last_open_ts = ts
        return opened, closed
