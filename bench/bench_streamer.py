"""Streamer: ticks/s through the bot with 10k open trades (vs a naive baseline), memory over a long replay, the
time from a batch's last closed trade to its manifest in S3, and ticks/s of one process following 1, 10 and 50
epics at once.

Against the local stack's daemons (infra.local.services): the MongoDB-wire server and moto's server. The
baseline is what the seed did: every tick scans every open trade, and every write is its own request
(insert_one per tick and per opened trade, update_one per closed trade).
Sizes: LIVETRAIN_BENCH_REPLAY_TICKS (default 100000) ticks for the replay; LIVETRAIN_BENCH_EPICS_SECONDS (default
30) seconds of streaming for each epic count.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.measure import table

EPIC = "CS.D.BITCOIN.CFD.IP"
OPEN_TRADES = 10_000
MEASURED_TICKS = 5_000
BASELINE_TICKS = 1_000
BATCH_SIZE = 10_000
REPLAY_TICKS = int(os.environ.get("LIVETRAIN_BENCH_REPLAY_TICKS", 100_000))
EPICS_SECONDS = float(os.environ.get("LIVETRAIN_BENCH_EPICS_SECONDS", 30))
EPIC_COUNTS = (1, 10, 50)
BIN = Path(sys.executable).parent


@contextlib.contextmanager
def local_services(state_dir: Path):
    """The local stack's MongoDB-wire server and moto server (daemons); yields (mongo_uri, s3_endpoint, s3)."""
    import boto3

    from infra.local.services import start_mongo, start_moto

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(name, "bench")
    mongo = start_mongo(state_dir)
    try:
        moto = start_moto(state_dir)
        try:
            s3 = boto3.client("s3", endpoint_url=moto.url, region_name="us-east-1")
            s3.create_bucket(Bucket="livetrain-data")
            yield mongo.url, moto.url, s3
        finally:
            moto.stop()
    finally:
        mongo.stop()


def sim_ticks(count: int, seed: int = 0) -> list:
    from streamer.market import MarketSettings, MarketSimulator
    from streamer.sources import frame_ticks

    return list(frame_ticks(MarketSimulator(MarketSettings(), seed, EPIC).ticks(count)))


# ---------------------------------------------------------------- ticks/s with 10k open trades

WIDE = dict(stop_distance=5_000.0, limit_distance=5_000.0, max_lifetime_s=float(OPEN_TRADES), open_every_s=0)


def bot_rate(db, ticks) -> tuple[float, int]:
    """The streamer's bot and store: warm up to 10k open trades, then time the next ticks (flushes included)."""
    from streamer.bot import Bot
    from streamer.store import Store
    from streamer.trading import BotSettings

    store = Store(db, EPIC)
    bot = Bot(store, BotSettings(**WIDE), warmup_s=0)

    def feed(part):
        for tick in part:
            bot.on_tick(tick)
            if store.flush_due():
                store.flush()
        store.flush()

    feed(ticks[:OPEN_TRADES])
    open_before = bot.open_trades
    start = time.perf_counter()
    feed(ticks[OPEN_TRADES:OPEN_TRADES + MEASURED_TICKS])
    return MEASURED_TICKS / (time.perf_counter() - start), open_before


