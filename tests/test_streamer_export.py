"""`livetrain stream` as a subprocess against MongoDB (wire) and S3 (moto server): batches, kill -9 at every
export stage, an S3 outage, SIGTERM, and a replay."""

from __future__ import annotations

import json
import signal
import tempfile
from pathlib import Path

import pytest
from streamer_helpers import STOP_WITHIN_S, StreamProcess, database_uri, tick_times

from infra.local.services import wait_until
from processing.batch_contract import (
    BATCH_JSON_FILE,
    MANIFEST_FILE,
    PRICE_COLUMNS,
    PRICES_DIR,
    PRICES_MANIFEST_SUFFIX,
    TRANSACTIONS_FILE,
    format_ts,
    manifest,
    read_batch,
    render_batch,
    write_batch_dir,
)
from streamer.exporter import CRASH_HOOK_VARIABLE
from streamer.store import Store

EPIC = "CS.D.BITCOIN.CFD.IP"
BUCKET = "livetrain-data"
FILES = (f"{PRICES_DIR}/part-00000.csv", TRANSACTIONS_FILE, BATCH_JSON_FILE, MANIFEST_FILE + PRICES_MANIFEST_SUFFIX,
         MANIFEST_FILE)  # in write order; a streamed batch is one shard
FAST = ("--warmup-seconds", "60", "--max-lifetime", "120", "--stop-distance", "20", "--limit-distance", "20",
        "--directions", "BOTH", "--open-every", "2")


@pytest.fixture
def bucket(aws):
    s3 = aws.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    return s3


def stream_args(mongo_uri, mongo_db, endpoint_url, *extra, source="sim", batch_size=40):
    return ("stream", "--source", source, "--speed", "max", "--batch-size", str(batch_size),
            "--mongo-uri", database_uri(mongo_uri, mongo_db.name), "--bucket", BUCKET,
            "--s3-endpoint-url", endpoint_url, *FAST, *extra)


def batch_objects(s3, batch_id: str, epic: str = EPIC) -> dict[str, list[bytes]]:
    """Every version of every object of a batch, oldest first."""
    prefix = f"batches/{epic}/{batch_id}/"
    versions = s3.list_object_versions(Bucket=BUCKET, Prefix=prefix).get("Versions", [])
    objects: dict[str, list[bytes]] = {}
    for version in sorted(versions, key=lambda v: v["LastModified"]):
        body = s3.get_object(Bucket=BUCKET, Key=version["Key"], VersionId=version["VersionId"])["Body"].read()
        objects.setdefault(version["Key"].removeprefix(prefix), []).append(body)
    return objects


def check_exported(s3, mongo_db, batch_size: int, epic: str = EPIC) -> list[dict]:
    """Every batch of the epic committed, valid, written once, equal to a re-render; every closed trade of the
    epic in exactly one."""
    store = Store(mongo_db, epic)
    batches = list(mongo_db.batches.find({"epic": epic}).sort("seq", 1))
    assert batches and {b["state"] for b in batches} == {"committed"}
    exported: list[str] = []
    for batch in batches:
        objects = batch_objects(s3, batch["batch_id"], epic)
        assert sorted(objects) == sorted(FILES)
        assert len(objects[MANIFEST_FILE]) == 1, "the manifest (the pipeline's trigger) lands once"
        assert all(len(set(versions)) == 1 for versions in objects.values()), "a re-export wrote other bytes"
        files = {name: versions[0] for name, versions in objects.items()}
        assert json.loads(files[MANIFEST_FILE]) == manifest(BUCKET, epic, batch["batch_id"])
        with tempfile.TemporaryDirectory() as directory:
            content = read_batch(write_batch_dir(files, Path(directory, "batch")))  # checks each file's sha256
        rerendered = render_batch(bucket=BUCKET, epic=epic, batch_id=batch["batch_id"],
                                  prices=store.batch_prices(batch), trades=store.batch_trades(batch),
                                  bot_settings=batch["bot"])
        assert rerendered == files
        assert len(content.trades["trade_id"]) == batch_size
        exported += content.trades["trade_id"].tolist()
    assert len(exported) == len(set(exported)), "a trade is in two batches"
    last = (batches[-1]["last_open_ts"], batches[-1]["last_trade_id"])
    claimed = [d["trade_id"] for d in mongo_db.trades.find({"epic": epic}) if (d["open_ts"], d["trade_id"]) <= last]
    assert sorted(exported) == sorted(claimed), "a closed trade is in no batch"
    return batches


