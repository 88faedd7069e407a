"""Market sources behind one interface: IG's live feed (`streamer.ig`), the simulator, and a replayed ticks file.

A source follows one epic or several. Its `events()` yields `(epic, Tick)` pairs, and `None` whenever nothing new
arrived for a moment (at least every IDLE_S seconds), so the caller can flush, report and stop between ticks. A
`live` source stamps each tick with its receive time in UTC; a recorded source (simulator, replay) carries the
ticks' own times.
"""

from __future__ import annotations

import csv
import heapq
import logging
import time
from collections import namedtuple
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from processing.batch_contract import (
    PRICE_COLUMNS,
    format_ts,
    parse_ts_rows,
    price_row_problems,
    ts_order_problems,
)

TICK_FIELDS = tuple(column for column in PRICE_COLUMNS if column != "epic")
Tick = namedtuple("Tick", TICK_FIELDS)  # the batch contract's price columns but the epic (the event's other half)
NUMERIC_FIELDS = tuple(field for field in TICK_FIELDS if field not in ("ts", "market_state", "update_time"))
TRADEABLE = "TRADEABLE"
IDLE_S = 0.5
_CHUNK_TICKS = 1000
BAD_ROWS_SHOWN = 5
log = logging.getLogger("livetrain.stream")


class Stopped(BaseException):
    """A stop was requested (SIGTERM, Ctrl-C) before streaming began. A BaseException, as KeyboardInterrupt is:
    raised from a signal handler, it must not be taken for an error by a library's `except Exception`."""


class Source(Protocol):
    live: bool  # ticks are stamped with their receive time (see `run.Sequencer`)
    status: str  # shown in the status line
    bad_rows: str  # rows the source skipped as the batch contract's reader would reject them: "" or a summary

    def events(self) -> Iterator[tuple[str, Tick] | None]: ...

    def close(self) -> None: ...


def usable(tick: Tick) -> bool:
    """A tick the batch contract accepts (`price_row_problems`: finite numbers, positive prices, bid ≤ offer)."""
    return not any(bad for bad, _ in price_row_problems(tick._asdict()))


def frame_ticks(frame: pd.DataFrame) -> Iterator[Tick]:
    """The rows of a prices frame (batch contract columns, ts in int64 ms) as ticks."""
    return map(Tick._make, zip(*(frame[field].tolist() for field in TICK_FIELDS), strict=True))


def paced(events: Iterable[tuple[str, Tick]], speed: float | None, clock=time.monotonic, sleep=time.sleep
          ) -> Iterator[tuple[str, Tick] | None]:
    """Yield (epic, tick) events spaced as their ticks' timestamps say, `speed` times faster (None: as fast as
    possible).

    While waiting for the next tick, yields None every IDLE_S seconds.
    """
    start_clock = start_ts = None
    for event in events:
        tick = event[1]
        if speed is not None:
            if start_ts is None:
                start_clock, start_ts = clock(), tick.ts
            due = start_clock + (tick.ts - start_ts) / 1000 / speed
            while (wait := due - clock()) > 0:
                sleep(min(wait, IDLE_S))
                if wait > IDLE_S:
                    yield None
        yield event


class SimulatedSource:
    """The seeded market simulator, one market per epic (the n-th epic's seed is `seed` + n), their ticks merged in
    time order; on a restart each continues after its last stored tick, from its mid."""

    live = False
    status = "simulating"
    bad_rows = ""

    def __init__(self, epics: Sequence[str], market: str, seed: int, speed: float | None,
                 after: Mapping[str, Tick | None] | None = None):
        from streamer.market import MarketSettings, MarketSimulator

        self._simulators = {}
        for position, epic in enumerate(epics):
            last = (after or {}).get(epic)
            settings = MarketSettings(market=market) if last is None else MarketSettings(
                market=market, start=str(format_ts([last.ts])[0]), start_mid=(last.bid + last.offer) / 2)
            self._simulators[epic] = MarketSimulator(settings, seed + position, epic)
        self._speed = speed

    @staticmethod
    def _ticks(epic: str, simulator) -> Iterator[tuple[str, Tick]]:
        while True:  # a random walk could in principle reach prices the contract rejects: those ticks are left out
            chunk = simulator.ticks(_CHUNK_TICKS)
            for tick in frame_ticks(chunk[~np.logical_or.reduce([bad for bad, _ in price_row_problems(chunk)])]):
                yield epic, tick

    def events(self) -> Iterator[tuple[str, Tick] | None]:
        markets = [self._ticks(epic, simulator) for epic, simulator in self._simulators.items()]
        return paced(heapq.merge(*markets, key=lambda event: event[1].ts), self._speed)

    def close(self) -> None:
        pass