def naive_rate(db, ticks) -> float:
    """The seed's way: scan every open trade on every tick; one request per write."""
    from dataclasses import asdict

    from streamer.trading import BUY, Trade

    open_trades = [Trade(trade_id=f"{EPIC}-{t.ts}-BUY", epic=EPIC, direction=BUY, open_ts=t.ts, open_price=t.offer,
                         stop_distance=WIDE["stop_distance"], limit_distance=WIDE["limit_distance"],
                         expires_ts=t.ts + int(WIDE["max_lifetime_s"] * 1000)) for t in ticks[:OPEN_TRADES]]
    db.trades.insert_many([{"_id": t.trade_id, **asdict(t)} for t in open_trades])  # the same 10k, not timed
    start = time.perf_counter()
    for tick in ticks[OPEN_TRADES:OPEN_TRADES + BASELINE_TICKS]:
        db.ticks.insert_one({"epic": EPIC, **tick._asdict()})
        still_open = []
        for trade in open_trades:
            price = tick.bid if trade.direction == BUY else tick.offer
            above_target = price >= trade.take_profit
            below_stop = price <= trade.stop_loss
            reason = "TAKE_PROFIT" if above_target else "STOP_LOSS" if below_stop else \
                "EXPIRED" if tick.ts >= trade.expires_ts else None
            if reason:
                db.trades.update_one({"_id": trade.trade_id}, {"$set": trade.close(tick.ts, price, reason)})
            else:
                still_open.append(trade)
        trade = Trade(trade_id=f"{EPIC}-{tick.ts}-BUY", epic=EPIC, direction=BUY, open_ts=tick.ts,
                      open_price=tick.offer, stop_distance=WIDE["stop_distance"],
                      limit_distance=WIDE["limit_distance"], expires_ts=tick.ts + int(WIDE["max_lifetime_s"] * 1000))
        db.trades.insert_one({"_id": trade.trade_id, **asdict(trade)})
        open_trades = [*still_open, trade]
    return BASELINE_TICKS / (time.perf_counter() - start)


def throughput(uri: str) -> list[dict]:
    import pymongo

    client = pymongo.MongoClient(uri)
    ticks = sim_ticks(OPEN_TRADES + MEASURED_TICKS)
    print(f"  ticks/s with {OPEN_TRADES:,} open trades: the streamer's bot …", file=sys.stderr, flush=True)
    rate, open_trades = bot_rate(client["bench_bot"], ticks)
    print("  … and the naive baseline", file=sys.stderr, flush=True)
    baseline = naive_rate(client["bench_naive"], ticks)
    client.close()
    return [{"measure": f"ticks/s through the bot, {open_trades:,} open trades", "streamer": f"{rate:,.0f}",
             "naive baseline": f"{baseline:,.0f}", "ratio": f"{rate / baseline:.1f}x", "target": "≥ 1,000/s"}]


# ---------------------------------------------------------------- memory over a long replay

def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def replay_memory(uri: str, endpoint: str, workdir: Path) -> list[dict]:
    from processing.batch_contract import PRICE_COLUMNS, format_ts
    from streamer.market import MarketSettings, MarketSimulator

    path = workdir / "replay.csv"
    prices = MarketSimulator(MarketSettings(), 11, EPIC).ticks(REPLAY_TICKS)
    prices.assign(ts=format_ts(prices["ts"].to_numpy())).to_csv(path, index=False, columns=list(PRICE_COLUMNS))
    del prices
    command = [str(BIN / "livetrain"), "stream", "--source", "replay", "--replay-file", str(path), "--speed", "max",
               "--mongo-uri", uri + "bench_replay", "--s3-endpoint-url", endpoint, "--batch-size", str(BATCH_SIZE)]
    print(f"  replaying {REPLAY_TICKS:,} ticks, RSS sampled every 0.5 s …", file=sys.stderr, flush=True)
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    samples = []
    while process.poll() is None:
        rss = rss_mb(process.pid)
        if rss is not None:
            samples.append((time.perf_counter() - start, rss))
        time.sleep(0.5)
    seconds = time.perf_counter() - start
    if process.returncode != 0 or len(samples) < 8:
        raise RuntimeError(f"replay exited with {process.returncode} after {seconds:.0f} s")
    quarter = len(samples) // 4
    early = max(rss for _, rss in samples[quarter:2 * quarter])  # after start-up
    late = max(rss for _, rss in samples[3 * quarter:])
    return [{"measure": f"RSS over a replay of {REPLAY_TICKS:,} ticks ({seconds:.0f} s, "
                        f"{REPLAY_TICKS / seconds:,.0f} ticks/s end to end)",
             "2nd quarter MB": f"{early:.0f}", "last quarter MB": f"{late:.0f}", "growth": f"{late / early:.2f}x",
             "peak MB": f"{max(rss for _, rss in samples):.0f}"}]


# ---------------------------------------------------------------- batch latency