@pytest.mark.slow
def test_kill_9_at_every_export_stage_then_restart_finishes_the_same_batch(run_cli, mongo_uri, mongo_db, aws,
                                                                            bucket):
    args = stream_args(mongo_uri, mongo_db, aws.endpoint_url)
    written = []
    for stage in ("claimed", *FILES):
        result = run_cli(*args, env={CRASH_HOOK_VARIABLE: stage}, timeout=120)
        assert result.returncode == -signal.SIGKILL, result.stderr
        first = mongo_db.batches.find_one({"seq": 1})
        assert first["state"] != "committed"
        written += [stage] if stage != "claimed" else []
        assert sorted(batch_objects(bucket, first["batch_id"])) == sorted(written), f"after a crash at {stage}"
    unfinished = mongo_db.batches.count_documents({"state": {"$ne": "committed"}})
    result = run_cli(*args, "--max-batches", unfinished + 1, timeout=120)
    assert result.returncode == 0, result.stderr
    batches = check_exported(bucket, mongo_db, batch_size=40)
    assert len(batches) == unfinished + 1


@pytest.mark.slow
def test_one_process_streams_several_epics_each_with_its_own_batches_and_a_kill_9_loses_none(
        run_cli, mongo_uri, mongo_db, aws, bucket):
    ether = "CS.D.ETHUSD.CFD.IP"
    args = stream_args(mongo_uri, mongo_db, aws.endpoint_url, "--epic", f"{EPIC},{ether}",
                       "--epic", "IX.D.FTSE.DAILY.IP")  # a list and a repeat
    crashed = run_cli(*args, env={CRASH_HOOK_VARIABLE: TRANSACTIONS_FILE}, timeout=120)  # the first export to get there
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert mongo_db.batches.count_documents({"state": {"$ne": "committed"}}) >= 1
    result = run_cli(*args, "--max-batches", "2", timeout=120)
    assert result.returncode == 0, result.stderr
    assert "streaming CS.D.BITCOIN.CFD.IP, CS.D.ETHUSD.CFD.IP, IX.D.FTSE.DAILY.IP from sim" in result.stderr
    bids = {}
    for epic in (EPIC, ether, "IX.D.FTSE.DAILY.IP"):
        first, _ = check_exported(bucket, mongo_db, batch_size=40, epic=epic)
        assert mongo_db.checkpoints.find_one({"_id": epic})["ts"] > 0
        bids[epic] = tuple(Store(mongo_db, epic).batch_prices(first)["bid"].head(20))
    assert len(set(bids.values())) == 3  # markets of their own


@pytest.mark.parametrize("epics, message", [("A,,B", "an empty epic"), ("A,B,A", "A given more than once")])
def test_bad_epic_lists_are_one_line(run_cli, mongo_uri, mongo_db, aws, epics, message):
    result = run_cli(*stream_args(mongo_uri, mongo_db, aws.endpoint_url, "--epic", epics), timeout=60)
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0 and message in result.stderr


def test_batches_are_valid_and_cover_their_look_back(run_cli, mongo_uri, mongo_db, aws, bucket):
    args = stream_args(mongo_uri, mongo_db, aws.endpoint_url, "--max-batches", "2", "--warmup-seconds", "600")
    result = run_cli(*args, timeout=120)
    assert result.returncode == 0, result.stderr
    batches = check_exported(bucket, mongo_db, batch_size=40)
    assert len(batches) == 2
    for batch in batches:  # from the last tick at or before (first open − 600 s)
        ts = Store(mongo_db, EPIC).batch_prices(batch)["ts"]
        assert ts.iat[0] <= batch["first_open_ts"] - 600_000 < ts.iat[1]
    assert "committed to s3://livetrain-data/batches/CS.D.BITCOIN.CFD.IP/" in result.stderr
    assert "ticks stored" in result.stderr  # the status line


