"""Market sources behind one interface: IG's live feed (`streamer.ig`), the simulator, and a replayed ticks file.

A source's `events()` yields `Tick`s, and `None` whenever nothing new arrived for a moment (at least every
IDLE_S seconds), so the caller can flush, report and stop between ticks. A `live` source stamps each tick with
its receive time in UTC; a recorded source (simulator, replay) carries the ticks' own times.
"""

from __future__ import annotations

import math
import time
from collections import namedtuple
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Protocol

import pandas as pd

from processing.batch_contract import PRICE_COLUMNS, PRICE_FIELDS, format_ts, parse_ts

TICK_FIELDS = tuple(column for column in PRICE_COLUMNS if column != "epic")
Tick = namedtuple("Tick", TICK_FIELDS)  # the batch contract's price columns (one streamer serves one epic)
NUMERIC_FIELDS = tuple(field for field in TICK_FIELDS if field not in ("ts", "market_state", "update_time"))
TRADEABLE = "TRADEABLE"
IDLE_S = 0.5
_CHUNK_TICKS = 1000


class Source(Protocol):
    live: bool  # ticks are stamped with their receive time (see `run.Sequencer`)
    status: str  # shown in the status line

    def events(self) -> Iterator[Tick | None]: ...

    def close(self) -> None: ...


def usable(tick: Tick) -> bool:
    """A tick the batch contract accepts: finite numbers, positive prices, bid not above offer."""
    numbers = [getattr(tick, field) for field in NUMERIC_FIELDS]
    if not all(isinstance(x, int | float) and math.isfinite(x) for x in numbers):
        return False
    return all(getattr(tick, field) > 0 for field in PRICE_FIELDS) and tick.bid <= tick.offer


def frame_ticks(frame: pd.DataFrame) -> Iterator[Tick]:
    """The rows of a prices frame (batch contract columns, ts in int64 ms) as ticks."""
    return map(Tick._make, zip(*(frame[field].tolist() for field in TICK_FIELDS), strict=True))


def paced(ticks: Iterable[Tick], speed: float | None, clock=time.monotonic, sleep=time.sleep
          ) -> Iterator[Tick | None]:
    """Yield ticks spaced as their timestamps say, `speed` times faster (None: as fast as possible).

    While waiting for the next tick, yields None every IDLE_S seconds.
    """
    start_clock = start_ts = None
    for tick in ticks:
        if speed is not None:
            if start_ts is None:
                start_clock, start_ts = clock(), tick.ts
            due = start_clock + (tick.ts - start_ts) / 1000 / speed
            while (wait := due - clock()) > 0:
                sleep(min(wait, IDLE_S))
                if wait > IDLE_S:
                    yield None
        yield tick


class SimulatedSource:
    """The seeded market simulator; on a restart it continues after the last stored tick, from its mid."""

    live = False
    status = "simulating"

    def __init__(self, epic: str, market: str, seed: int, speed: float | None, after: Tick | None = None):
        from streamer.market import MarketSettings, MarketSimulator

        settings = MarketSettings(market=market)
        if after is not None:
            settings = MarketSettings(market=market, start=str(format_ts([after.ts])[0]),
                                      start_mid=(after.bid + after.offer) / 2)
        self._simulator = MarketSimulator(settings, seed, epic)
        self._speed = speed

    def _ticks(self) -> Iterator[Tick]:
        while True:
            yield from frame_ticks(self._simulator.ticks(_CHUNK_TICKS))

    def events(self) -> Iterator[Tick | None]:
        return paced(self._ticks(), self._speed)

    def close(self) -> None:
        pass


class ReplaySource:
    """A ticks CSV with the batch contract's price columns (e.g. a batch's prices.csv), read in chunks.

    Rows of other epics are skipped. A restart reads the file again; the caller drops the ticks it already stored.
    """

    live = False
    status = "replaying"

    def __init__(self, path: str, epic: str, speed: float | None):
        from livetrain.errors import UserError

        self._path, self._epic, self._speed = Path(path), epic, speed
        if not self._path.is_file():
            raise UserError(f"--replay-file {path}: no such file")
        header = self._path.open(encoding="utf-8", errors="replace").readline().strip().split(",")
        missing = [column for column in PRICE_COLUMNS if column not in header]
        if missing:
            raise UserError(f"--replay-file {path}: missing columns {', '.join(missing)}; a replay file has the "
                            f"columns of a batch's prices.csv ({','.join(PRICE_COLUMNS)})")

    def _ticks(self) -> Iterator[Tick]:
        text = {"epic": str, "market_state": str, "update_time": str}
        for chunk in pd.read_csv(self._path, chunksize=10_000, dtype=text, keep_default_na=False,
                                 usecols=list(PRICE_COLUMNS)):
            chunk = chunk[chunk["epic"] == self._epic].copy()
            chunk["ts"] = parse_ts(chunk["ts"].to_numpy(), f"{self._path}: column ts")
            for field in NUMERIC_FIELDS:
                chunk[field] = pd.to_numeric(chunk[field], errors="coerce")
            yield from frame_ticks(chunk)

    def events(self) -> Iterator[Tick | None]:
        return paced(self._ticks(), self._speed)

    def close(self) -> None:
        pass
