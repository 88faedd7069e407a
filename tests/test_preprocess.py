"""processing/preprocess.py: feature rules, no look-ahead, purged and embargoed split, exact CSV text, bad input."""

import io
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from infra.local.services import wait_until
from processing import batch_contract as bc
from processing import preprocess as pp

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "processing" / "preprocess.py"
EPIC = "TEST.EPIC"
START = 1_767_571_200_000  # 2026-01-05T00:00:00.000Z


# ---------------------------------------------------------------- hand-made batches


def tick_frame(seconds, mids, spread: float = 2.0) -> pd.DataFrame:
    """Ticks at START + seconds (ms precision) with these mids; day fields that differ from the mid."""
    ts = START + np.round(np.asarray(seconds, dtype=float) * 1000).astype(np.int64)
    mids = np.asarray(mids, dtype=float)
    return pd.DataFrame({
        "ts": ts, "epic": EPIC, "bid": mids - spread / 2, "offer": mids + spread / 2,
        "mid_open": np.full(len(mids), mids[0]), "high": np.maximum.accumulate(mids) + 3,
        "low": np.minimum.accumulate(mids) - 4, "change": mids - mids[0], "change_pct": 0.0,
        "market_state": "TRADEABLE", "update_time": "00:00:00",
    })  # fmt: skip


def trade_frame(open_seconds, close_seconds, labels) -> pd.DataFrame:
    labels = np.asarray(labels)
    pnl = np.where(labels == 1, 5.0, -5.0)
    return pd.DataFrame({
        "trade_id": [f"T{i:03d}" for i in range(len(labels))], "epic": EPIC, "direction": "BUY",
        "open_ts": START + np.round(np.asarray(open_seconds, dtype=float) * 1000).astype(np.int64),
        "open_price": 100.0, "stop_distance": 5.0, "limit_distance": 5.0,
        "close_ts": START + np.round(np.asarray(close_seconds, dtype=float) * 1000).astype(np.int64),
        "close_price": 100.0 + pnl, "close_reason": np.where(labels == 1, "TAKE_PROFIT", "STOP_LOSS"),
        "pnl": pnl, "label": labels,
    })  # fmt: skip


def write_batch(directory: Path, ticks: pd.DataFrame, trades: pd.DataFrame) -> Path:
    files = bc.render_batch(bucket="bkt", epic=EPIC, batch_id="hand-made", prices=ticks, trades=trades,
                            bot_settings={})
    return bc.write_batch_dir(files, directory)


def small_batch(directory: Path, trades: int = 40) -> Path:
    """Ticks every second for 200 s; `trades` trades opened every 4 s from 20.5 s, 1 s long, labels 0 1 0 1 …

    With a 10 s look-back the dependence span is 11 s, and the 156 s of opens are cut at 129.7 s and 153.1 s.
    """
    rng = np.random.default_rng(1)
    mids = 100 + np.round(np.cumsum(rng.normal(0, 1, 201)), 2)
    opens = 20.5 + 4 * np.arange(trades)
    trades = trade_frame(opens, opens + 1, np.arange(trades) % 2)
    return write_batch(directory, tick_frame(np.arange(201), mids), trades)


def run_script(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=300)


SMALL = ("--lookback-seconds", 10, "--min-test-windows", 0)  # a small batch is too short for a verdict


def slice_text(output: Path, name: str) -> str:
    """A slice's feature file: its shards' files joined in order."""
    return "".join(path.read_text() for path in pp.slice_files(output, name))


def read_slices(output: Path, lookback: int) -> dict[str, pd.DataFrame]:
    """Each slice's rows as a frame indexed by trade_id: `label` (None for test) and the feature columns."""
    names = bc.feature_names(lookback)
    rows = pd.read_csv(output / pp.ROWS_CSV)
    labelled = {"train": pp.TRAIN_CSV, "validation": pp.VALIDATION_CSV}
    slices = {}
    for name in pp.SLICES:
        if name in labelled:
            frame = pd.read_csv(io.StringIO(slice_text(output, labelled[name])), header=None, names=["label", *names])
        else:
            frame = pd.concat([pd.read_csv(output / pp.TEST_TRADES_CSV)[["label"]],
                               pd.read_csv(io.StringIO(slice_text(output, pp.TEST_FEATURES_CSV)), header=None,
                                           names=names)], axis=1)
        ids = rows[rows["slice"] == name].sort_values("row")["trade_id"].to_numpy()
        slices[name] = frame.set_axis(ids)
    return slices


