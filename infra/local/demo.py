"""`livetrain demo`: the whole loop on one machine, on the artefacts that run on AWS.

market (simulator) → streamer → MongoDB → batch in S3 → EventBridge rule → pipeline (local engine) →
model registry → approval → deploy Lambda → endpoint → predictions through boto3, then the report.
The stack is the `livetrain local up` service (infra/local/service.py); the demo drives it as a user's shell
does after exporting its lines: a streamer subprocess, then boto3 calls to the SageMaker API.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from infra.local.service import described, down, status, up
from infra.local.services import local_client, wait_until
from infra.local.stack import wait_for_endpoint
from lambdas.epics import epic_name
from livetrain.config import Config
from livetrain.errors import UserError
from livetrain.processes import dies_with_parent
from pipelines.local import s3io
from pipelines.local.records import ExecutionStatus, ExecutionStore, StepStatus
from processing.evaluate import EVALUATION_FILE
from processing.monitor import MIN_WINDOWS
from processing.preprocess import TEST_FEATURES_DIR

# With --continuous, once a model serves, the market streams at LIVE_SPEED times real time and the endpoint scores
# every trade; the service's monitor runs every MONITOR_EVERY_S with its windows shrunk as much: a 24 h window is
# 24 s, the 1,500 s dependence span 0.42 s. The capture's timestamps are whole seconds (SageMaker's layout), so
# the bootstrap's blocks are whole seconds, an hour of market each: longer than the dependence, never shorter.
# At --speed max (~28,000x) a block would hold ~8 market hours and a window a few blocks: no honest interval.
LIVE_SPEED = 3600.0
MONITOR_EVERY_S = 5.0


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


class LogRelay:
    """Shows the lines a log file gains from now on (the service's), prefixed, on stderr, until stop()."""

    def __init__(self, path: Path, prefix: str):
        self.path, self.prefix = path, prefix
        self.offset = path.stat().st_size if path.exists() else 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name=f"{prefix}-log", daemon=True)
        self._thread.start()

    def drain(self) -> None:
        """Show the complete lines written so far."""
        with self._lock:
            if not self.path.exists():
                return
            with self.path.open("rb") as log:
                log.seek(self.offset)
                for line in log:
                    if not line.endswith(b"\n"):  # the rest of it is still being written
                        break
                    self.offset += len(line)
                    print(f"    {self.prefix} | {line.decode(errors='replace').rstrip()}", file=sys.stderr,
                          flush=True)

    def _follow(self) -> None:
        while not self._stop.wait(0.2):
            self.drain()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.drain()


class Phases:
    """Announces each phase, times it, and keeps the times for the summary; `relay`'s lines so far come first."""

    def __init__(self, relay: LogRelay):
        self.relay = relay
        self.times: list[tuple[str, float]] = []

    @contextmanager
    def __call__(self, name: str):
        self.relay.drain()
        print(f"\n==> {name}", file=sys.stderr, flush=True)
        start = time.monotonic()
        yield
        self.times.append((name, time.monotonic() - start))
        self.relay.drain()
        print(f"    {name}: {self.times[-1][1]:.1f} s", file=sys.stderr, flush=True)


