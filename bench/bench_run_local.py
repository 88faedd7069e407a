"""run-local from manifest to verdict (registered, or a Fail step): 10k trades, moto as AWS (target ≤ 30 s).

The batch is synthesised and uploaded, and the pipeline upserted into moto, before the clock
starts; the measured command is `livetrain pipeline run-local --pipeline-name …` alone. The
baseline is the seed's AWS loop (Step Functions + Glue + SageMaker tuning + endpoint), which
took 15–20 minutes per batch (seed review); it cannot run here, so it is quoted, not measured.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import boto3

from bench.measure import measure, table
from pipelines.local.records import ExecutionStore, step_duration
from processing.batch_contract import BATCH_JSON_FILE, MANIFEST_FILE, batch_key_prefix, upload_batch_dir

TRADES = 10_000
SEED = 0  # any seed: this measures time to the verdict (the last step is 0 s); bench_gate measures verdicts
TARGET_SECONDS = 30.0
SEED_LOOP_SECONDS = (15 * 60, 20 * 60)
LIVETRAIN = str(Path(sys.executable).parent / "livetrain")
ROLE = "arn:aws:iam::123456789012:role/livetrain-pipeline"
# moto takes any credentials; never send real ones to it.
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                    "AWS_DEFAULT_REGION": "us-east-1"}


@contextlib.contextmanager
def moto_endpoint():
    """moto's server in this process, on 127.0.0.1; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def main() -> None:
    with moto_endpoint() as endpoint, tempfile.TemporaryDirectory() as tmp:
        run(Path(tmp), endpoint)


def cli_environment() -> dict:
    """The environment for the livetrain commands: moto's placeholder credentials, never real ones."""
    environment = {k: v for k, v in os.environ.items() if k not in ("AWS_PROFILE", "AWS_SESSION_TOKEN")}
    return {**environment, **FAKE_CREDENTIALS}


def stage(batch: Path, endpoint: str, state: Path) -> list[str]:
    """Upload `batch` to moto and upsert the pipeline; the run-local command that executes it."""
    meta = json.loads((batch / BATCH_JSON_FILE).read_text())
    prefix = batch_key_prefix(meta["epic"], meta["batch_id"])
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    bucket = json.loads((batch / MANIFEST_FILE).read_text())[0]["prefix"].removeprefix("s3://").split("/")[0]
    s3.create_bucket(Bucket=bucket)
    upload_batch_dir(s3, bucket, batch)
    subprocess.run([LIVETRAIN, "pipeline", "upsert", "--endpoint-url", endpoint, "--role-arn", ROLE,
                    "--bucket", bucket], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env=cli_environment())
    return [LIVETRAIN, "pipeline", "run-local", "--pipeline-name", "livetrain", "--endpoint-url", endpoint,
            "--state-dir", str(state), "--param", f"InputManifestKey={prefix}{MANIFEST_FILE}"]


def step_rows(record: dict) -> list[dict]:
    """One row per step of an execution record: name, type, status, seconds."""
    return [{"step": step["StepName"], "type": step["StepType"], "status": step["StepStatus"],
             "seconds": f"{step_duration(step):.1f}" if step_duration(step) is not None else "-"}
            for step in record["Steps"].values()]


def run(tmp: Path, endpoint: str) -> None:
    env_args = {"stdout": subprocess.DEVNULL, "env": cli_environment()}
    print(f"synthesising a {TRADES:,}-trade planted-signal batch and upserting the pipeline into moto…", flush=True)
    subprocess.run([LIVETRAIN, "synth-batch", "--out", str(tmp / "batch"), "--trades", str(TRADES),
                    "--seed", str(SEED)], check=True, **env_args)
    state = tmp / "state"
    command = stage(tmp / "batch", endpoint, state)
    print("running: livetrain pipeline run-local … (10 training jobs, 2 in parallel)", flush=True)
    result = measure(command, stderr=subprocess.DEVNULL, **env_args)
    (record,) = ExecutionStore(state).all()
    jobs = len(record["Steps"]["TuneLinearLearner"].get("Properties", {}).get("TrainingJobSummaries", []))
    print(table(step_rows(record)))
    low, high = (seconds / result.seconds for seconds in SEED_LOOP_SECONDS)
    verdict = "meets" if result.seconds <= TARGET_SECONDS else "MISSES"
    print(table([{"measure": "run-local wall time (s)", "value": f"{result.seconds:.1f}"},
                 {"measure": "peak RSS (MB, wait4)", "value": f"{result.peak_rss_mb:.0f}"},
                 {"measure": f"target ≤ {TARGET_SECONDS:.0f} s", "value": verdict},
                 {"measure": "ratio vs the seed's 15–20 min AWS loop", "value": f"{low:.0f}x – {high:.0f}x faster"},
                 {"measure": "execution status", "value": record["PipelineExecutionStatus"]},
                 {"measure": "training jobs run", "value": jobs}]))