def batch_latency(uri: str, endpoint: str, s3) -> list[dict]:
    """From the flush that lets a batch be claimed (all its trades closed) to its manifest in S3."""
    import pymongo

    from processing.batch_contract import MANIFEST_FILE, batch_key_prefix
    from streamer.bot import Bot
    from streamer.exporter import Exporter
    from streamer.run import s3_client
    from streamer.store import Store
    from streamer.trading import BotSettings

    store = Store(pymongo.MongoClient(uri, tz_aware=True)["bench_latency"], EPIC)
    settings = BotSettings(directions=("BUY", "SELL"), open_every_s=0, max_lifetime_s=60)  # 2 trades a tick
    bot = Bot(store, settings, warmup_s=600)
    exporter = Exporter(store, s3_client(endpoint, "us-east-1"), "livetrain-data", BATCH_SIZE, settings.as_dict())
    exporter.start()
    ticks = iter(sim_ticks(20_000, seed=3))
    print(f"  time from a {BATCH_SIZE:,}-trade batch's claim to its manifest …", file=sys.stderr, flush=True)
    try:
        while exporter.committed == 0:
            bot.on_tick(next(ticks))
            if bot.closed >= BATCH_SIZE:
                time.sleep(0.1)  # from here on, a live feed's pace: ~10 ticks/s
            if store.flush_due():
                store.flush()
                exporter.wake()
    finally:
        exporter.stop()
    batch = store.last_batch()
    s3.head_object(Bucket="livetrain-data", Key=batch_key_prefix(EPIC, batch["batch_id"]) + MANIFEST_FILE)
    latency = (batch["committed_at"] - batch["claimed_at"]).total_seconds()
    return [{"measure": f"a {BATCH_SIZE:,}-trade batch claimed → manifest in S3", "seconds": f"{latency:.2f}",
             "includes": "read from MongoDB, render, 4 puts (+ HEAD each); not the flush (≤ 0.25 s) before it",
             "seed": "polled every 10 s"}]


# ---------------------------------------------------------------- several epics in one process

def epics_throughput(uri: str, endpoint: str) -> list[dict]:
    """`livetrain stream --source sim --speed max` following n epics for EPICS_SECONDS: stored ticks per second
    (all epics together, from its first status line to its last) and its peak RSS, for each n."""
    import re
    import signal

    rows = []
    for count in EPIC_COUNTS:
        epics = ",".join([EPIC, *(f"SIM.D.MARKET{i:02d}.IP" for i in range(1, count))])
        command = [str(BIN / "livetrain"), "stream", "--source", "sim", "--speed", "max", "--epic", epics,
                   "--mongo-uri", f"{uri}bench_epics_{count}", "--s3-endpoint-url", endpoint,
                   "--batch-size", str(BATCH_SIZE)]
        print(f"  {count} epic(s) in one process for {EPICS_SECONDS:.0f} s …", file=sys.stderr, flush=True)
        with tempfile.TemporaryFile("w+") as log:
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)
            start, peak = time.perf_counter(), 0.0
            while time.perf_counter() - start < EPICS_SECONDS and process.poll() is None:
                peak = max(peak, rss_mb(process.pid) or 0.0)
                time.sleep(0.5)
            process.send_signal(signal.SIGTERM)
            if process.wait(timeout=60) != 0:
                raise RuntimeError(f"the streamer of {count} epics exited with {process.returncode}")
            log.seek(0)
            status = [(line[:23], int(match.group(1).replace(",", ""))) for line in log
                      if (match := re.search(r": ([\d,]+) ticks stored \(", line))]
        (first_at, first_ticks), (last_at, last_ticks) = status[0], status[-1]
        from datetime import datetime

        seconds = (datetime.fromisoformat(last_at) - datetime.fromisoformat(first_at)).total_seconds()
        rate = (last_ticks - first_ticks) / seconds
        rows.append({"epics in one process": count, "ticks/s, all epics": f"{rate:,.0f}",
                     "ticks/s per epic": f"{rate / count:,.0f}", "peak RSS MB": f"{peak:.0f}",
                     "ticks stored": f"{last_ticks:,}"})
    return rows


def main() -> None:
    with tempfile.TemporaryDirectory() as workdir, local_services(Path(workdir)) as (uri, endpoint, s3):
        print(table(epics_throughput(uri, endpoint)))
        rows = throughput(uri)
        print(table(rows))
        print(table(batch_latency(uri, endpoint, s3)))
        print(table(replay_memory(uri, endpoint, Path(workdir))))


if __name__ == "__main__":
    main()