def features_of(ticks: pd.DataFrame, open_seconds, lookback: int) -> np.ndarray:
    index = pp.Ticks(ticks["ts"].to_numpy(), ticks[list(bc.PRICE_FIELDS)].to_numpy())
    open_ts = START + np.round(np.asarray(open_seconds, dtype=float) * 1000).astype(np.int64)
    out = np.empty((len(open_ts), 5 + lookback), np.int64)
    return pp.feature_matrix(index, open_ts, lookback, out) / 10**index.decimals


# ---------------------------------------------------------------- feature rules


def test_price_fields_come_from_the_last_tick_at_or_before_the_open_minus_its_mid():
    ticks = tick_frame([0, 1, 2], [100.0, 101.5, 107.25])
    (row,) = features_of(ticks, [2.5], lookback=2)
    # at 2.5 s the last tick is the one at 2 s: mid 107.25, high 107.25 + 3, low 100 - 4, mid_open 100
    assert row[:5].tolist() == [-1.0, 1.0, 100 - 107.25, 3.0, 100 - 4 - 107.25]
    assert row[5:].tolist() == [101.5 - 107.25, 100 - 107.25]


def test_a_gap_carries_the_last_tick_before_it_and_nothing_after_the_open_counts():
    ticks = tick_frame([0, 1, 10, 11], [100, 103, 120, 200])
    (row,) = features_of(ticks, [10.5], lookback=5)
    # lags at 9.5 … 5.5 s all fall in the gap after the tick at 1 s; the tick at 11 s is after the open
    assert row[5:].tolist() == [103 - 120] * 5


def test_lags_are_exact_millisecond_offsets_from_the_open_not_ticks_or_calendar_seconds():
    ticks = tick_frame([0, 1.0, 1.999, 2.0, 2.001, 3.0, 3.5], [10, 11, 12, 13, 14, 15, 16])
    on_the_second, after, before = features_of(ticks, [4.0, 4.001, 3.999], lookback=3)
    assert (on_the_second[5:] + 16).tolist() == [15, 13, 11]  # 3.0, 2.0, 1.0: a tick exactly at t - j s counts
    assert (after[5:] + 16).tolist() == [15, 14, 11]  # 3.001, 2.001, 1.001
    assert (before[5:] + 16).tolist() == [14, 12, 10]  # 2.999, 1.999, 0.999


def test_every_column_means_the_same_lag_for_every_trade():
    ticks = tick_frame(np.arange(0, 30, 3), 100 + np.arange(10))  # one tick every 3 s
    early, late = features_of(ticks, [9.5, 27.5], lookback=9)
    # column mid_lag_js is the mid at open - j s, however many ticks that skips
    assert (early[5:] + 103).tolist() == [102, 102, 102, 101, 101, 101, 100, 100, 100]
    assert (late[5:] + 109).tolist() == [108, 108, 108, 107, 107, 107, 106, 106, 106]
    assert len(early) == len(bc.feature_names(9))


def test_the_lookup_table_agrees_with_a_binary_search_on_bursty_ticks():
    rng = np.random.default_rng(7)
    gaps = np.where(rng.random(5000) < 0.1, rng.integers(1000, 60_000, 5000), rng.integers(1, 40, 5000))
    ts = START + np.cumsum(gaps)
    index = pp.Ticks(ts, np.full((len(ts), 5), 100.0))
    times = rng.integers(ts[0], ts[-1] + 1, (300, 50))
    assert (index.last_at_or_before(times) == np.searchsorted(ts, times, side="right") - 1).all()
    assert (index.last_at_or_before(ts) == np.arange(len(ts))).all()


@pytest.mark.parametrize("decimals", range(7))
def test_csv_text_is_exact_and_as_short_as_python_would_write_it(decimals):
    rng = np.random.default_rng(decimals)
    values = rng.integers(-(10 ** (decimals + 7)) + 1, 10 ** (decimals + 7), (40, 9))
    values[:, :3] = rng.integers(-(10**decimals), 10**decimals, (40, 3))  # around zero
    values[0, :4] = [0, 1, -1, 10**decimals]
    text = pp.csv_text(values, decimals).decode()

    def python(v: int) -> str:
        whole, part = divmod(abs(v), 10**decimals)
        fraction = f"{part:0{decimals}d}".rstrip("0") if decimals else ""
        return ("-" if v < 0 else "") + str(whole) + (f".{fraction}" if fraction else "")

    assert text == "".join(",".join(map(python, row)) + "\n" for row in values.tolist())


