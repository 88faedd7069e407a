"""`livetrain demo`: the whole loop on one machine, on the artefacts that run on AWS.

market (simulator) → streamer → MongoDB → batch in S3 → EventBridge rule → pipeline (local engine) →
model registry → approval → deploy Lambda → endpoint → predictions through boto3, then the report.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from infra.local.services import wait_until
from infra.local.stack import LocalStack
from livetrain.config import Config
from livetrain.errors import UserError
from livetrain.processes import dies_with_parent
from pipelines.local.records import ExecutionStatus, StepStatus
from processing.evaluate import EVALUATION_FILE
from processing.preprocess import TEST_FEATURES_CSV


@dataclass(frozen=True)
class DemoSettings:
    """What `livetrain demo` runs with (infra/local/cli.py builds it from the command line)."""

    config: Config
    state_dir: Path  # the services' data, the records and the reports
    batch_size: int
    market: str  # one of livetrain.config.MARKETS
    seed: int
    continuous: bool  # every batch retrains, until `batches` (None: until stopped)
    batches: int | None
    approve: bool  # approve each registered package, as a reviewer would
    keep_running: bool
    max_jobs: int
    max_parallel_jobs: int
    timeout: float  # seconds to wait for a batch


class Phases:
    """Announces each phase, times it, and keeps the times for the summary."""

    def __init__(self):
        self.times: list[tuple[str, float]] = []

    @contextmanager
    def __call__(self, name: str):
        print(f"\n==> {name}", file=sys.stderr, flush=True)
        start = time.monotonic()
        yield
        self.times.append((name, time.monotonic() - start))
        print(f"    {name}: {self.times[-1][1]:.1f} s", file=sys.stderr, flush=True)


def run_demo(settings: DemoSettings) -> int:
    phases = Phases()
    stack = LocalStack(settings.config, settings.state_dir, max_jobs=settings.max_jobs,
                       max_parallel_jobs=settings.max_parallel_jobs)
    try:
        with phases("start the local stack (moto, MongoDB-wire server, SageMaker Runtime endpoint)"):
            stack.start()
        with phases("provision it as the CloudFormation template does, and upsert the pipeline"):
            stack.provision()
            stack.run_in_background()
        streamer = _start_streamer(stack, settings)
        outcomes = []
        batches = settings.batches if settings.continuous else 1
        for number in range(1, batches + 1 if batches else sys.maxsize):
            with phases(f"stream the {settings.market} market until batch {number} lands in S3"):
                # a streamer that exits 0 has committed its last batch, whose S3 event may still be on its way
                wait_until(lambda n=number: len(stack.executions) >= n or streamer.poll() not in (None, 0),
                           settings.timeout, f"batch {number}", interval=0.2)
                stack.check()
                if len(stack.executions) < number:
                    raise UserError(f"the streamer exited with code {streamer.returncode} before batch {number} "
                                    f"landed; see its lines above")
            outcomes.append(_train_and_deploy(stack, settings, phases, stack.executions[number - 1]))
        streamer.wait(timeout=60)
        if settings.keep_running:
            _keep_running(stack)
    finally:
        stack.stop()
    _print_summary(phases, outcomes)
    return 0 if outcomes and outcomes[-1]["status"] == ExecutionStatus.SUCCEEDED else 1


def _start_streamer(stack: LocalStack, settings: DemoSettings) -> subprocess.Popen:
    """`livetrain stream` against the local stack, as the ECS task runs it on AWS; its lines are shown."""
    command = [str(Path(sys.executable).with_name("livetrain")), "stream", "--source", "sim", "--speed", "max",
               "--market", settings.market, "--seed", str(settings.seed), "--batch-size", str(settings.batch_size),
               "--bucket", stack.config.bucket, "--s3-endpoint-url", stack.moto.url, "--mongo-uri", stack.mongo.url]
    if not (settings.continuous and settings.batches is None):
        command += ["--max-batches", str(settings.batches if settings.continuous else 1)]
    process = subprocess.Popen(command, env={**os.environ, **stack.environment()}, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, preexec_fn=dies_with_parent())

    def relay():
        for line in process.stdout:
            print(f"    stream | {line.rstrip()}", file=sys.stderr, flush=True)

    threading.Thread(target=relay, daemon=True).start()
    return process


def _train_and_deploy(stack: LocalStack, settings: DemoSettings, phases: Phases, execution) -> dict:
    with phases("run the pipeline the batch triggered (local engine, the definition stored in moto)"):
        record = execution.result()
    outcome = {"execution": record["PipelineExecutionId"], "status": record["PipelineExecutionStatus"],
               "reason": record.get("FailureReason"), "evaluation": _evaluation(stack, record)}
    with phases("write the execution report"):
        from lambdas.act_on_alarm import action_records, latest_figures
        from pipelines.local.report import render_report

        s3, bucket, prefix = stack.client("s3"), stack.config.bucket, stack.config.pipeline_name
        outcome["report"] = render_report(record, stack.state_dir / "reports" / outcome["execution"],
                                          latest_figures(s3, bucket, prefix), tuple(action_records(s3, bucket, prefix)))
    if outcome["status"] != ExecutionStatus.SUCCEEDED:
        print(f"    the pipeline stopped: {outcome['reason']}; nothing is deployed", file=sys.stderr)
        return outcome
    package = _newest_package(stack)
    outcome["package"] = package["ModelPackageArn"]
    if not settings.approve:
        print(f"    package {package['ModelPackageArn']} waits for approval (--no-approve)", file=sys.stderr)
        return outcome
    with phases("approve the package (what a reviewer does in the model registry); the Lambda deploys it"):
        stack.approve(package["ModelPackageArn"])
        outcome["endpoint"] = stack.wait_for_endpoint(package["ModelPackageArn"])["EndpointConfigName"]
    with phases("predict through boto3.client('sagemaker-runtime').invoke_endpoint"):
        outcome["predictions"] = _predict(stack, record, package)
    return outcome


def _newest_package(stack: LocalStack) -> dict:
    packages = stack.client("sagemaker").list_model_packages(
        ModelPackageGroupName=stack.config.model_package_group, SortBy="CreationTime",
        SortOrder="Descending")["ModelPackageSummaryList"]
    return packages[0]


def _step_output(record: dict, step: str, output: str) -> str:
    outputs = record["Steps"][step]["Properties"]["ProcessingOutputConfig"]["Outputs"]
    return next(o["S3Output"]["S3Uri"] for o in outputs if o["OutputName"] == output)


def _read_s3(stack: LocalStack, uri: str) -> bytes:
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    return stack.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()


def _evaluation(stack: LocalStack, record: dict) -> dict | None:
    if record["Steps"].get("EvaluateBestModel", {}).get("StepStatus") != StepStatus.SUCCEEDED:
        return None
    uri = _step_output(record, "EvaluateBestModel", "evaluation").rstrip("/") + "/" + EVALUATION_FILE
    return json.loads(_read_s3(stack, uri))


def _predict(stack: LocalStack, record: dict, package: dict, rows: int = 5) -> list[dict]:
    from pipelines.local.endpoint import load_model_data

    test = _step_output(record, "Preprocess", "test").rstrip("/") + "/" + Path(TEST_FEATURES_CSV).name
    body = b"\n".join(_read_s3(stack, test).splitlines()[:rows]) + b"\n"
    response = stack.client("sagemaker-runtime").invoke_endpoint(
        EndpointName=stack.config.endpoint_name, ContentType="text/csv", Accept="application/json", Body=body)
    predictions = json.loads(response["Body"].read())["predictions"]
    described = stack.client("sagemaker").describe_model_package(ModelPackageName=package["ModelPackageArn"])
    model_data = described["InferenceSpecification"]["Containers"][0]["ModelDataUrl"]
    threshold = load_model_data(model_data, stack.client("s3")).threshold  # chosen on validation for TargetRecall
    for prediction in predictions:
        print(f"    score {prediction['score']:.3f} (the model's threshold {threshold:.3f}) → predicted_label "
              f"{prediction['predicted_label']}", file=sys.stderr)
    return predictions


def _keep_running(stack: LocalStack) -> None:
    """Serve the stack, and its console as `livetrain local up` does, until Ctrl-C."""
    from infra.local.console import background_console

    with background_console(stack.config, stack.moto.url) as console:
        print(f"\nThe local stack keeps running; its console: {console.url}; use it from another shell with:",
              file=sys.stderr)
        for name, value in stack.environment().items():
            print(f"  export {name}={value}", file=sys.stderr)
        print(f"  (SageMaker Runtime: --endpoint-url {stack.endpoint.url}). Ctrl-C stops it.", file=sys.stderr)
        try:
            while True:
                stack.check()
                time.sleep(1)
        except KeyboardInterrupt:
            pass


def _print_summary(phases: Phases, outcomes: list[dict]) -> None:
    print("\nlivetrain demo summary")
    for name, seconds in phases.times:
        print(f"  {seconds:7.1f} s  {name}")
    for outcome in outcomes:
        print(f"  execution {outcome['execution']}: {outcome['status']}"
              + (f" ({outcome['reason']})" if outcome["reason"] else ""))
        if outcome["evaluation"]:
            print(f"    test slice: {outcome['evaluation']['summary']}")
        if outcome.get("endpoint"):
            print(f"    deployed to endpoint config {outcome['endpoint']}; "
                  f"{len(outcome['predictions'])} predictions served")
        print(f"    report: {outcome['report']}")