@pytest.mark.slow
def test_s3_outage_during_export_is_retried_and_the_batch_lands_once(mongo_uri, mongo_db, aws, bucket, tmp_path):
    from moto.server import ThreadedMotoServer

    outage = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)  # shares moto's state in-process
    outage.start()
    host, port = outage.get_host_and_port()
    stream = StreamProcess(stream_args(mongo_uri, mongo_db, f"http://{host}:{port}", "--max-batches", "2",
                                       "--speed", "300"), tmp_path)
    try:
        wait_until(lambda: "streaming CS.D.BITCOIN.CFD.IP from sim" in stream.output, timeout=60, what="start")
        outage.stop()
        wait_until(lambda: "attempt 2 failed" in stream.output, timeout=60, what="two failed exports")
        ticks_during_outage = len(tick_times(mongo_db))
        wait_until(lambda: len(tick_times(mongo_db)) > ticks_during_outage + 100, timeout=30,
                   what="ticks still flowing while S3 is down")
        assert mongo_db.batches.count_documents({"state": "committed"}) == 0
        outage = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        outage.start()
        assert stream.wait(timeout=90) == 0, stream.output
    finally:
        outage.stop()
    assert "S3 error" in stream.output
    check_exported(bucket, mongo_db, batch_size=40)


def test_sigterm_stops_subscribing_flushes_and_exits_cleanly(mongo_uri, mongo_db, aws, bucket, tmp_path):
    stream = StreamProcess(stream_args(mongo_uri, mongo_db, aws.endpoint_url, "--speed", "50"), tmp_path)
    wait_until(lambda: len(tick_times(mongo_db)) > 20, timeout=60, what="ticks")
    code, _ = stream.terminate(timeout=30)
    assert code == 0, stream.output
    assert "SIGTERM received" in stream.output
    assert mongo_db.checkpoints.find_one({"_id": EPIC})["ts"] == tick_times(mongo_db)[-1]  # the buffer was flushed


@pytest.mark.slow
def test_replay_exports_complete_batches_and_a_second_run_stores_nothing_new(run_cli, mongo_uri, mongo_db, aws,
                                                                             bucket, tmp_path):
    from streamer.market import MarketSettings, MarketSimulator

    prices = MarketSimulator(MarketSettings(), 5, EPIC).ticks(3000)
    replay = tmp_path / "ticks.csv"
    prices.assign(ts=format_ts(prices["ts"].to_numpy())).to_csv(replay, index=False, columns=list(PRICE_COLUMNS))
    args = stream_args(mongo_uri, mongo_db, aws.endpoint_url, "--replay-file", replay, source="replay",
                       batch_size=500)
    result = run_cli(*args, timeout=120)
    assert result.returncode == 0, result.stderr
    closed = mongo_db.trades.count_documents({})
    assert len(tick_times(mongo_db)) == 3000
    assert len(check_exported(bucket, mongo_db, batch_size=500)) == closed // 500 >= 2
    again = run_cli(*args, timeout=120)
    assert again.returncode == 0, again.stderr
    assert (len(tick_times(mongo_db)), mongo_db.trades.count_documents({})) == (3000, closed)


def test_user_mistakes_are_one_line(run_cli, mongo_uri, mongo_db, aws):
    args = ("stream", "--source", "replay", "--mongo-uri", database_uri(mongo_uri, mongo_db.name),
            "--s3-endpoint-url", aws.endpoint_url)
    no_bucket = run_cli(*args, "--replay-file", "x.csv", "--bucket", "missing-bucket")
    no_file = run_cli(*args)  # said before S3 is asked about the (missing) bucket
    no_mongo = run_cli("stream", "--source", "sim", "--mongo-uri", "mongodb://127.0.0.1:9/x?serverSelectionTimeoutMS=300",
                       env={"MONGODB_URI": ""})
    not_a_uri = run_cli("stream", "--source", "sim", "--mongo-uri", "notamongouri")
    for result, message in ((no_bucket, "bucket missing-bucket"), (no_file, "--source replay needs --replay-file"),
                            (no_mongo, "cannot reach MongoDB at 127.0.0.1:9"),
                            (not_a_uri, "--mongo-uri (or MONGODB_URI) is not a MongoDB URI (it must begin with "
                                        "mongodb:// or mongodb+srv://); pass one like mongodb://HOST:27017/DATABASE")):
        assert result.returncode == 2
        assert result.stderr.strip().splitlines() == [result.stderr.strip()]
        assert message in result.stderr


def test_max_batches_counts_in_total_across_restarts(run_cli, mongo_uri, mongo_db, aws, bucket):
    """Under a supervisor that restarts the streamer, --max-batches 1 means one batch, not one per run."""
    args = stream_args(mongo_uri, mongo_db, aws.endpoint_url, "--max-batches", "1")
    first = run_cli(*args, timeout=120)
    assert first.returncode == 0, first.stderr
    again = run_cli(*args, timeout=120)
    assert again.returncode == 0, again.stderr
    assert mongo_db.batches.count_documents({}) == 1
    assert "--max-batches 1 reached: 1 batches of CS.D.BITCOIN.CFD.IP committed in this database already" \
        in again.stderr
    assert "in total" in run_cli("stream", "--help").stdout