def test_csv_text_refuses_numbers_it_cannot_write():
    with pytest.raises(ValueError, match="more than 7 digits"):
        pp.csv_text(np.array([[10**10]]), 3)


# ---------------------------------------------------------------- the script end to end


def test_outputs_of_a_small_batch(tmp_path):
    small_batch(tmp_path / "batch")
    result = run_script("--input-dir", tmp_path / "batch", "--output-dir", tmp_path / "out", *SMALL)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("preprocess: 40 trades: train 28, validation 2, test 4 rows of 15 features; "
                                    "dropped 0 without full look-back, 1 crossing a split boundary, 5 embargoed; "
                                    "test slice 1.1 independent windows")
    out = tmp_path / "out"
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == sorted(
        ["train", "validation", "test", "test/features", "metadata", "train/train-00000.csv",
         "validation/validation-00000.csv", "test/features/test_features-00000.csv", pp.TEST_TRADES_CSV,
         pp.FEATURES_JSON, pp.ROWS_CSV])  # one shard; nothing else: no staging left behind
    train_lines = slice_text(out, pp.TRAIN_CSV).splitlines()
    assert len(train_lines) == 28 and all(len(line.split(",")) == 16 for line in train_lines)
    assert [line.split(",")[0] for line in train_lines] == ["0", "1"] * 14
    assert all(len(line.split(",")) == 15 for line in slice_text(out, pp.TEST_FEATURES_CSV).splitlines())
    # test: trades 36-39 (opened at 164.5 s …); 34 and 35 opened within 11 s of the boundary at 153.1 s
    assert (out / pp.TEST_TRADES_CSV).read_text().splitlines() == [
        "trade_id,open_ms,close_ms,label,pnl",
        *(f"T{i:03d},{START + 20_500 + 4000 * i},{START + 21_500 + 4000 * i},{i % 2},{5.0 if i % 2 else -5.0}"
          for i in range(36, 40))]
    rows = (out / pp.ROWS_CSV).read_text().splitlines()
    assert rows[:2] == ["slice,row,trade_id", "train,0,T000"] and rows[-1] == "test,3,T039"
    meta = json.loads((out / pp.FEATURES_JSON).read_text())
    assert meta["feature_names"] == bc.feature_names(10) and meta["lookback_seconds"] == 10
    assert meta["counts"] == {"trades": 40, "train": 28, "validation": 2, "test": 4}
    # 28-30 are embargoed after 129.7 s; 33 still runs at 153.1 s (purged); 34-35 embargoed after it
    assert meta["dropped"] == {"short_lookback": 0, "crosses_split_boundary": 1, "embargoed": 5}
    assert meta["split"]["validation_starts"] == "2026-01-05T00:02:09.700Z"  # 20.5 s + 70 % of 156 s
    assert meta["split"]["test_starts"] == "2026-01-05T00:02:33.100Z"  # … + 85 %
    assert meta["positive_rate"] == {"train": 0.5, "validation": 0.5, "test": 0.5}
    assert meta["market_time"] == {"lookback_seconds": 10, "longest_trade_seconds": 1.0, "dependence_seconds": 11.0,
                                   "hours": {"train": 0.03, "validation": 0.001, "test": 0.003},
                                   "independent_windows": {"train": 9.8, "validation": 0.4, "test": 1.1},
                                   "min_test_windows": 0.0}


def test_trades_without_full_lookback_are_dropped_and_counted(tmp_path):
    rng = np.random.default_rng(2)
    ticks = tick_frame(np.arange(0, 301), 100 + np.round(np.cumsum(rng.normal(0, 1, 301)), 2))
    opens = np.r_[9.0, 9.999, 10.0, 14 + 4 * np.arange(70)]  # a tick at or before open - 10 s from 10.0 s on
    write_batch(tmp_path / "batch", ticks, trade_frame(opens, opens + 0.5, np.arange(73) % 2))
    pp.preprocess(tmp_path / "batch", tmp_path / "out", lookback_seconds=10, min_test_windows=0, workers=1,
                  log=lambda m: None)
    meta = json.loads((tmp_path / "out" / pp.FEATURES_JSON).read_text())
    assert meta["dropped"]["short_lookback"] == 2
    assert pd.read_csv(tmp_path / "out" / pp.ROWS_CSV)["trade_id"].iloc[0] == "T002"


