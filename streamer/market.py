"""A seeded market simulator: pure logic, no I/O.

Ticks arrive at irregular times (exponential gaps, with rare long pauses), the
mid follows a random walk, bid and offer sit half a spread either side of it
(rounded to the quote's 2 decimals), and the day fields (mid_open, high, low,
change, change_pct) are those of the UTC day so far.

Two modes:
- `random-walk`: mid increments are independent; nothing is predictable.
- `planted-signal`: the mid also drifts at a hidden rate that persists
  (an Ornstein-Uhlenbeck process with time constant `signal_halflife_s`,
  standard deviation `signal_strength` points per second). The recent past
  move reveals the drift, so a trade opened after a rise is more likely to
  hit its take-profit: a linear model on the look-back features can learn it.
  `signal_strength` 0 gives back the random walk; `signal_changes`, pairs of
  (hours after the start, strength), change the strength from those times on.
  A negative strength plants the opposite pattern, reversal: a hidden level
  (Ornstein-Uhlenbeck, same time constant, standard deviation |strength| ×
  half-life / ln 2 points: the move such a drift makes over its memory) is
  added to the price, so a recent rise tends to be given back.
- `regime-switching`: the planted pattern changes with the market's regime.
  The schedule is drawn from the seed (its own random stream, so the ticks'
  randomness is that of `planted-signal`): the first regime is momentum; each
  regime lasts a uniform draw from `regime_hours` (default 96-192 h, so that a
  10,000-trade batch of about 83 h sees a switch every one or two batches) and
  has a strength drawn uniformly from `regime_strengths` (0.3-0.7 points per
  second); the sign alternates at every switch, momentum then reversal.
  `regime_schedule(settings, seed)` gives the (hours after the start, strength)
  pairs; a model trained before a switch learned the opposite of what follows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from livetrain.config import MARKETS

DAY_MS = 86_400_000


@dataclass(frozen=True)
class MarketSettings:
    market: str = "planted-signal"
    start: str = "2026-01-05T00:00:00.000Z"
    start_mid: float = 60_000.0
    spread: float = 36.0
    volatility: float = 6.0  # points per sqrt(second)
    mean_tick_interval_s: float = 1.0
    pause_probability: float = 0.002  # a tick that comes after a long pause
    pause_max_s: float = 30.0
    signal_strength: float = 0.5  # points per second (std of the drift)
    signal_halflife_s: float = 300.0
    signal_changes: tuple[tuple[float, float], ...] = ()  # (hours after start, strength from then on), in order
    regime_hours: tuple[float, float] = (96.0, 192.0)  # regime-switching: the range of a regime's length
    regime_strengths: tuple[float, float] = (0.3, 0.7)  # regime-switching: the range of its |strength|
    regime_horizon_hours: float = 24 * 3650.0  # regime-switching: how far ahead the schedule is drawn

    def __post_init__(self):
        if self.market not in MARKETS:
            raise ValueError(f"market must be one of {', '.join(MARKETS)}, not {self.market!r}")


class MarketSimulator:
    """Generates ticks in chunks; the same seed and settings give the same ticks."""

    def __init__(self, settings: MarketSettings, seed: int, epic: str):
        self.settings, self.epic = settings, epic
        self._rng = np.random.default_rng(seed)
        start = datetime.fromisoformat(settings.start.replace("Z", "+00:00"))
        self._ts = int(start.timestamp() * 1000)
        self._start_ts = self._ts
        self._mid = settings.start_mid
        self._drift = self._level = 0.0
        self._day = self._ts // DAY_MS
        self._day_open = self._day_high = self._day_low = self._mid
        self._changes = regime_schedule(settings, seed) if settings.market == "regime-switching" else (
            settings.signal_changes)

    def ticks(self, n: int) -> pd.DataFrame:
        """The next `n` ticks as a prices frame (batch contract columns, ts in int64 ms)."""
        s, rng = self.settings, self._rng
        gaps = rng.exponential(s.mean_tick_interval_s, n)
        pauses = rng.random(n) < s.pause_probability
        gaps[pauses] += rng.uniform(0, s.pause_max_s, pauses.sum())
        gap_ms = np.maximum(1, np.round(gaps * 1000)).astype(np.int64)  # strictly increasing ts
        ts = self._ts + np.cumsum(gap_ms)
        dt = gap_ms / 1000.0
        steps = s.volatility * np.sqrt(dt) * rng.standard_normal(n)
        if s.market != "random-walk" and any([s.signal_strength, *(v for _, v in self._changes)]):
            steps += self._planted_moves(dt, self._strengths(ts), rng.standard_normal(n))
        mid = self._mid + np.cumsum(steps)
        self._ts, self._mid = int(ts[-1]), float(mid[-1])
        bid = np.round(mid - s.spread / 2, 2)
        offer = np.round(mid + s.spread / 2, 2)
        quoted_mid = (bid + offer) / 2
        mid_open, high, low = self._day_fields(ts, quoted_mid)
        change = np.round(quoted_mid - mid_open, 3)
        return pd.DataFrame({
            "ts": ts, "epic": self.epic, "bid": bid, "offer": offer,
            "mid_open": mid_open, "high": high, "low": low, "change": change,
            "change_pct": np.round(100 * change / mid_open, 4),
            "market_state": "TRADEABLE", "update_time": _uk_clock(ts),
        })  # fmt: skip

    def _strengths(self, ts: np.ndarray) -> np.ndarray:
        """The signal strength at each tick: signal_strength, then each change from its time on."""
        hours = [hour for hour, _ in self._changes]
        levels = np.array([self.settings.signal_strength, *(strength for _, strength in self._changes)])
        return levels[np.searchsorted(hours, (ts - self._start_ts) / 3.6e6, side="right")]

    def _planted_moves(self, dt: np.ndarray, strengths: np.ndarray, shocks: np.ndarray) -> np.ndarray:
        """The planted pattern's price move at each tick: the hidden drift's (momentum) plus the hidden level's
        change (reversal); both are Ornstein-Uhlenbeck processes sampled exactly at the tick gaps."""
        memory = self.settings.signal_halflife_s / math.log(2)
        decay = np.exp(-dt / memory)
        innovation = np.sqrt(1 - decay**2) * shocks
        drift_noise = np.maximum(strengths, 0.0) * innovation
        level_noise = np.maximum(-strengths, 0.0) * memory * innovation
        moves = np.empty_like(dt)
        drift, level = self._drift, self._level
        for i in range(len(dt)):  # a recursion; ~0.3 µs per tick
            drift = decay[i] * drift + drift_noise[i]
            new_level = decay[i] * level + level_noise[i]
            moves[i] = drift * dt[i] + new_level - level
            level = new_level
        self._drift, self._level = drift, level
        return moves

    def _day_fields(self, ts: np.ndarray, mid: np.ndarray):
        mid_open, high, low = np.empty_like(mid), np.empty_like(mid), np.empty_like(mid)
        days = ts // DAY_MS
        for day in np.unique(days):
            part = days == day
            if day != self._day:
                self._day, first = day, mid[part][0]
                self._day_open = self._day_high = self._day_low = first
            high[part] = np.maximum.accumulate(np.maximum(mid[part], self._day_high))
            low[part] = np.minimum.accumulate(np.minimum(mid[part], self._day_low))
            mid_open[part] = self._day_open
            self._day_high, self._day_low = high[part][-1], low[part][-1]
        return mid_open, high, low


def regime_schedule(settings: MarketSettings, seed: int) -> tuple[tuple[float, float], ...]:
    """The regime-switching market's (hours after the start, strength) pairs, from the start on: the same seed
    gives the same schedule. The first pair is at hour 0 (momentum); signs alternate."""
    rng = np.random.default_rng([seed, 0x5E61])  # a stream of its own: the ticks' draws stay those of the seed
    changes, hour, sign = [], 0.0, 1.0
    while hour < settings.regime_horizon_hours:
        changes.append((hour, sign * float(rng.uniform(*settings.regime_strengths))))
        hour += float(rng.uniform(*settings.regime_hours))
        sign = -sign
    return tuple(changes)


def _uk_clock(ts: np.ndarray) -> np.ndarray:
    """IG's UPDATE_TIME: the UK wall-clock time of day (no date)."""
    from zoneinfo import ZoneInfo

    london = ZoneInfo("Europe/London")
    hours, inverse = np.unique(ts // 3_600_000, return_inverse=True)
    offset_ms = np.array([datetime.fromtimestamp(h * 3600, london).utcoffset().total_seconds() * 1000
                          for h in hours.tolist()], dtype=np.int64)
    local = (ts + offset_ms[inverse]).astype("datetime64[ms]").astype("datetime64[s]")
    return pd.Series(np.datetime_as_string(local)).str.slice(11).to_numpy(dtype=object)