def run_demo(settings: DemoSettings) -> int:
    """The loop as a user drives it: the `local up` service, a streamer, and the SageMaker API."""

    def interrupt(signum, frame):  # SIGTERM as Ctrl-C: the streamer and the service are stopped on the way out
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    relay = LogRelay(settings.state_dir / "logs" / "service.log", "stack")
    phases, outcomes, started, streamer, completed = Phases(relay), [], None, None, False
    try:
        with phases("start the local stack service (moto, MongoDB-wire server, SageMaker Runtime endpoint), "
                    "provisioned as the CloudFormation template does"):
            service, started = _service(settings)
        user = LocalUser(service["environment"], settings.config)
        seen = {summary["PipelineExecutionArn"] for summary in user.executions()}  # a reused service's earlier runs
        # Until a model serves, one batch per streamer run at full speed (so that it does not run ahead while the
        # pipeline trains); once one serves, the rest paced at LIVE_SPEED, every trade scored by the endpoint.
        streamer, live = _start_streamer(user, settings, max_batches=1), LiveQuality(user)
        batches = settings.batches if settings.continuous else 1
        for number in range(1, batches + 1 if batches else sys.maxsize):
            with phases(f"stream the {settings.market} market until batch {number} lands in S3"):
                arn = _wait_for_run(user, settings, streamer, seen, number, live)
                seen.add(arn)
            outcomes.append(_train_and_deploy(user, settings, phases, arn))
            if outcomes[-1].get("endpoint"):
                outcomes[-1]["live"] = live.serving(outcomes[-1]["package"].rsplit("/", 1)[-1])
            if number != batches and live.speed is None:
                _stop(streamer)  # it resumes where it stopped (MongoDB)
                live.speed = LIVE_SPEED if live.version else None
                streamer = _start_streamer(user, settings, batches if live.speed else number + 1, live.speed)
        if outcomes and live.line:
            outcomes[-1].setdefault("live", live.line)
        streamer.wait(timeout=600)
        completed = True
    finally:
        if streamer is not None:
            _stop(streamer)
        kept = started and settings.keep_running and completed
        if started and not kept:
            down(settings.state_dir)
        relay.stop()
    _print_summary(phases, outcomes)
    if kept:
        print(f"\n{described(started)}\n# `livetrain local down --state-dir {settings.state_dir}` stops it")
    return 0 if outcomes and outcomes[-1]["status"] == ExecutionStatus.SUCCEEDED else 1


def _service(settings: DemoSettings) -> tuple[dict, dict | None]:
    """(the service's service.json, the same if this demo started it): a service already running on the state
    directory is used as it is; otherwise one is started with the demo's tuning settings, to end with the demo
    unless --keep-running."""
    running = status(settings.state_dir)
    if running:
        print(f"    using the local stack already running on {settings.state_dir} (pid {running['pid']}), with the "
              "settings it was started with", file=sys.stderr)
        return running, None
    environment = {"LIVETRAIN_MAX_JOBS": str(settings.max_jobs),
                   "LIVETRAIN_MAX_PARALLEL_JOBS": str(settings.max_parallel_jobs)}
    if settings.continuous:  # the live-quality monitor, on the market's clock once it streams at LIVE_SPEED
        environment |= {"LIVETRAIN_MONITOR_EVERY_S": str(MONITOR_EVERY_S), "LIVETRAIN_MARKET_SPEED": str(LIVE_SPEED)}
    service = up(settings.state_dir, environment=environment, dies_with_caller=not settings.keep_running)
    return service, service


class LocalUser:
    """boto3 clients as a user's shell has them after exporting `local up`'s lines, and what the demo asks them."""

    def __init__(self, environment: dict[str, str], config: Config):
        self.environment, self.config = environment, config

    def client(self, service: str):
        url = self.environment["AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME" if service == "sagemaker-runtime"
                               else "AWS_ENDPOINT_URL"]
        return local_client(service, url, self.config.region)

    def executions(self) -> list[dict]:
        """ListPipelineExecutions of the pipeline, oldest first."""
        pages = self.client("sagemaker").get_paginator("list_pipeline_executions").paginate(
            PipelineName=self.config.pipeline_name, SortOrder="Ascending")
        return [summary for page in pages for summary in page["PipelineExecutionSummaries"]]


def _wait_for_run(user: LocalUser, settings: DemoSettings, streamer: subprocess.Popen, seen: set,
                  number: int, live: LiveQuality) -> str:
    """The ARN of the run the next batch's event started (a streamer that exits 0 has committed its last batch,
    whose event may still be on its way)."""
    def landed() -> str | None:
        if status(settings.state_dir) is None:
            raise UserError(f"the local stack stopped; see {settings.state_dir / 'logs' / 'service.log'}")
        return next((s["PipelineExecutionArn"] for s in user.executions() if s["PipelineExecutionArn"] not in seen),
                    None)

    wait_until(lambda: live.show() or landed() or streamer.poll() not in (None, 0), settings.timeout,
               f"batch {number}", interval=0.2)
    arn = landed()
    if arn is None:
        raise UserError(f"the streamer exited with code {streamer.returncode} before batch {number} landed; see its "
                        "lines above")
    return arn