def write_replay(path: Path, prices, bad_lines: dict[int, str] | None = None) -> Path:
    """A ticks CSV of `prices`, with the given file lines (2 = the first row) replaced."""
    lines = prices.assign(ts=format_ts(prices["ts"].to_numpy())).to_csv(
        index=False, columns=list(PRICE_COLUMNS), lineterminator="\n").splitlines()
    for number, text in (bad_lines or {}).items():
        lines[number - 1] = text
    path.write_text("\n".join(lines) + "\n")
    return path


def test_replayed_bad_rows_are_counted_and_named_and_an_all_bad_file_fails(run_cli, mongo_uri, mongo_db, aws,
                                                                           bucket, tmp_path):
    from streamer.market import MarketSettings, MarketSimulator

    prices = MarketSimulator(MarketSettings(), 5, EPIC).ticks(51)
    row = prices.assign(ts=format_ts(prices["ts"].to_numpy())).astype(str).to_dict("records")
    line = lambda i, **changed: ",".join({**row[i - 2], **changed}[c] for c in PRICE_COLUMNS)  # noqa: E731
    replay = write_replay(tmp_path / "ticks.csv", prices,
                          {10: line(10, bid="abc"), 20: "garbage", 30: line(30, ts=row[0]["ts"])})
    args = stream_args(mongo_uri, mongo_db, aws.endpoint_url, "--replay-file", replay, source="replay")
    result = run_cli(*args, timeout=120)
    assert result.returncode == 0, result.stderr
    assert len(tick_times(mongo_db)) == 48
    assert "3 bad rows skipped (line 10: bid is not a finite number; line 20: not 11 fields; line 30: ticks are " \
           "not ordered by ts)" in result.stderr.splitlines()[-1]  # the final status line
    other = run_cli(*stream_args(mongo_uri, mongo_db, aws.endpoint_url, "--replay-file", replay, "--epic", "OTHER",
                                 source="replay"), timeout=120)
    assert other.returncode == 0 and f"{replay}: no row for epic OTHER; check --epic" in other.stderr
    all_bad = write_replay(tmp_path / "bad.csv", prices.head(2), {2: line(2, bid="nan"), 3: line(3, offer="1")})
    failed = run_cli(*stream_args(mongo_uri, mongo_db, aws.endpoint_url, "--replay-file", all_bad, source="replay"),
                     timeout=120)
    assert failed.returncode == 2 and "Traceback" not in failed.stderr
    assert [line for line in failed.stderr.splitlines() if line.startswith("livetrain:")] == [
        f"livetrain: error: --replay-file {all_bad}: all 2 rows for {EPIC} break the batch contract (line 2: bid is "
        f"not a finite number; line 3: bid is above offer); fix the file"]


def test_sigterm_while_an_s3_write_hangs_stops_within_seconds(moto_server, mongo_uri, mongo_db, aws, bucket, tmp_path):
    """S3 answers the bucket check, then holds every request: the export in progress must not hold a SIGTERM
    (before, the streamer waited 30 s for it); the next run finishes the batch."""
    import http.server
    import threading
    import urllib.request

    held, release = threading.Event(), threading.Event()

    class HangingS3(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):
            if self.path.rstrip("/") != f"/{BUCKET}":
                return self.hang()
            with urllib.request.urlopen(urllib.request.Request(moto_server.endpoint_url + self.path,
                                                               method="HEAD")) as answer:
                self.send_response(answer.status)
            self.end_headers()

        def hang(self):
            held.set()
            release.wait(60)

        do_GET = do_PUT = do_POST = hang

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), HangingS3)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stream = StreamProcess(stream_args(mongo_uri, mongo_db, f"http://127.0.0.1:{server.server_port}", "--speed", "50"),
                           tmp_path)
    try:
        assert held.wait(60), stream.output  # an export is writing to S3, which does not answer
        code, took = stream.terminate(timeout=60)
    finally:
        release.set()
        server.shutdown()
    assert code == 0 and "Traceback" not in stream.output, stream.output
    assert took < STOP_WITHIN_S, f"stopped {took:.1f} s after SIGTERM\n{stream.output}"
    assert "stopping without waiting for the export in progress" in stream.output