def test_trades_whose_lifetime_reaches_a_later_slice_are_purged_and_the_next_ones_embargoed(tmp_path):
    rng = np.random.default_rng(3)
    ticks = tick_frame(np.arange(0, 1001), 100 + np.round(np.cumsum(rng.normal(0, 1, 1001)), 2))
    opens = 20.5 + 8 * np.arange(120)  # 952 s of opens: boundaries at 686.9 s and 829.7 s
    closes = opens + 1
    closes[82] = 686.899  # closes just before validation starts: kept
    closes[81] = 686.9  # still open when validation starts: purged (the longest trade, 18.4 s)
    closes[83] = 690.0  # crosses into validation: purged
    closes[100] = 835.0  # a validation trade crossing into test: purged
    write_batch(tmp_path / "batch", ticks, trade_frame(opens, closes, np.arange(120) % 2))
    meta = pp.preprocess(tmp_path / "batch", tmp_path / "out", lookback_seconds=10, min_test_windows=0, workers=1,
                         log=lambda m: None)
    # dependence span 10 + 18.4 s: 84-86 open within it after 686.9 s, 102-104 after 829.7 s (embargoed)
    assert meta["market_time"]["dependence_seconds"] == 28.4
    assert meta["dropped"] == {"short_lookback": 0, "crosses_split_boundary": 3, "embargoed": 6}
    assert meta["counts"] == {"trades": 120, "train": 82, "validation": 14, "test": 15}
    assert meta["split"]["validation_starts"] == str(bc.format_ts([START + 686_900])[0])
    assert meta["split"]["test_starts"] == str(bc.format_ts([START + 829_700])[0])
    rows = pd.read_csv(tmp_path / "out" / pp.ROWS_CSV)
    assert set(rows["trade_id"]) == {f"T{i:03d}" for i in range(120)} - {
        f"T{i:03d}" for i in (81, 83, 100, 84, 85, 86, 102, 103, 104)}
    assert rows.groupby("slice")["row"].apply(list).to_dict() == {
        "train": list(range(82)), "validation": list(range(14)), "test": list(range(15))}
    assert rows["trade_id"].is_monotonic_increasing  # open-time order, slice after slice


def test_a_test_slice_too_short_for_a_verdict_says_how_much_would_do(tmp_path):
    small_batch(tmp_path / "batch")
    result = run_script("--input-dir", tmp_path / "batch", "--output-dir", tmp_path / "out", "--lookback-seconds", 10,
                        "--min-test-windows", 20)
    assert result.returncode == 1 and not (tmp_path / "out").exists()
    assert result.stderr.splitlines() == [
        # 36-39 open over 12 s; windows of 10 + 1 s; 20 × 11 s / 15 % + 2 embargoes ≈ 24.8 min at 40 trades / 156 s
        "preprocess: error: not enough market time for a verdict: the test slice covers 12 s, 1.1 independent "
        "windows of 11 s (look-back plus the longest trade), and a verdict needs 20; export batches of about "
        "382 trades (about 25 min of market time at this batch's 923 trades per hour); this batch is no evidence "
        "either way"]


@pytest.mark.parametrize("column, value", [("direction", "SELL"), ("stop_distance", "7.0"),
                                           ("limit_distance", "9.0")])
def test_a_batch_whose_trades_differ_in_what_the_features_do_not_say_is_refused(tmp_path, column, value):
    batch = small_batch(tmp_path / "batch")
    set_field(batch, bc.TRANSACTIONS_FILE, 12, column, value)
    result = run_script("--input-dir", batch, "--output-dir", tmp_path / "out", *SMALL)
    assert result.returncode == 1 and not (tmp_path / "out").exists()
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"preprocess: error: transactions.csv: {column} varies within the batch (") and \
        f"in row 1, {value} in row 12" in line and "contradictory labels" in line, line