def _start_streamer(user: LocalUser, settings: DemoSettings, max_batches: int | None,
                    speed: float | None = None) -> subprocess.Popen:
    """`livetrain stream` against the local stack, as the ECS task runs it on AWS, until `max_batches` batches
    in all (None: until stopped); its lines are shown. With a `speed`, the market is paced and every trade is
    scored by the endpoint (live scoring)."""
    environment = user.environment
    paced = (["--speed", f"{speed:g}", "--endpoint-name", demo_endpoint(settings.config)] if speed
             else ["--speed", "max"])
    command = [str(Path(sys.executable).with_name("livetrain")), "stream", "--source", "sim", *paced,
               "--market", settings.market, "--seed", str(settings.seed), "--batch-size", str(settings.batch_size),
               "--bucket", settings.config.bucket, "--s3-endpoint-url", environment["AWS_ENDPOINT_URL"],
               "--mongo-uri", environment["MONGODB_URI"]]
    if max_batches:
        command += ["--max-batches", str(max_batches)]
    process = subprocess.Popen(command, env={**os.environ, **environment}, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, preexec_fn=dies_with_parent())

    def relay():
        for line in process.stdout:
            print(f"    stream | {line.rstrip()}", file=sys.stderr, flush=True)

    threading.Thread(target=relay, daemon=True).start()
    return process


def demo_endpoint(config: Config) -> str:
    """The endpoint of the epic the demo streams (lambdas/epics.py names it)."""
    return epic_name(config.endpoint_name, config.epic)


def _stop(streamer: subprocess.Popen) -> None:
    """SIGTERM, which the streamer honours within seconds, committing what it has."""
    if streamer.poll() is None:
        streamer.terminate()
        streamer.wait(timeout=30)


class LiveQuality:
    """The live-quality monitor's newest figures (lambdas.act_on_alarm.latest_figures), shown when they change."""

    def __init__(self, user: LocalUser):
        self.user, self.version, self.speed = user, None, None
        self.line, self._shown = None, None

    def serving(self, version: str) -> str | None:
        """From now on, show the figures of this model version (the one the endpoint serves)."""
        self.version = version
        self.show()
        return self.line

    def show(self) -> bool:
        """Print the serving version's newest window if it is new; never true (a wait's predicate goes on)."""
        from lambdas.act_on_alarm import latest_figures

        if self.version is None:
            return False
        config = self.user.config
        figures = latest_figures(self.user.client("s3"), config.bucket, config.pipeline_name,
                                 demo_endpoint(config)) or {}
        windows = [w for w in figures.get("windows", []) if w["model_version"] == self.version]
        if windows and windows[-1] != self._shown:
            self._shown, self.line = windows[-1], live_line(self.version, windows[-1])
            print(f"    live | {self.line}", file=sys.stderr, flush=True)
        return False


def live_line(version: str, window: dict) -> str:
    """One monitoring window of a model version, as the demo shows it."""

    def interval(entry: dict) -> str:
        return f"{entry['value']:.2f} [{entry['lower']:.2f}, {entry['upper']:.2f}]"

    head = f"v{version} in service, live on {window['trades']:,} scored trades since {window['start']}"
    if "lift" not in window:
        return (f"{head}: {window['status']} ({window['independent_windows']:.0f} independent windows; "
                f"{MIN_WINDOWS:.0f} needed)")
    return (f"{head}: precision {interval(window['precision'])}, base rate {interval(window['base_rate'])}, "
            f"lift {interval(window['lift'])} ({window['status']}; 95% intervals)")


