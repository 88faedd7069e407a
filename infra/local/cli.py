"""`livetrain demo`, `backtest` and `local up|down|status`: the loop on one machine.

Only the standard library and the kernel are imported here."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

from livetrain.arguments import port_number, positive_int
from livetrain.config import MARKETS
from livetrain.errors import UserError


def add_commands(commands, config) -> None:
    demo = commands.add_parser(
        "demo", help="run the whole loop locally: market → batch → pipeline → registry → endpoint",
        description="Start the local stack as `livetrain local up` does (moto, a MongoDB-wire server, the SageMaker "
                    "Runtime endpoint; or use the one already running on --state-dir), stream "
                    "the simulated market until a batch lands, let EventBridge's rule run the pipeline, approve the "
                    "registered package, let the deploy Lambda bring the endpoint up, predict through boto3, and "
                    "write the execution report. Everything binds to 127.0.0.1; no AWS account is used.")
    demo.add_argument("--batch-size", type=positive_int, default=config.batch_size,
                      help=f"closed trades per batch (default {config.batch_size}: 30 s apart, their test slice holds "
                           "about 30 independent windows of market time, and a verdict needs 20)")
    demo.add_argument("--market", choices=MARKETS, default="planted-signal")
    demo.add_argument("--seed", type=int, default=0, help="the simulated market's seed")
    demo.add_argument("--continuous", action="store_true",
                      help="keep streaming: every batch retrains; a new package replaces the endpoint's model "
                           "only once approved; once a model serves, the market streams at 3,600x real time, every "
                           "trade scored live, and its live precision and lift are shown")
    demo.add_argument("--batches", type=positive_int, help="with --continuous: stop after this many batches")
    demo.add_argument("--no-approve", action="store_true", help="leave registered packages pending approval")
    demo.add_argument("--keep-running", action="store_true",
                      help="leave the local stack running at the end, as `livetrain local up` does, to explore it "
                           "with boto3, the AWS CLI or its console; `livetrain local down --state-dir DIR` stops it")
    demo.add_argument("--max-jobs", type=positive_int, default=config.max_jobs,
                      help=f"training jobs per tuning (default {config.max_jobs})")
    demo.add_argument("--max-parallel-jobs", type=positive_int, default=config.max_parallel_jobs,
                      help=f"default {config.max_parallel_jobs}")
    demo.add_argument("--timeout", type=positive_int, default=900, help="seconds to wait for a batch (default 900)")
    _add_run_folder(demo, "--state-dir", config, "demo", "its services' data, records and reports")
    demo.set_defaults(handler=_run_demo, config=config)

    local = commands.add_group(
        "local", help="the local stack as a background service: up, down, status",
        description="The local stack (moto, a MongoDB-wire server, the SageMaker Runtime endpoint, the event "
                    "dispatcher and the pipeline runner) as a background service with its state in one directory; "
                    "use it with boto3, the AWS CLI or the SageMaker SDK after exporting the lines `up` prints.")
    for name, help_text, handler in (
            ("up", "start it in the background; print the endpoints and the export lines", _local_up),
            ("down", "stop it and every process it started", _local_down),
            ("status", "whether it runs; its endpoints", _local_status)):
        action = local.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".")
        action.add_argument("--state-dir", type=Path, default=Path(config.state_dir) / "local",
                            help=f"its state directory (default {config.state_dir}/local)")
        action.set_defaults(handler=handler, config=config)
    console = local.add_parser(
        "console", help="serve the console (executions, steps, registry, approvals, endpoint) in the foreground",
        description="Serve a web page on 127.0.0.1 over the running local stack, through its SageMaker API: the "
                    "pipeline's executions and each run's steps, the model registry with Approve and Reject, and "
                    "the endpoint's serving version. `local up` serves one too (its URL is printed with the "
                    "export lines). Ctrl-C stops it.")
    console.add_argument("--state-dir", type=Path, default=Path(config.state_dir) / "local",
                         help=f"the running stack's state directory (default {config.state_dir}/local)")
    console.add_argument("--port", type=port_number, default=0, help="default: any free port")
    console.set_defaults(handler=_local_console, config=config)

    backtest = commands.add_parser(
        "backtest", help="does freshness pay? replay consecutive batches and score three policies on each next one",
        description="Run the pipeline on each of K consecutive batches (locally, approving what the gate registers) "
                    "and score, on each next batch's trades, three policies: retrain on every batch, keep the first "
                    "approved model (frozen), and no model (take every trade). Prints and plots precision and lift "
                    "per batch with 95 % block-bootstrap intervals, and the P&L of the trades each policy takes.")
    source = backtest.add_mutually_exclusive_group(required=True)
    source.add_argument("--batches-dir", type=Path, metavar="DIR",
                        help="a folder of batch directories (batch contract), taken in name order")
    source.add_argument("--market", choices=MARKETS, help="simulate K consecutive batches of this market")
    backtest.add_argument("--batches", type=positive_int, metavar="K", help="with --market: how many batches (≥ 2)")
    backtest.add_argument("--seed", type=int, default=0, help="with --market: the simulated market's seed (default 0)")
    backtest.add_argument("--batch-size", type=positive_int, default=config.batch_size,
                          help=f"with --market: closed trades per batch (default {config.batch_size})")
    backtest.add_argument("--json", type=Path, metavar="FILE", help="write the per-batch results as JSON")
    backtest.add_argument("--plot", type=Path, metavar="FILE", help="the plot (default: <out>/backtest.png)")
    backtest.add_argument("--max-jobs", type=positive_int, default=4,
                          help="training jobs per tuning (default 4: a backtest runs the pipeline K − 1 times)")
    backtest.add_argument("--max-parallel-jobs", type=positive_int, default=2, help="default 2")
    _add_run_folder(backtest, "--out", config, "backtest", "its batches, records and plot")
    backtest.set_defaults(handler=_run_backtest, config=config)


def _add_run_folder(parser: argparse.ArgumentParser, flag: str, config, command: str, holds: str) -> None:
    """A folder for one run, by default new under <state dir>/<command>/<UTC time>."""
    parser.add_argument(flag, type=Path,
                        default=Path(config.state_dir) / command / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"),
                        help=f"where the run keeps {holds} (default: a new folder under {config.state_dir}/{command})")


def _run_demo(args: argparse.Namespace) -> int:
    if args.batches and not args.continuous:
        raise UserError("--batches goes with --continuous: add --continuous, or drop --batches")
    from infra.local.demo import DemoSettings, run_demo

    return run_demo(DemoSettings(
        config=args.config, state_dir=args.state_dir, batch_size=args.batch_size, market=args.market, seed=args.seed,
        continuous=args.continuous, batches=args.batches, approve=not args.no_approve, keep_running=args.keep_running,
        max_jobs=args.max_jobs, max_parallel_jobs=args.max_parallel_jobs, timeout=args.timeout))


def _local_up(args: argparse.Namespace) -> int:
    from infra.local.service import described, up

    print(described(up(args.state_dir)))
    return 0


def _local_down(args: argparse.Namespace) -> int:
    from infra.local.service import down

    print("stopped the local stack" if down(args.state_dir) else f"no local stack runs on {args.state_dir}")
    return 0


def _local_status(args: argparse.Namespace) -> int:
    from infra.local.service import described, status

    info = status(args.state_dir)
    if info is None:
        print(f"no local stack runs on {args.state_dir}; start one with `livetrain local up`")
        return 1
    print(described(info))
    return 0


def _local_console(args: argparse.Namespace) -> int:
    from infra.local.console import serve
    from infra.local.service import status

    info = status(args.state_dir)
    if info is None:
        raise UserError(f"no local stack runs on {args.state_dir}; start one with `livetrain local up`")
    serve(args.config, info["environment"]["AWS_ENDPOINT_URL"], args.state_dir, args.port)
    return 0


def _run_backtest(args: argparse.Namespace) -> int:
    if args.market and (args.batches or 0) < 2:
        raise UserError("--market needs --batches K with K ≥ 2: the backtest trains on one batch and scores the next")
    if args.batches_dir and args.batches:
        raise UserError("--batches goes with --market; with --batches-dir every batch directory is used")
    import signal

    from infra.local.backtest import BacktestSettings, plot, run_backtest, table

    def interrupt(signum, frame):  # SIGTERM as Ctrl-C: the run's moto server is stopped on the way out
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    if args.json and not args.json.parent.is_dir():
        raise UserError(f"--json {args.json}: the folder {args.json.parent} does not exist; create it or pass "
                        "another path")
    report = run_backtest(BacktestSettings(
        config=args.config, out_dir=args.out, batches_dir=args.batches_dir, market=args.market,
        batches=args.batches or 0, seed=args.seed, batch_size=args.batch_size, max_jobs=args.max_jobs,
        max_parallel_jobs=args.max_parallel_jobs, json_path=args.json))
    print(table(report))
    print(f"plot: {plot(report, args.plot or args.out / 'backtest.png')}"
          + (f"; results: {args.json}" if args.json else ""))
    return 0