# ---------------------------------------------------------------- a real synthetic batch


def reference_features(prices: pd.DataFrame, open_ts: int, lookback: int) -> np.ndarray:
    """The rules read literally with pandas: forward-fill the ticks up to the open onto the lag times."""
    history = prices[prices["ts"] <= open_ts].set_index("ts")
    mids = (history["bid"] + history["offer"]) / 2
    now = history.iloc[-1]
    lag_times = open_ts - 1000 * np.arange(1, lookback + 1)
    lagged = mids.reindex(lag_times, method="ffill")
    return np.r_[now[list(bc.PRICE_FIELDS)].to_numpy(dtype=float), lagged.to_numpy()] - mids.iloc[-1]


@dataclass
class BatchFrames:
    """A read batch with its columns as DataFrames, for the pandas reference and for re-rendering."""

    meta: dict
    prices: pd.DataFrame
    trades: pd.DataFrame


@pytest.fixture(scope="module")
def synthetic_output(make_batch, tmp_path_factory):
    batch = make_batch()
    out = tmp_path_factory.mktemp("synthetic") / "out"
    pp.preprocess(batch, out, min_test_windows=0, workers=1, log=lambda m: None)
    read = bc.read_batch(batch)
    return BatchFrames(read.meta, pd.DataFrame(read.prices), pd.DataFrame(read.trades)), out


def test_features_of_a_synthetic_batch_equal_a_literal_pandas_reference(synthetic_output):
    batch, out = synthetic_output
    slices = read_slices(out, bc.LOOKBACK_SECONDS)
    trades = batch.trades.set_index("trade_id")
    rows = pd.concat(slices.values())
    assert len(rows) > 1850  # 2,000 trades less the purged and embargoed ones
    for trade_id, row in rows.iloc[::7].iterrows():  # every 7th row keeps the slow reference quick
        expected = reference_features(batch.prices, trades.at[trade_id, "open_ts"], bc.LOOKBACK_SECONDS)
        assert np.allclose(row.to_numpy()[1:], expected, rtol=0, atol=1e-9), trade_id
        assert row["label"] == trades.at[trade_id, "label"]


def test_parallel_writers_write_the_same_files(synthetic_output, tmp_path, monkeypatch):
    batch, out = synthetic_output
    monkeypatch.setattr(pp, "MIN_ROWS_PER_WORKER", 100)
    pp.preprocess(make_batch_dir(batch, tmp_path), tmp_path / "out", min_test_windows=0, workers=3,
                      log=lambda m: None)
    for name in (pp.TRAIN_CSV, pp.VALIDATION_CSV, pp.TEST_FEATURES_CSV):
        assert slice_text(tmp_path / "out", name) == slice_text(out, name), name
    for name in (pp.TEST_TRADES_CSV, pp.ROWS_CSV):
        assert (tmp_path / "out" / name).read_bytes() == (out / name).read_bytes(), name


def test_a_failing_forked_writer_fails_the_step_and_leaves_no_output(synthetic_output, tmp_path, monkeypatch, capfd):
    batch, _ = synthetic_output
    monkeypatch.setattr(pp, "MIN_ROWS_PER_WORKER", 100)
    write_part = pp.write_part

    def fail_in_the_second_writer(source, part, path, report):
        if path.name.endswith(".part1"):
            raise RuntimeError("disk full")
        write_part(source, part, path, report)

    monkeypatch.setattr(pp, "write_part", fail_in_the_second_writer)
    with pytest.raises(ChildProcessError, match=r"^1 of 2 forked feature writers failed$"):
        pp.preprocess(make_batch_dir(batch, tmp_path), tmp_path / "out", min_test_windows=0, workers=3,
                      log=lambda m: None)
    assert "preprocess: feature writer 2: RuntimeError: disk full" in capfd.readouterr().err
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == [tmp_path / "batch"]  # nor staging


def make_batch_dir(batch: BatchFrames, tmp_path: Path, prices: pd.DataFrame | None = None,
                   shard_trades: int = bc.SHARD_TRADES) -> Path:
    files = bc.render_batch(bucket="bkt", epic=batch.meta["epic"], batch_id=batch.meta["batch_id"],
                            prices=batch.prices if prices is None else prices, trades=batch.trades,
                            bot_settings=batch.meta["bot"], shard_trades=shard_trades)
    return bc.write_batch_dir(files, tmp_path / "batch")


