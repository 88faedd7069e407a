"""Market sources without services: pacing, the simulator's resume, replay files, tick sequencing."""

from __future__ import annotations

import itertools

import pandas as pd
import pytest

from livetrain.errors import UserError
from processing.batch_contract import PRICE_COLUMNS, format_ts
from streamer.market import MarketSettings, MarketSimulator
from streamer.run import Sequencer
from streamer.sources import ReplaySource, SimulatedSource, Tick, frame_ticks, paced, usable

EPIC = "CS.D.BITCOIN.CFD.IP"


def tick(ts: int, bid: float = 100.0, offer: float = 101.0, **fields) -> Tick:
    values = dict(mid_open=99.0, high=102.0, low=98.0, change=1.5, change_pct=1.5, market_state="TRADEABLE",
                  update_time="10:00:00")
    return Tick(ts=ts, bid=bid, offer=offer, **{**values, **fields})


class FakeClock:
    def __init__(self):
        self.now, self.sleeps = 0.0, []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_paced_waits_by_timestamps_times_speed_and_yields_idle_events():
    clock = FakeClock()
    ticks = [(EPIC, tick(0)), ("OTHER", tick(1000)), (EPIC, tick(1500)), (EPIC, tick(31_500))]
    events = list(paced(ticks, speed=10.0, clock=clock, sleep=clock.sleep))
    assert [e for e in events if e is not None] == ticks
    assert clock.now == pytest.approx(3.15)  # 31.5 s of market time at 10x
    assert events.count(None) == 5  # the 3 s wait: a None after each 0.5 s sleep but the last
    assert max(clock.sleeps) <= 0.5


def test_paced_as_fast_as_possible_never_sleeps():
    clock = FakeClock()
    assert len(list(paced([(EPIC, tick(0)), (EPIC, tick(10**9))], speed=None, clock=clock, sleep=clock.sleep))) == 2
    assert clock.sleeps == []


def test_simulator_resumes_after_the_last_tick_from_its_mid():
    _, first = next(SimulatedSource([EPIC], "random-walk", 1, None).events())
    last = tick(first.ts + 3_600_000, bid=50_000.0, offer=50_036.0)
    resumed = [t for _, (_, t) in zip(range(50), SimulatedSource([EPIC], "random-walk", 1, None,
                                                                 after={EPIC: last}).events(), strict=False)]
    assert resumed[0].ts > last.ts - 1  # the Sequencer drops a tick at or before the last stored one
    assert abs((resumed[0].bid + resumed[0].offer) / 2 - 50_018.0) < 200
    assert all(b.ts > a.ts for a, b in itertools.pairwise(resumed))


def test_a_simulator_of_several_epics_merges_their_markets_in_time_order_and_the_first_is_the_one_epics():
    alone = [t for _, (_, t) in zip(range(300), SimulatedSource([EPIC], "planted-signal", 4, None).events(),
                                    strict=False)]
    merged = [e for _, e in zip(range(900), SimulatedSource([EPIC, "B", "C"], "planted-signal", 4, None).events(),
                                strict=False)]
    assert {epic for epic, _ in merged} == {EPIC, "B", "C"}
    assert all(a[1].ts <= b[1].ts for a, b in itertools.pairwise(merged))
    first = [t for epic, t in merged if epic == EPIC]
    assert first == alone[:len(first)]  # the first epic's market is the single-epic one (same seed)
    assert [t for epic, t in merged if epic == "B"][:5] != first[:5]  # the others have markets of their own


def test_replay_reads_the_prices_columns_of_its_epic(tmp_path):
    prices = MarketSimulator(MarketSettings(), 3, EPIC).ticks(2500)
    other = prices.head(5).assign(epic="OTHER")
    path = tmp_path / "ticks.csv"
    rows = pd.concat([prices, other])
    rows.assign(ts=format_ts(rows["ts"].to_numpy())).to_csv(path, index=False, columns=list(PRICE_COLUMNS))
    replayed = list(ReplaySource(str(path), EPIC, None).events())
    assert replayed == [(EPIC, t) for t in frame_ticks(prices)]


def test_replay_file_problems_are_one_line_user_errors(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        ReplaySource(str(tmp_path / "missing.csv"), EPIC, None)
    bad = tmp_path / "bad.csv"
    bad.write_text("ts,bid,offer\n")
    with pytest.raises(UserError, match="missing columns epic, mid_open"):
        ReplaySource(str(bad), EPIC, None)


def test_sequencer_bumps_live_duplicates_and_drops_recorded_repeats():
    live = Sequencer(live=True, last_ts=1000)
    assert [live(tick(ts)).ts for ts in (1000, 1000, 999, 1005)] == [1001, 1002, 1003, 1005]
    recorded = Sequencer(live=False, last_ts=1000)
    assert [recorded(tick(ts)) is not None for ts in (999, 1000, 1001, 1001, 1002)] == [False, False, True, False, True]


@pytest.mark.parametrize("fields", [dict(bid=0.0), dict(offer=-1.0), dict(bid=102.0, offer=101.0),
                                    dict(high=float("nan")), dict(change=None), dict(low=0.0)])
def test_ticks_the_contract_rejects_are_unusable(fields):
    assert usable(tick(1))
    assert not usable(tick(1)._replace(**fields))
    assert Sequencer(live=True, last_ts=None)(tick(1)._replace(**fields)) is None


def test_replay_skips_counts_and_names_the_rows_the_batch_reader_would_reject(tmp_path):
    prices = MarketSimulator(MarketSettings(), 3, EPIC).ticks(60)
    rows = prices.assign(ts=format_ts(prices["ts"].to_numpy())).astype(str).to_dict("records")
    bad = {3: dict(bid="1O0.5"), 5: dict(high="nan"), 7: dict(change="inf"), 9: "garbage,line",
           11: dict(ts=rows[0]["ts"]), 13: dict(bid="999999", offer="1"), 15: dict(ts="2026-13-01T00:00:00.000Z"),
           17: dict(ts=rows[14]["ts"]), 19: dict(low="0")}  # line number (2 = the first row): what is wrong in it
    lines = [",".join(PRICE_COLUMNS)]
    for number, row in enumerate(rows, start=2):
        change = bad.get(number, {})
        lines.append(change if isinstance(change, str) else ",".join({**row, **change}[c] for c in PRICE_COLUMNS))
    path = tmp_path / "ticks.csv"
    path.write_text("\n".join(lines) + "\n")
    source = ReplaySource(str(path), EPIC, None)
    replayed = [t for _, t in source.events()]
    assert [t.ts for t in replayed] == [ts for i, ts in enumerate(prices["ts"]) if i + 2 not in bad]
    assert (source.rows, source.bad) == (60, 9)
    assert source.bad_rows == ("9 bad rows skipped (line 3: bid is not a finite number; line 5: high is not a finite "
                               "number; line 7: change is not a finite number; line 9: not 11 fields; line 11: ticks "
                               "are not ordered by ts …)")
    assert [usable(t) for t in replayed] == [True] * len(replayed)
