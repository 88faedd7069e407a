"""Freshness of the local loop for a 10k-trade batch: manifest landed → package registered → endpoint serving it.

Baseline: the seed system's loop on AWS took 15-20 minutes from batch to endpoint (shared/reference).
"""

import tempfile
import time
from pathlib import Path

from bench.measure import table
from infra.local.services import wait_until
from infra.local.stack import LocalStack
from livetrain.config import Config
from pipelines.local.records import step_duration
from processing.batch_contract import render_batch, upload_batch_dir, write_batch_dir
from streamer.market import MarketSettings
from streamer.synth import synthesize
from streamer.trading import BotSettings

SEED_LOOP_SECONDS = (15 * 60, 20 * 60)
TRADES = 10_000


def _batch(directory: Path, config: Config) -> Path:
    bot = BotSettings()
    prices, trades = synthesize(TRADES, 0, MarketSettings(), bot, config.epic, progress=None)
    files = render_batch(bucket=config.bucket, epic=config.epic, batch_id="bench-freshness", prices=prices,
                         trades=trades, bot_settings=bot.as_dict())
    return write_batch_dir(files, directory / "batch")


def main() -> None:
    config = Config()
    quiet = {"log": lambda line: None}
    with tempfile.TemporaryDirectory() as work, LocalStack(config, Path(work) / "state", **quiet) as stack:
        stack.provision()
        stack.run_in_background()
        batch = _batch(Path(work), config)
        sagemaker = stack.client("sagemaker")
        landed = time.monotonic()
        upload_batch_dir(stack.client("s3"), config.bucket, batch)

        def packages():
            return sagemaker.list_model_packages(ModelPackageGroupName=stack.model_package_group())[
                "ModelPackageSummaryList"]

        wait_until(lambda: packages() or (stack.executions and stack.executions[0].done()), 600, "the pipeline run")
        registered = time.monotonic()
        record = stack.executions[0].result()
        if record["PipelineExecutionStatus"] != "Succeeded":
            raise SystemExit(f"the run did not register a package: {record['FailureReason']}")
        steps = {name: step_duration(step) for name, step in record["Steps"].items()}
        stack.approve(packages()[0]["ModelPackageArn"])
        approved = time.monotonic()
        stack.wait_for_endpoint(packages()[0]["ModelPackageArn"])
        serving = time.monotonic()

    to_package, to_endpoint = registered - landed, serving - approved
    rows = [{"stage": "manifest landed → package registered", "seconds": f"{to_package:.1f}",
             "target": "≤ 30 s", "met": "yes" if to_package <= 30 else "NO"},
            {"stage": "approval → endpoint serving the package", "seconds": f"{to_endpoint:.1f}", "target": "",
             "met": ""},
            {"stage": "landed → serving, without the reviewer's wait", "seconds": f"{to_package + to_endpoint:.1f}",
             "target": "", "met": ""}]
    print(table(rows))
    print("steps: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in steps.items() if seconds))
    low, high = (s / (to_package + to_endpoint) for s in SEED_LOOP_SECONDS)
    print(f"vs the seed's 15-20 min AWS loop: {low:.0f}×-{high:.0f}× fresher")
