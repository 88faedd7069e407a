"""The batch contract: rendering is deterministic, writing is atomic, reading validates and round-trips."""

import json

import numpy as np
import pytest

from processing import batch_contract as bc
from streamer.market import MarketSettings
from streamer.synth import synthesize
from streamer.trading import BotSettings


@pytest.fixture(scope="module")
def frames():
    return synthesize(300, 3, MarketSettings(), BotSettings(), "EPIC", progress=None)


def render(frames, batch_id="b1", shard_trades=bc.SHARD_TRADES):
    prices, trades = frames
    return bc.render_batch(bucket="bkt", epic="EPIC", batch_id=batch_id, prices=prices, trades=trades,
                           bot_settings=BotSettings().as_dict(), shard_trades=shard_trades)


def test_files_in_write_order_with_the_manifest_last(frames):
    files = render(frames)
    assert list(files) == ["prices/part-00000.csv", "transactions.csv", "batch.json", "batch.manifest.prices",
                           "batch.manifest"]
    assert json.loads(files["batch.manifest"]) == [
        {"prefix": "s3://bkt/batches/EPIC/b1/"}, "transactions.csv", "batch.json"]
    assert json.loads(files["batch.manifest.prices"]) == [
        {"prefix": "s3://bkt/batches/EPIC/b1/prices/"}, "part-00000.csv"]
    assert files["prices/part-00000.csv"].startswith((",".join(bc.PRICE_COLUMNS) + "\n").encode())
    assert files["transactions.csv"].startswith((",".join(bc.TRADE_COLUMNS) + "\n").encode())


def test_rendering_is_deterministic_and_records_checksums(frames):
    first, second = render(frames), render(frames)
    assert first == second
    meta = json.loads(first["batch.json"])
    assert meta["files"]["prices/part-00000.csv"] == {"rows": len(frames[0]),
                                                      "sha256": bc.sha256(first["prices/part-00000.csv"])}
    assert meta["schema_version"] == bc.SCHEMA_VERSION and meta["bot"]["stop_distance"] == 100.0


@pytest.mark.parametrize("shard_trades", [bc.SHARD_TRADES, 100, 7])
def test_round_trip(frames, tmp_path, shard_trades):
    directory = bc.write_batch_dir(render(frames, shard_trades=shard_trades), tmp_path / "b1")
    batch = bc.read_batch(directory)
    prices, trades = frames
    assert batch.prices["ts"].tolist() == prices["ts"].tolist()  # the shards' own ticks are the series
    assert np.allclose(batch.prices["bid"], prices["bid"])
    assert batch.trades["trade_id"].tolist() == trades.sort_values("open_ts")["trade_id"].tolist()
    assert batch.trades["label"].sum() == trades["label"].sum()
    assert batch.meta["batch_id"] == "b1"
    assert len(batch.meta["price_shards"]) == -(-len(trades) // shard_trades)


def test_each_shard_holds_the_look_back_of_its_first_trade_and_the_open_of_its_last(frames, tmp_path):
    directory = bc.write_batch_dir(render(frames, shard_trades=100), tmp_path / "b1")
    meta = bc.read_meta(directory)
    opens = bc.read_trades(directory, meta)["open_ts"]
    first_tick = int(frames[0]["ts"].min())
    for shard in meta["price_shards"]:
        ts = bc.read_shard(directory, meta, shard, ("ts",))["ts"]
        first, end = shard["trades"]
        assert ts[0] <= max(opens[first] - 1000 * bc.LOOKBACK_SECONDS, first_tick) and ts[-1] >= opens[end - 1]
        assert len(ts) < len(frames[0]) / 2  # a shard, not the whole series


def test_a_batch_written_shard_by_shard_as_it_is_simulated_is_the_rendered_batch(tmp_path):
    from streamer.synth import write_synthetic_batch

    settings = (700, 5, MarketSettings(), BotSettings(), "EPIC")
    prices, trades = synthesize(*settings, chunk_ticks=1000, progress=None)  # (the chunk size moves the RNG)
    rendered = bc.write_batch_dir(bc.render_batch(bucket="bkt", epic="EPIC", batch_id="b1", prices=prices,
                                                  trades=trades, bot_settings=BotSettings().as_dict(),
                                                  shard_trades=200), tmp_path / "rendered")
    streamed = write_synthetic_batch(tmp_path / "streamed", *settings, bucket="bkt", batch_id="b1", shard_trades=200,
                                     chunk_ticks=1000, progress=None)
    files = sorted(p.relative_to(rendered) for p in rendered.rglob("*") if p.is_file())
    assert len([f for f in files if f.parts[0] == bc.PRICES_DIR]) == 4
    assert files == sorted(p.relative_to(streamed) for p in streamed.rglob("*") if p.is_file())
    for name in files:
        assert (streamed / name).read_bytes() == (rendered / name).read_bytes(), name


def test_write_refuses_an_existing_directory_and_leaves_nothing_behind_on_failure(frames, tmp_path):
    files = render(frames)
    bc.write_batch_dir(files, tmp_path / "b1")
    with pytest.raises(bc.BatchError, match="already exists"):
        bc.write_batch_dir(files, tmp_path / "b1")
    with pytest.raises(TypeError):
        bc.write_batch_dir({**files, "batch.json": None}, tmp_path / "b2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b1"]


def test_timestamps_round_trip_to_the_millisecond():
    ms = np.array([0, 1767571200123, 1767571200999, 4102444799999])
    text = bc.format_ts(ms)
    assert text[1] == "2026-01-05T00:00:00.123Z"
    assert bc.parse_ts(text, "x").tolist() == ms.tolist()


@pytest.mark.parametrize("bad", ["2026-01-05 00:00:00.123Z", "2026-01-05T00:00:00.123", "2026-13-05T00:00:00.123Z",
                                 "2026-01-05T00:00:00.12Z", ""])
def test_malformed_timestamps_name_the_place(bad):
    with pytest.raises(bc.BatchError, match=r"^where: "):
        bc.parse_ts(np.array(["2026-01-05T00:00:00.000Z", bad]), "where")


def test_feature_names():
    names = bc.feature_names()
    assert len(names) == 605 and names[:6] == ["bid", "offer", "mid_open", "high", "low", "mid_lag_1s"]
    assert names[-1] == "mid_lag_600s"
