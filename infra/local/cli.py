"""`livetrain demo`: the whole loop on one machine. Only the standard library and the kernel are imported here."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

from livetrain.arguments import positive_int
from livetrain.errors import UserError


def add_commands(commands, config) -> None:
    demo = commands.add_parser(
        "demo", help="run the whole loop locally: market → batch → pipeline → registry → endpoint",
        description="Start the local stack (moto, a MongoDB-wire server, the SageMaker Runtime endpoint), stream "
                    "the simulated market until a batch lands, let EventBridge's rule run the pipeline, approve the "
                    "registered package, let the deploy Lambda bring the endpoint up, predict through boto3, and "
                    "write the execution report. Everything binds to 127.0.0.1; no AWS account is used.")
    demo.add_argument("--batch-size", type=positive_int, default=config.batch_size,
                      help=f"closed trades per batch (default {config.batch_size}: 30 s apart, their test slice holds "
                           "about 30 independent windows of market time, and a verdict needs 20)")
    demo.add_argument("--market", choices=("planted-signal", "random-walk"), default="planted-signal")
    demo.add_argument("--seed", type=int, default=0, help="the simulated market's seed")
    demo.add_argument("--continuous", action="store_true",
                      help="keep streaming: every batch retrains; a new package replaces the endpoint's model "
                           "only once approved")
    demo.add_argument("--batches", type=positive_int, help="with --continuous: stop after this many batches")
    demo.add_argument("--no-approve", action="store_true", help="leave registered packages pending approval")
    demo.add_argument("--keep-running", action="store_true",
                      help="keep the local stack up at the end (Ctrl-C stops it) to explore it with boto3 or the CLI")
    demo.add_argument("--max-jobs", type=positive_int, default=config.max_jobs,
                      help=f"training jobs per tuning (default {config.max_jobs})")
    demo.add_argument("--max-parallel-jobs", type=positive_int, default=config.max_parallel_jobs,
                      help=f"default {config.max_parallel_jobs}")
    demo.add_argument("--timeout", type=positive_int, default=900, help="seconds to wait for a batch (default 900)")
    demo.add_argument("--state-dir", type=Path,
                      default=Path(config.state_dir) / "demo" / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"),
                      help=f"where the run keeps its services' data, records and reports "
                           f"(default: a new folder under {config.state_dir}/demo)")
    demo.set_defaults(handler=_run_demo, config=config)


def _run_demo(args: argparse.Namespace) -> int:
    if args.batches and not args.continuous:
        raise UserError("--batches goes with --continuous: add --continuous, or drop --batches")
    from infra.local.demo import DemoSettings, run_demo

    return run_demo(DemoSettings(
        config=args.config, state_dir=args.state_dir, batch_size=args.batch_size, market=args.market, seed=args.seed,
        continuous=args.continuous, batches=args.batches, approve=not args.no_approve, keep_running=args.keep_running,
        max_jobs=args.max_jobs, max_parallel_jobs=args.max_parallel_jobs, timeout=args.timeout))
