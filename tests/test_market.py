"""The seeded market simulator."""

import numpy as np
import pandas as pd
import pytest

from processing.batch_contract import PRICE_COLUMNS
from streamer.market import MarketSettings, MarketSimulator


def ticks(n=20_000, seed=1, **settings):
    return MarketSimulator(MarketSettings(**settings), seed, "EPIC").ticks(n)


def test_same_seed_same_ticks_and_chunks_continue():
    whole = ticks(4000)
    simulator = MarketSimulator(MarketSettings(), 1, "EPIC")
    assert whole.equals(ticks(4000))
    parts = pd.concat([simulator.ticks(1000) for _ in range(4)], ignore_index=True)
    assert parts["ts"].is_monotonic_increasing and parts["ts"].is_unique
    assert not parts.equals(ticks(4000, seed=2))


def test_quotes_are_well_formed():
    frame = ticks()
    assert list(frame.columns) == list(PRICE_COLUMNS)
    assert (np.diff(frame["ts"]) > 0).all()
    assert np.allclose(frame["offer"] - frame["bid"], 36.0)
    assert (frame["low"] <= (frame["bid"] + frame["offer"]) / 2 + 1e-9).all()
    assert (frame["high"] >= (frame["bid"] + frame["offer"]) / 2 - 1e-9).all()
    assert np.allclose(frame["change"], (frame["bid"] + frame["offer"]) / 2 - frame["mid_open"], atol=1e-3)
    assert frame["update_time"].str.fullmatch(r"\d\d:\d\d:\d\d").all()


def test_irregular_times_with_pauses():
    gaps = np.diff(ticks(50_000)["ts"]) / 1000
    assert 0.8 < gaps.mean() < 1.3
    assert gaps.max() > 10  # rare long pauses exercise carry-forward


def test_day_fields_reset_at_midnight_utc():
    frame = ticks(100_000, start="2026-01-05T23:00:00.000Z")
    day = frame["ts"] // 86_400_000
    second_day = frame[day == day.max()]
    first_mid = (second_day["bid"].iat[0] + second_day["offer"].iat[0]) / 2
    assert (second_day["mid_open"] == first_mid).all()
    assert frame.loc[day == day.min(), "mid_open"].nunique() == 1


def test_uk_clock_follows_british_summer_time():
    frame = ticks(10, start="2026-07-01T12:00:00.000Z", pause_probability=0)
    assert frame["update_time"].iat[0].startswith("13:00")


def _future_vs_past_correlation(frame, window_ms=120_000):
    """Correlation between the last `window` move and the next one, on a 1-second grid."""
    mid = (frame["bid"] + frame["offer"]) / 2
    grid = np.arange(frame["ts"].iat[0], frame["ts"].iat[-1], 1000)
    on_grid = mid.to_numpy()[np.searchsorted(frame["ts"].to_numpy(), grid, side="right") - 1]
    k = window_ms // 1000
    past = on_grid[k:-k] - on_grid[:-2 * k]
    future = on_grid[2 * k:] - on_grid[k:-k]
    return np.corrcoef(past[::k], future[::k])[0, 1]


def test_planted_signal_is_predictable_and_random_walk_is_not():
    planted = _future_vs_past_correlation(ticks(400_000, market="planted-signal"))
    random_walk = _future_vs_past_correlation(ticks(400_000, market="random-walk"))
    # ~3,300 independent windows: the estimate's standard error is about 0.017
    assert planted > 0.08
    assert abs(random_walk) < 0.06


def test_unknown_market_is_refused():
    with pytest.raises(ValueError, match="random-walk"):
        MarketSettings(market="bull")


def test_a_batch_is_the_first_trades_by_open_time_all_closed():
    from streamer.synth import synthesize
    from streamer.trading import BotSettings

    prices, trades = synthesize(200, 5, MarketSettings(), BotSettings(open_every_s=10), "EPIC", progress=None)
    assert len(trades) == 200
    gaps = trades["open_ts"].diff().dropna()
    assert (gaps >= 10_000).all() and (gaps < 60_000).all()  # no trade between the first and the last is missing
    assert prices["ts"].iat[-1] == trades["close_ts"].max()
    assert prices["ts"].iat[0] <= trades["open_ts"].min() - 600_000


def test_a_negative_strength_plants_reversal_and_a_positive_one_momentum():
    """Over a half-life, moves follow the previous one's sign with momentum and oppose it with reversal."""

    def correlation_of_consecutive_moves(strength: float) -> float:
        ticks = MarketSimulator(MarketSettings(signal_strength=strength), 4, "EPIC").ticks(200_000)
        mids = pd.Series((ticks["bid"] + ticks["offer"]).to_numpy() / 2, index=pd.to_datetime(ticks["ts"], unit="ms"))
        moves = mids.resample("300s").last().diff().dropna().to_numpy()
        return float(np.corrcoef(moves[:-1], moves[1:])[0, 1])

    assert correlation_of_consecutive_moves(0.5) > 0.1
    assert correlation_of_consecutive_moves(-0.5) < -0.1
    assert abs(correlation_of_consecutive_moves(0.0)) < 0.05


def test_the_signal_strength_changes_at_the_hours_given():
    settings = MarketSettings(signal_strength=0.0, signal_changes=((1.0, -0.5), (2.0, 0.5)))
    simulator = MarketSimulator(settings, 1, "EPIC")
    hours = np.array([0.0, 0.99, 1.0, 1.5, 2.0, 30.0])
    assert simulator._strengths(simulator._start_ts + hours * 3.6e6).tolist() == [0.0, 0.0, -0.5, -0.5, 0.5, 0.5]


def test_regime_switching_follows_its_seeded_schedule():
    """The schedule comes from the seed: momentum first, then signs alternating, lengths and strengths in range;
    the ticks are those of the planted-signal market with that schedule as its signal changes."""
    from streamer.market import regime_schedule

    settings = MarketSettings(market="regime-switching")
    schedule = regime_schedule(settings, 3)
    assert schedule == regime_schedule(settings, 3) != regime_schedule(settings, 4)
    hours, strengths = np.array(schedule).T
    assert hours[0] == 0 and hours[-1] >= settings.regime_horizon_hours - settings.regime_hours[1]
    assert ((np.diff(hours) >= 96) & (np.diff(hours) <= 192)).all()
    assert ((np.abs(strengths) >= 0.3) & (np.abs(strengths) <= 0.7)).all()
    assert (np.sign(strengths) == [(-1) ** i for i in range(len(strengths))]).all()
    planted = MarketSettings(market="planted-signal", signal_changes=schedule)
    assert ticks(5000, seed=3, market="regime-switching").equals(ticks(5000, seed=3, **vars(planted)))