def test_shards_shared_out_among_instances_give_the_files_of_one_whole_run(synthetic_output, tmp_path):
    """Seven shards over three 'instances' (each with every third shard, as ShardedByS3Key may share them out)
    writing into one output, as their uploads land side by side: the slices are those of the unsharded run."""
    batch, out = synthetic_output
    sharded = make_batch_dir(batch, tmp_path, shard_trades=300)
    shards = sorted((sharded / bc.PRICES_DIR).iterdir())
    assert len(shards) == 7
    for instance in range(3):
        share = tmp_path / f"instance-{instance}"
        share.mkdir()
        for shard in shards[instance::3]:
            shutil.copy(shard, share / shard.name)
        pp.preprocess(sharded, tmp_path / "out", prices_dir=share, min_test_windows=0, workers=1,
                      log=lambda m: None)
    for name in (pp.TRAIN_CSV, pp.VALIDATION_CSV, pp.TEST_FEATURES_CSV):
        assert len(pp.slice_files(tmp_path / "out", name)) > 1
        assert slice_text(tmp_path / "out", name) == slice_text(out, name), name
    for name in (pp.TEST_TRADES_CSV, pp.ROWS_CSV, pp.FEATURES_JSON):
        assert (tmp_path / "out" / name).read_bytes() == (out / name).read_bytes(), name


def test_shards_in_forked_workers_write_the_files_of_one_and_a_failing_worker_fails_the_step(
        synthetic_output, tmp_path, monkeypatch, capfd):
    batch, out = synthetic_output
    sharded = make_batch_dir(batch, tmp_path, shard_trades=300)
    pp.preprocess(sharded, tmp_path / "out", min_test_windows=0, workers=3, log=lambda m: None)  # 7 shards, 3 workers
    for name in (pp.TRAIN_CSV, pp.VALIDATION_CSV, pp.TEST_FEATURES_CSV):
        assert slice_text(tmp_path / "out", name) == slice_text(out, name), name
    read_shard = bc.read_shard

    def fail_on_the_second_shard(prices_dir, meta, shard, columns):
        if shard["file"].endswith("part-00001.csv"):  # the second worker's first shard
            raise RuntimeError("disk full")
        return read_shard(prices_dir, meta, shard, columns)

    monkeypatch.setattr(bc, "read_shard", fail_on_the_second_shard)
    with pytest.raises(ChildProcessError, match=r"^1 of 2 forked shard workers failed$"):
        pp.preprocess(sharded, tmp_path / "again", min_test_windows=0, workers=3, log=lambda m: None)
    assert "preprocess: shard worker 2: RuntimeError: disk full" in capfd.readouterr().err
    assert not (tmp_path / "again").exists()


def test_a_forked_worker_dies_with_the_script_when_the_script_is_killed():
    """kill -9 of the script (what the engine does at MaxRuntimeInSeconds) ends its forked workers too."""
    import psutil

    script = ("import sys, time; from processing import preprocess as pp; "
              "print(pp._forked(lambda: time.sleep(60), 'worker'), flush=True); time.sleep(60)")
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    worker = psutil.Process(int(parent.stdout.readline()))
    assert worker.ppid() == parent.pid and worker.is_running()
    parent.kill()
    parent.wait(timeout=10)
    wait_until(lambda: not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE, timeout=10,
               what="the forked worker to die with the script")


def test_a_shard_that_is_not_the_batchs_is_refused(synthetic_output, tmp_path):
    batch, _ = synthetic_output
    sharded = make_batch_dir(batch, tmp_path, shard_trades=300)
    share = tmp_path / "share"
    share.mkdir()
    (share / "part-00099.csv").write_text("ts\n")
    with pytest.raises(bc.BatchError, match=r"part-00099.csv: not a shard of batch .*; give the job this batch's "
                                            r"prices manifest"):
        pp.preprocess(sharded, tmp_path / "out", prices_dir=share, min_test_windows=0, log=lambda m: None)


