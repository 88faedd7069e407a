"""`livetrain synth-batch` and `livetrain stream`: the streamer's commands.

Parses the command line into settings and calls the streamer. Only the standard library and stdlib-only
modules are imported here; handlers import what they need.
"""

from __future__ import annotations

import argparse
import os

from lambdas.epics import parse_epics
from livetrain.arguments import positive_float, positive_int
from livetrain.config import MARKETS
from livetrain.errors import UserError
from streamer.trading import BotSettings, parse_directions

IG_DEMO_API = "https://demo-api.ig.com/gateway/deal"


def speed(text: str) -> float | None:
    """A replay/simulation speed: a positive factor, or `max` (None: as fast as possible)."""
    return None if text == "max" else positive_float(text)


def non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value


def add_bot_arguments(parser: argparse.ArgumentParser, config) -> None:
    """The paper-trading bot's policy, shared by every command that trades."""
    bot = parser.add_argument_group("paper-trading bot")
    bot.add_argument("--directions", choices=("BUY", "SELL", "BOTH"), default=config.directions,
                     help=f"which side the bot trades (default {config.directions})")
    bot.add_argument("--stop-distance", type=positive_float, default=config.stop_distance,
                     help=f"points (default {config.stop_distance:g})")
    bot.add_argument("--limit-distance", type=positive_float, default=config.limit_distance,
                     help=f"points (default {config.limit_distance:g})")
    bot.add_argument("--max-lifetime", type=positive_float, default=config.max_lifetime_s,
                     help=f"seconds before an open trade closes at the market (default {config.max_lifetime_s:g})")
    bot.add_argument("--open-every", type=non_negative_float, default=config.open_every_s,
                     help=f"seconds between openings; 0 opens on every tick (default {config.open_every_s:g})")


def bot_settings(args: argparse.Namespace) -> BotSettings:
    return BotSettings(directions=parse_directions(args.directions), stop_distance=args.stop_distance,
                       limit_distance=args.limit_distance, max_lifetime_s=args.max_lifetime,
                       open_every_s=args.open_every)


def add_commands(commands, config) -> None:
    synth = commands.add_parser(
        "synth-batch", help="write a valid batch of simulated ticks and closed paper trades",
        description="Simulate a market, paper-trade it and write one batch (batch contract) to a directory.")
    synth.add_argument("--out", required=True, help="directory to create for the batch")
    synth.add_argument("--trades", type=positive_int, default=config.batch_size,
                       help=f"closed trades (default {config.batch_size})")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--market", choices=MARKETS, default="planted-signal")
    synth.add_argument("--epic", default=config.epic)
    synth.add_argument("--bucket", default=config.bucket, help="bucket named in the manifest's prefix")
    synth.add_argument("--batch-id", help="default: synth-<market>-<seed>-<trades>")
    add_bot_arguments(synth, config)
    synth.set_defaults(handler=run_synth_batch)
    add_stream_command(commands, config)


