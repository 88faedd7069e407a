"""`livetrain synth-batch` (and, later, `livetrain stream`): the streamer's commands.

Only the standard library is imported here; handlers import what they need.
"""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, not {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
    return value


def add_bot_arguments(parser: argparse.ArgumentParser) -> None:
    """The paper-trading bot's policy, shared by every command that trades."""
    bot = parser.add_argument_group("paper-trading bot")
    bot.add_argument("--directions", choices=("BUY", "SELL", "BOTH"), default="BUY",
                     help="which side the bot trades (default BUY)")
    bot.add_argument("--stop-distance", type=positive_float, default=100.0, help="points (default 100)")
    bot.add_argument("--limit-distance", type=positive_float, default=100.0, help="points (default 100)")
    bot.add_argument("--max-lifetime", type=positive_float, default=900.0,
                     help="seconds before an open trade closes at the market (default 900)")
    bot.add_argument("--open-every", type=float, default=30.0,
                     help="seconds between openings; 0 opens on every tick (default 30)")


def bot_settings(args: argparse.Namespace):
    from streamer.trading import BotSettings

    directions = ("BUY", "SELL") if args.directions == "BOTH" else (args.directions,)
    return BotSettings(directions=directions, stop_distance=args.stop_distance,
                       limit_distance=args.limit_distance, max_lifetime_s=args.max_lifetime,
                       open_every_s=args.open_every)


def add_commands(commands, config) -> None:
    synth = commands.add_parser(
        "synth-batch", help="write a valid batch of simulated ticks and closed paper trades",
        description="Simulate a market, paper-trade it and write one batch (batch contract) to a directory.")
    synth.add_argument("--out", required=True, help="directory to create for the batch")
    synth.add_argument("--trades", type=positive_int, default=10_000, help="closed trades (default 10000)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--market", choices=("random-walk", "planted-signal"), default="planted-signal")
    synth.add_argument("--epic", default=config.epic)
    synth.add_argument("--bucket", default=config.bucket, help="bucket named in the manifest's prefix")
    synth.add_argument("--batch-id", help="default: synth-<market>-<seed>-<trades>")
    add_bot_arguments(synth)
    synth.set_defaults(handler=run_synth_batch)


def run_synth_batch(args: argparse.Namespace) -> int:
    from processing.batch_contract import render_batch, write_batch_dir
    from streamer.market import MarketSettings
    from streamer.synth import synthesize

    bot = bot_settings(args)
    market = MarketSettings(market=args.market)
    batch_id = args.batch_id or f"synth-{args.market}-{args.seed}-{args.trades}"
    prices, trades = synthesize(args.trades, args.seed, market, bot, args.epic)
    files = render_batch(bucket=args.bucket, epic=args.epic, batch_id=batch_id, prices=prices,
                         trades=trades, bot_settings=bot.as_dict())
    out = write_batch_dir(files, args.out)
    print(f"wrote batch {batch_id} to {out}: {len(prices):,} ticks, {len(trades):,} trades, "
          f"positive rate {trades['label'].mean():.3f}")
    return 0
