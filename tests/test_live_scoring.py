"""Live scoring (streamer/scoring.py) through the local endpoint with boto3's sagemaker-runtime client, ground truth
in moto's S3: answers kept for the trade's closing, an endpoint down or slow never blocks the bot, gaps counted;
and `livetrain stream --endpoint-name` end to end."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import boto3
import pytest
from botocore.config import Config
from streamer_helpers import database_uri
from test_endpoint import train_model

from pipelines.local.endpoint import EndpointServer, StaticResolver
from streamer.market import MarketSettings, MarketSimulator
from streamer.scoring import LiveScorer, ScoringSettings, model_version
from streamer.sources import frame_ticks

NAME = "livetrain"
BUCKET = "livetrain-data"


@pytest.fixture(scope="module")
def model_tar(tmp_path_factory):
    return train_model(tmp_path_factory.mktemp("live-model"), seed=3)


@pytest.fixture(scope="module")
def ticks():
    return list(frame_ticks(MarketSimulator(MarketSettings(), 0, "EPIC").ticks(1500)))


class SlowResolver(StaticResolver):
    def resolve(self, name):
        time.sleep(1.5)
        return super().resolve(name)


def scorer_for(url: str, s3, timeout_s: float = 1.0) -> LiveScorer:
    runtime = boto3.client("sagemaker-runtime", endpoint_url=url, region_name="us-east-1", config=Config(
        connect_timeout=timeout_s, read_timeout=timeout_s, retries={"total_max_attempts": 1}))
    settings = ScoringSettings(NAME, BUCKET, "livetrain", timeout_s=timeout_s, max_pending=4,
                               groundtruth_every_s=3600)
    return LiveScorer(settings, runtime, s3)


def trade(ticks, index: int):
    return SimpleNamespace(trade_id=f"EPIC-{ticks[index].ts}-BUY", open_ts=ticks[index].ts)


def feed(scorer: LiveScorer, ticks, opens: list[int]) -> float:
    """Ticks to the scorer, trades opened at `opens`; returns the longest time one call took."""
    slowest = 0.0
    for index, tick in enumerate(ticks):
        started = time.perf_counter()
        scorer.on_tick(tick)
        if index in opens:
            scorer.on_open(trade(ticks, index))
        slowest = max(slowest, time.perf_counter() - started)
    return slowest


def wait_for_answers(scorer: LiveScorer, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while any(f is not None and not f.done() for f in scorer._pending.values()) and time.monotonic() < deadline:
        time.sleep(0.02)


def ground_truth(s3) -> list[dict]:
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="livetrain/groundtruth/").get("Contents", [])]
    return [json.loads(line) for key in keys for line in s3.get_object(Bucket=BUCKET, Key=key)["Body"].iter_lines()]


def test_trades_are_scored_through_the_endpoint_and_their_labels_become_ground_truth(aws, model_tar, ticks):
    s3 = aws.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    with EndpointServer(StaticResolver({NAME: str(model_tar)})) as server:
        scorer = scorer_for(server.url, s3)
        feed(scorer, ticks, opens=[10, 1000, 1100, 1200])  # the first has no 600 s look-back yet
        wait_for_answers(scorer)
        closed = [scorer.on_close({"trade_id": trade(ticks, i).trade_id, "label": i % 2})
                  for i in (10, 1000, 1100, 1200)]
        closed.append(scorer.on_close({"trade_id": "EPIC-1-BUY", "label": 1}))  # opened before this run
        scorer.close()
    assert [c["scored"] for c in closed] == [False, True, True, True, False]
    assert all(0 <= c["score"] <= 1 and c["predicted_label"] in (0, 1) for c in closed[1:4])
    assert scorer.gaps["no_lookback"] == 1 and scorer.gaps["opened_before_start"] == 1 and scorer.scored == 3
    records = ground_truth(s3)
    assert sorted((r["eventMetadata"]["eventId"], r["groundTruthData"]["data"]) for r in records) == sorted(
        (trade(ticks, i).trade_id, str(i % 2)) for i in (1000, 1100, 1200))
    assert {r["groundTruthData"]["encoding"] for r in records} == {"CSV"} and records[0]["eventVersion"] == "0"
    key = s3.list_objects_v2(Bucket=BUCKET, Prefix="livetrain/groundtruth/")["Contents"][0]["Key"]
    assert len(key.split("/")) == 7  # livetrain/groundtruth/yyyy/mm/dd/hh/<file>.jsonl


@pytest.mark.parametrize("state", ["down", "slow"])
def test_an_endpoint_down_or_slow_never_blocks_the_bot_and_every_gap_is_counted(aws, model_tar, ticks, state):
    s3 = aws.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    opens = list(range(1000, 1400, 20))  # 20 trades: more than the 4 requests allowed to wait
    with EndpointServer(SlowResolver({NAME: str(model_tar)})) as server:
        url = server.url
        if state == "down":
            server.stop()
        scorer = scorer_for(url, s3, timeout_s=0.5)
        slowest = feed(scorer, ticks, opens)
        closed = [scorer.on_close({"trade_id": trade(ticks, i).trade_id, "label": 1}) for i in opens]
        wait_for_answers(scorer)
        scorer.close()
    assert slowest < 0.2, "the bot waited on the endpoint"
    assert not any(c["scored"] for c in closed) and scorer.scored == 0 and ground_truth(s3) == []
    assert sum(scorer.gaps.values()) == len(opens) and scorer.gaps["skipped"] > 0
    assert scorer.gaps["late"] + scorer.gaps["failed"] + scorer.gaps["skipped"] == len(opens)
    assert "unscored 20" in scorer.status()


def test_the_model_version_is_the_deploy_lambdas_config_suffix():
    assert model_version("livetrain-v12") == "12" and model_version("custom-config") == "custom-config"


def test_stream_with_live_scoring_stores_each_answer_with_its_trade(run_cli, mongo_uri, mongo_db, aws, model_tar):
    s3 = aws.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    with EndpointServer(StaticResolver({NAME: str(model_tar)})) as server:
        result = run_cli("stream", "--source", "sim", "--speed", "300", "--batch-size", "20", "--max-batches", "1",
                         "--mongo-uri", database_uri(mongo_uri, mongo_db.name), "--bucket", BUCKET,
                         "--s3-endpoint-url", aws.endpoint_url, "--endpoint-name", NAME,
                         "--runtime-endpoint-url", server.url, timeout=120)
    assert result.returncode == 0, result.stderr
    trades = list(mongo_db.trades.find())
    scored = [t for t in trades if t["scored"]]
    assert len(trades) >= 20 and len(scored) >= len(trades) // 2, result.stderr
    assert all(0 <= t["score"] <= 1 and t["predicted_label"] in (0, 1) for t in scored)
    batch = s3.get_object(Bucket=BUCKET, Key=f"batches/CS.D.BITCOIN.CFD.IP/{mongo_db.batches.find_one()['batch_id']}/"
                                             "transactions.csv")["Body"].read().decode()
    assert "score" not in batch.splitlines()[0], "the batch contract is unchanged"
    assert {r["eventMetadata"]["eventId"] for r in ground_truth(s3)} == {t["trade_id"] for t in scored}
    assert "live scoring: scored" in result.stderr