def test_no_lookahead_prices_after_t_do_not_change_features_of_trades_opened_by_t(synthetic_output, tmp_path):
    batch, out = synthetic_output
    cutoff = int(batch.trades["open_ts"].iloc[1000])
    prices = batch.prices.copy()
    later = prices["ts"] > cutoff
    shift = np.round(np.random.default_rng(5).uniform(-40, 40, later.sum()), 2)
    for field in bc.PRICE_FIELDS:
        prices.loc[later, field] += shift
    pp.preprocess(make_batch_dir(batch, tmp_path, prices), tmp_path / "out", min_test_windows=0, workers=1,
                  log=lambda m: None)
    before = pd.concat(read_slices(out, bc.LOOKBACK_SECONDS).values())
    after = pd.concat(read_slices(tmp_path / "out", bc.LOOKBACK_SECONDS).values())
    opened = batch.trades.set_index("trade_id").loc[before.index, "open_ts"]
    early, late = before.index[opened <= cutoff], before.index[opened > cutoff]
    assert len(early) > 850 and len(late) > 850
    pd.testing.assert_frame_equal(after.loc[early], before.loc[early])
    assert (after.loc[late] != before.loc[late]).any(axis=1).mean() > 0.9  # the perturbation does reach features


def test_the_script_runs_from_a_copy_of_the_processing_folder(make_batch, tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    for name in ("preprocess.py", "batch_contract.py"):
        shutil.copy(ROOT / "processing" / name, code / name)
    result = subprocess.run([sys.executable, str(code / "preprocess.py"), "--input-dir", make_batch(),
                             "--output-dir", tmp_path / "out", "--min-test-windows", "0"], capture_output=True,
                            text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    assert slice_text(tmp_path / "out", pp.TRAIN_CSV)


# ---------------------------------------------------------------- bad input


def edit_rows(batch: Path, name: str, edit) -> None:
    """Rewrite one CSV of a batch, edit(header, rows) -> (header, rows), and record it in batch.json."""
    header, *rows = (batch / name).read_text().splitlines(keepends=True)
    header, rows = edit(header, rows)
    replace_file(batch, name, (header + "".join(rows)).encode(), len(rows))


def replace_file(batch: Path, name: str, data: bytes, rows: int) -> None:
    """Write one file of a batch and record its checksum and row count in batch.json."""
    (batch / name).write_bytes(data)
    meta = json.loads((batch / bc.BATCH_JSON_FILE).read_text())
    meta["files"][name] = {"rows": rows, "sha256": bc.sha256(data)}
    (batch / bc.BATCH_JSON_FILE).write_text(json.dumps(meta))


def set_field(batch: Path, name: str, row: int, column: str, value: str) -> None:
    """Set one field of data row `row` (1-based, as error messages count)."""
    columns = bc.PRICE_COLUMNS if name == PRICES else bc.TRADE_COLUMNS

    def edit(header, rows):
        fields = rows[row - 1].rstrip("\n").split(",")
        fields[columns.index(column)] = value
        return header, [*rows[: row - 1], ",".join(fields) + "\n", *rows[row:]]

    edit_rows(batch, name, edit)


PRICES, TRADES = f"{bc.PRICES_DIR}/{bc.shard_file(0)}", bc.TRANSACTIONS_FILE  # the small batch has one shard


def not_utf8(batch: Path) -> None:
    data = (batch / TRADES).read_bytes()
    replace_file(batch, TRADES, data.replace(b"BUY", b"B\xdcY", 1), data.count(b"\n") - 1)


BAD_INPUTS = {  # case: (how to break the small batch, what the one line must say)
    "missing file": (lambda b: (b / PRICES).unlink(), "prices/part-00000.csv: missing"),
    "checksum mismatch": (lambda b: (b / PRICES).open("a").write("x\n"), f"{PRICES}: sha256 does not match"),
    "wrong header": (lambda b: edit_rows(b, PRICES, lambda h, r: (h.replace("bid,offer", "offer,bid"), r)),
                     "prices/part-00000.csv: header is"),
    "non-numeric price": (lambda b: set_field(b, PRICES, 5, "bid", "1O0.5"),
                          "prices/part-00000.csv: column bid: row 5: '1O0.5' is not a number"),
    "infinite price": (lambda b: set_field(b, PRICES, 6, "high", "inf"),
                       "prices/part-00000.csv: column high: row 6: not a finite number"),
    "missing field": (lambda b: edit_rows(b, PRICES, lambda h, r: (h, [*r[:3], r[3].rsplit(",", 1)[0] + "\n", *r[4:]])),
                      "prices/part-00000.csv: row 4: 10 fields, expected 11"),
    "malformed timestamp": (lambda b: set_field(b, TRADES, 9, "open_ts", "2026-01-05T00:10:00.000Z0"),
                            "transactions.csv: column open_ts: row 9: timestamp '2026-01-05T00:10:00.000Z0' is not"),
    "not UTF-8": (not_utf8, "transactions.csv: not UTF-8 text"),
    "non-positive price": (lambda b: set_field(b, PRICES, 3, "low", "0"), f"{PRICES}: row 3: low is not a positive"),
    "bid above offer": (lambda b: set_field(b, PRICES, 7, "bid", "999"), f"{PRICES}: row 7: bid is above offer"),
    "unsorted rows": (lambda b: edit_rows(b, PRICES, lambda h, r: (h, [*r[:3], r[4], r[3], *r[5:]])),
                      "prices/part-00000.csv: row 5: ticks are not ordered by ts"),
    "duplicated rows": (lambda b: edit_rows(b, PRICES, lambda h, r: (h, [*r[:8], r[7], *r[8:]])),
                        "prices/part-00000.csv: row 9: duplicated tick timestamp"),
    "trade outside the price coverage": (lambda b: set_field(b, TRADES, 40, "close_ts", "2026-01-05T00:03:20.001Z"),
                                         "transactions.csv: row 40: trade lies outside the price coverage"),
    "empty batch": (lambda b: edit_rows(b, TRADES, lambda h, r: (h, [])), "transactions.csv: no trades"),
    "too few trades to split": (lambda b: edit_rows(b, TRADES, lambda h, r: (h, r[:5])),
                                "transactions.csv: too few trades left to split: 5 trades"),
    "too few trades with look-back": (lambda b: edit_rows(b, TRADES, lambda h, r: (h, r[:2])),
                                      "2 are not enough for three slices; export batches with more trades (the "
                                      "streamer's or the demo's --batch-size)"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_fails_with_one_line_naming_the_file_and_writes_nothing(case, tmp_path):
    batch = small_batch(tmp_path / "batch")
    breaks, message = BAD_INPUTS[case]
    breaks(batch)
    result = run_script("--input-dir", batch, "--output-dir", tmp_path / "out", *SMALL)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("preprocess: error: ") and message in lines[0], lines[0]
    assert not (tmp_path / "out").exists()


SMALL_BLOCKS = 150  # bytes: a row or two of prices.csv per block


@pytest.mark.parametrize("case", [case for case in BAD_INPUTS if not case.startswith("too few")])
def test_read_a_block_at_a_time_a_problem_names_the_row_of_the_file(case, tmp_path, monkeypatch):
    monkeypatch.setattr(bc, "READ_BLOCK_BYTES", SMALL_BLOCKS)
    batch = small_batch(tmp_path / "batch")
    breaks, message = BAD_INPUTS[case]
    breaks(batch)
    with pytest.raises(bc.BatchError, match=re.escape(message)):
        bc.read_batch(batch)


def test_read_a_block_at_a_time_a_batch_is_what_one_read_gives_and_keeps_the_columns_asked_for(tmp_path,
                                                                                                   monkeypatch):
    batch = small_batch(tmp_path / "batch")
    whole = bc.read_batch(batch)
    monkeypatch.setattr(bc, "READ_BLOCK_BYTES", SMALL_BLOCKS)
    blocks = bc.read_batch(batch)
    for name in ("prices", "trades"):
        one, other = getattr(whole, name), getattr(blocks, name)
        assert one.keys() == other.keys() and all(np.array_equal(one[c], other[c]) for c in one)
    assert list(bc.read_batch(batch, price_columns=("ts", "bid")).prices) == ["ts", "bid"]


def test_an_unwritable_output_is_one_line_and_leaves_no_staging(tmp_path):
    batch = small_batch(tmp_path / "batch")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "train").write_text("a file where a folder must go")
    result = run_script("--input-dir", batch, "--output-dir", tmp_path / "out", *SMALL)
    errors = [line for line in result.stderr.splitlines() if line.startswith("preprocess: error: ")]
    assert result.returncode == 1 and len(errors) == 1 and result.stderr.strip().endswith(errors[0]), result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["train"]