class ReplaySource:
    """A ticks CSV with the batch contract's price columns (e.g. a batch's price shard), read in chunks.

    Rows of other epics are skipped. Rows of the epic that the batch contract's reader would reject (a malformed
    line or timestamp, a number that is not finite, a price that is not positive, bid above offer, a tick time not
    after the previous good row's) are skipped, counted and named in `bad_rows`. At the end of the file: a warning
    when no row was for the epic, a UserError when every one was bad. A restart reads the file again; the caller
    drops the ticks it already stored.
    """

    live = False
    status = "replaying"

    def __init__(self, path: str, epic: str, speed: float | None):
        from livetrain.errors import UserError

        self._path, self._epic, self._speed = Path(path), epic, speed
        if not self._path.is_file():
            raise UserError(f"--replay-file {path}: no such file")
        with self._path.open(encoding="utf-8", errors="replace", newline="") as file:
            self._header = next(csv.reader(file), [])
        missing = [column for column in PRICE_COLUMNS if column not in self._header]
        if missing:
            raise UserError(f"--replay-file {path}: missing columns {', '.join(missing)}; a replay file has the "
                            f"columns of a batch's price shards ({','.join(PRICE_COLUMNS)})")
        self.rows = self.bad = 0  # rows of the epic and lines with the wrong number of fields; bad ones among them
        self.epic_rows = 0  # well-formed rows of the epic
        self._problems: list[str] = []  # the first few, "line N: problem"

    @property
    def bad_rows(self) -> str:
        if not self.bad:
            return ""
        more = " …" if self.bad > len(self._problems) else ""
        return f"{self.bad:,} bad rows skipped ({'; '.join(self._problems)}{more})"

    def _ticks(self) -> Iterator[Tick]:
        from livetrain.errors import UserError

        after = None  # the last good row's time
        for lines, rows, malformed in self._chunks():
            ticks, after = self._check(lines, rows, malformed, after)
            yield from ticks
        if self.epic_rows == 0:
            log.warning("--replay-file %s: no row for epic %s; check --epic", self._path, self._epic)
        elif self.bad == self.rows:
            raise UserError(f"--replay-file {self._path}: all {self.rows:,} rows for {self._epic} break the batch "
                            f"contract ({'; '.join(self._problems)}); fix the file")
        if self.bad:
            log.warning("--replay-file %s: %s of %s rows", self._path, self.bad_rows, f"{self.rows:,}")

    def _chunks(self) -> Iterator[tuple[list[int], list[list[str]], np.ndarray]]:
        """(line numbers, price fields, True where the line has the wrong number of fields) of the epic's rows,
        10,000 at a time. A line with the wrong number of fields (whose epic is unknown) is counted with them."""
        index = [self._header.index(column) for column in PRICE_COLUMNS]
        epic_at, blank = self._header.index("epic"), [""] * len(PRICE_COLUMNS)
        lines, rows, malformed = [], [], []
        with self._path.open(encoding="utf-8", errors="replace", newline="") as file:
            reader = csv.reader(file)
            next(reader)
            for fields in reader:
                wrong_length = len(fields) != len(self._header)
                if fields and (wrong_length or fields[epic_at] == self._epic):
                    self.epic_rows += not wrong_length
                    lines.append(reader.line_num)
                    rows.append(blank if wrong_length else [fields[i] for i in index])
                    malformed.append(wrong_length)
                    if len(rows) == 10_000:
                        yield lines, rows, np.array(malformed)
                        lines, rows, malformed = [], [], []
        if rows:
            yield lines, rows, np.array(malformed)

    def _check(self, lines: list[int], rows: list[list[str]], malformed: np.ndarray, after: int | None
               ) -> tuple[list[Tick], int | None]:
        """The chunk's good rows as ticks (the batch contract's rules), and the time of its last good row."""
        columns = dict(zip(PRICE_COLUMNS, zip(*rows, strict=True), strict=True))
        frame = pd.DataFrame({column: pd.to_numeric(pd.Series(columns[column]), errors="coerce")
                              if column in NUMERIC_FIELDS else list(columns[column]) for column in TICK_FIELDS[1:]})
        ts, bad_ts = parse_ts_rows(np.array(columns["ts"]))
        frame.insert(0, "ts", ts)
        problems = [(malformed, f"not {len(self._header)} fields"), (bad_ts, "timestamp is not UTC ISO-8601"),
                    *price_row_problems(frame)]
        bad = np.logical_or.reduce([mask for mask, _ in problems])
        problems += ts_order_problems(ts, after, skip=bad)
        self.rows += len(rows)
        problem_of = {}
        for mask, problem in problems:
            for row in np.flatnonzero(mask):
                problem_of.setdefault(row, problem)
        for row in sorted(problem_of):
            self._reject(lines[row], problem_of[row])
            bad[row] = True
        good = frame[~bad]
        return list(frame_ticks(good)), (int(good["ts"].iloc[-1]) if len(good) else after)

    def _reject(self, line: int, problem: str) -> None:
        self.bad += 1
        if len(self._problems) < BAD_ROWS_SHOWN:
            self._problems.append(f"line {line}: {problem}")

    def events(self) -> Iterator[tuple[str, Tick] | None]:
        return paced(((self._epic, tick) for tick in self._ticks()), self._speed)

    def close(self) -> None:
        pass