def add_stream_command(commands, config) -> None:
    from processing.batch_contract import LOOKBACK_SECONDS

    stream = commands.add_parser(
        "stream", help="stream a market into MongoDB, paper-trade it and export batches of closed trades to S3",
        description="Read a market (IG, the simulator or a replayed ticks file), store ticks and paper trades in "
                    "MongoDB and export every --batch-size closed trades as a batch to "
                    "s3://BUCKET/batches/EPIC/BATCH_ID/ (batch.manifest last). Runs until stopped (SIGTERM, "
                    "Ctrl-C), --max-batches, or the end of a replay; a restart resumes where it stopped.")
    stream.add_argument("--source", choices=("ig", "sim", "replay"), required=True)
    stream.add_argument("--epic", action="append", metavar="EPIC[,EPIC…]",
                        help=f"market, or several, comma-separated or repeated: one process follows them all, "
                             f"with batches, checkpoints and --max-batches per epic (default {config.epic})")
    stream.add_argument("--mongo-uri", default=os.environ.get("MONGODB_URI"),
                        help="MongoDB URI, database from its path (default livetrain); default $MONGODB_URI")
    stream.add_argument("--bucket", default=config.bucket, help=f"S3 bucket for batches (default {config.bucket})")
    stream.add_argument("--s3-endpoint-url", help="S3 endpoint, e.g. a local moto server")
    stream.add_argument("--batch-size", type=positive_int, default=config.batch_size,
                        help=f"closed trades per batch (default {config.batch_size})")
    stream.add_argument("--max-batches", type=positive_int,
                        help="stop once the epic has this many committed batches in this MongoDB database, in "
                             "total: batches of earlier runs count, so a restart never exports more")
    stream.add_argument("--warmup-seconds", type=non_negative_float, default=float(LOOKBACK_SECONDS),
                        help=f"seconds of stored ticks before the first trade opens, so that trades have their "
                             f"look-back (default {LOOKBACK_SECONDS})")
    stream.add_argument("--speed", type=speed, default=1.0,
                        help="sim/replay: times real time, or `max` for as fast as possible (default 1)")
    stream.add_argument("--replay-file",
                        help="replay: a ticks CSV with the columns of a batch's price shards (prices/part-NNNNN.csv)")
    stream.add_argument("--market", choices=MARKETS, default="planted-signal",
                        help="sim: market model (default planted-signal)")
    stream.add_argument("--seed", type=int, default=0, help="sim: random seed (default 0)")
    stream.add_argument("--ig-secret-id", help="ig: Secrets Manager secret with ig_identifier, ig_password, "
                        "ig_api_key (default: the IG_IDENTIFIER, IG_PASSWORD, IG_API_KEY environment variables)")
    stream.add_argument("--ig-api-url", default=IG_DEMO_API, help="ig: REST API base (default IG's demo)")
    stream.add_argument("--endpoint-name", metavar="NAME",
                        help="live scoring: ask this SageMaker endpoint for a score at each trade's opening "
                             "(inference id = trade id) and write closed scored trades' labels as Model Monitor "
                             f"ground truth under s3://BUCKET/{config.pipeline_name}/groundtruth/ (default: off)")
    stream.add_argument("--runtime-endpoint-url", metavar="URL",
                        help="SageMaker Runtime endpoint, e.g. the local endpoint server (default: AWS, or "
                             "$AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME)")
    add_bot_arguments(stream, config)
    stream.set_defaults(handler=run_stream, region=config.region, monitor_prefix=config.pipeline_name,
                        default_epic=config.epic)


def run_stream(args: argparse.Namespace) -> int:
    if not args.mongo_uri:
        raise UserError("no MongoDB: pass --mongo-uri URI or set MONGODB_URI")
    if args.source == "replay" and not args.replay_file:
        raise UserError("--source replay needs --replay-file FILE (a ticks CSV with the columns of a batch's price "
                        "shards)")
    epics = parse_epics(args.epic or [args.default_epic])
    if len(epics) > 1 and args.source == "replay":
        raise UserError(f"--source replay follows one epic, not {len(epics)}: run one streamer per replayed epic")
    if len(epics) > 1 and args.endpoint_name:
        raise UserError(f"--endpoint-name scores one epic's trades (an endpoint serves one epic's model), not "
                        f"{len(epics)}: run a streamer with --endpoint-name per scored epic")
    import pymongo.errors

    from streamer.run import StreamSettings, run_stream

    settings = StreamSettings(
        source=args.source, epics=epics, mongo_uri=args.mongo_uri, bucket=args.bucket, region=args.region,
        s3_endpoint_url=args.s3_endpoint_url, batch_size=args.batch_size, max_batches=args.max_batches,
        warmup_seconds=args.warmup_seconds, speed=args.speed, replay_file=args.replay_file, market=args.market,
        seed=args.seed, ig_secret_id=args.ig_secret_id, ig_api_url=args.ig_api_url, bot=bot_settings(args),
        endpoint_name=args.endpoint_name, runtime_endpoint_url=args.runtime_endpoint_url,
        monitor_prefix=args.monitor_prefix)
    try:
        return run_stream(settings)
    except pymongo.errors.PyMongoError as exc:
        raise UserError(f"MongoDB failed ({type(exc).__name__}: {' '.join(str(exc).split())[:300]}); "
                        f"check --mongo-uri or MONGODB_URI and that the server is running") from None


def run_synth_batch(args: argparse.Namespace) -> int:
    from processing.batch_contract import read_meta, read_trades
    from streamer.market import MarketSettings
    from streamer.synth import write_synthetic_batch

    bot = bot_settings(args)
    market = MarketSettings(market=args.market)
    batch_id = args.batch_id or f"synth-{args.market}-{args.seed}-{args.trades}"
    out = write_synthetic_batch(args.out, args.trades, args.seed, market, bot, args.epic, bucket=args.bucket,
                                batch_id=batch_id)
    meta = read_meta(out)
    labels = read_trades(out, meta)["label"]
    print(f"wrote batch {batch_id} to {out}: {len(labels):,} trades, positive rate {labels.mean():.3f}, ticks "
          f"{meta['ticks']['first']} … {meta['ticks']['last']} in {len(meta['price_shards'])} price shard(s)")
    return 0