def _train_and_deploy(user: LocalUser, settings: DemoSettings, phases: Phases, arn: str) -> dict:
    sagemaker = user.client("sagemaker")
    with phases("run the pipeline the batch triggered (local engine, the definition stored in moto)"):
        wait_until(lambda: sagemaker.describe_pipeline_execution(PipelineExecutionArn=arn)[
            "PipelineExecutionStatus"] not in (ExecutionStatus.EXECUTING, ExecutionStatus.STOPPING),
            24 * 3600, f"execution {arn}", interval=0.2)
        record = ExecutionStore(settings.state_dir).load(arn.rsplit("/", 1)[-1])  # the engine's record, for the report
    outcome = {"execution": record["PipelineExecutionId"], "status": record["PipelineExecutionStatus"],
               "reason": record.get("FailureReason"), "evaluation": _evaluation(user, record)}
    with phases("write the execution report"):
        from lambdas.act_on_alarm import action_records, latest_figures
        from pipelines.local.report import render_report

        s3, bucket, prefix = user.client("s3"), settings.config.bucket, settings.config.pipeline_name
        outcome["report"] = render_report(record, settings.state_dir / "reports" / outcome["execution"],
                                          latest_figures(s3, bucket, prefix, demo_endpoint(settings.config)),
                                          tuple(action_records(s3, bucket, prefix)))
    if outcome["status"] != ExecutionStatus.SUCCEEDED:
        print(f"    the pipeline stopped: {outcome['reason']}; nothing is deployed", file=sys.stderr)
        return outcome
    package = _registered_package(sagemaker, arn)
    outcome["package"] = package
    if not settings.approve:
        print(f"    package {package} waits for approval (--no-approve)", file=sys.stderr)
        return outcome
    with phases("approve the package (what a reviewer does in the model registry); the Lambda deploys it"):
        sagemaker.update_model_package(ModelPackageArn=package, ModelApprovalStatus="Approved")
        outcome["endpoint"] = wait_for_endpoint(sagemaker, demo_endpoint(settings.config), package)[
            "EndpointConfigName"]
    with phases("predict through boto3.client('sagemaker-runtime').invoke_endpoint"):
        outcome["predictions"] = _predict(user, record, package)
    return outcome


def _registered_package(sagemaker, arn: str) -> str:
    """The package the run's RegisterModel step registered (ListPipelineExecutionSteps' metadata)."""
    steps = sagemaker.list_pipeline_execution_steps(PipelineExecutionArn=arn)["PipelineExecutionSteps"]
    return next(step["Metadata"]["RegisterModel"]["Arn"] for step in steps if "RegisterModel" in step["Metadata"])


def _step_output(record: dict, step: str, output: str) -> str:
    outputs = record["Steps"][step]["Properties"]["ProcessingOutputConfig"]["Outputs"]
    return next(o["S3Output"]["S3Uri"] for o in outputs if o["OutputName"] == output)


def _evaluation(user: LocalUser, record: dict) -> dict | None:
    if record["Steps"].get("EvaluateBestModel", {}).get("StepStatus") != StepStatus.SUCCEEDED:
        return None
    uri = _step_output(record, "EvaluateBestModel", "evaluation").rstrip("/") + "/" + EVALUATION_FILE
    return s3io.read_json(user.client("s3"), uri)


def _predict(user: LocalUser, record: dict, package: str, rows: int = 5) -> list[dict]:
    from pipelines.local.endpoint import load_model_data

    features = _step_output(record, "Preprocess", "test").rstrip("/") + "/" + Path(TEST_FEATURES_DIR).name + "/"
    test, _, _ = s3io.prefix_objects(user.client("s3"), features)[0]  # the first of the test slice's files
    body = b"\n".join(s3io.read_bytes(user.client("s3"), test).splitlines()[:rows]) + b"\n"
    response = user.client("sagemaker-runtime").invoke_endpoint(
        EndpointName=demo_endpoint(user.config), ContentType="text/csv",
        Accept="application/json", Body=body)
    predictions = json.loads(response["Body"].read())["predictions"]
    described = user.client("sagemaker").describe_model_package(ModelPackageName=package)
    model_data = described["InferenceSpecification"]["Containers"][0]["ModelDataUrl"]
    threshold = load_model_data(model_data, user.client("s3")).threshold  # chosen on validation for TargetRecall
    for prediction in predictions:
        print(f"    score {prediction['score']:.3f} (the model's threshold {threshold:.3f}) → predicted_label "
              f"{prediction['predicted_label']}", file=sys.stderr)
    return predictions


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
        if outcome.get("live"):
            print(f"    live quality: {outcome['live']}")
        print(f"    report: {outcome['report']}")
