"""The AWS side of livetrain on one machine: the same artefacts, local stand-ins for the services.

`LocalStack` starts moto (S3, EventBridge, SQS, Secrets Manager, SageMaker records), the MongoDB-wire server
and the local SageMaker Runtime endpoint, all on 127.0.0.1 with their state under one directory; provisions
what the CloudFormation template provisions on AWS (the data bucket with EventBridge notifications, the rules with
the template's own patterns and parameter mapping, the IG secret, the pipeline; each epic's model package group is
made by its first run, as on AWS); and dispatches rule matches to their real targets:

- the manifest rules (the template has one per epic; locally every epic's batches start runs) → StartPipelineExecution
  with the parameters EventBridge would pass, the batch's epic among them (and a client token made from the
  manifest object), the same call a user makes with boto3: moto (`moto_gaps.py`) queues the execution in the state
  directory and the stack's runner executes the queue in the local engine (`pipelines/local`), in arrival order, up
  to `max_concurrent_executions` at a time (SageMaker's per-account limit of concurrent executions;
  LIVETRAIN_MAX_CONCURRENT_EXECUTIONS). An execution beyond the limit waits in the queue, Executing with no step
  started; the queue is on disk, so a crash loses none; and at start a scan of S3 starts the batches that have no
  run (`start_missed_batches`);
- the approval rule → the deploy Lambda's code, in-process, configured as the template configures it (each epic's
  package to the epic's endpoint);
- the live-lift alarm's rule → the act-on-alarm Lambda's code, in-process, likewise (ask the streamer for a
  batch now, roll back to the previous approved package when it measured better).

A stack starting on a state directory a killed stack left behind resumes its unfinished executions (see
`Submissions.recover`): none stays Executing forever, none queued behind it is skipped.

With `monitor_every_s`, the monitoring pipeline (infra/local/monitoring.py) is started on that timer for each
epic's endpoint, as the template's schedule rules start it on AWS, over the endpoint's data capture and the
streamer's ground truth, publishing its metrics to moto's CloudWatch; after the runs the alarms are evaluated
(infra/local/alarms.py: moto does not), the epics' live-lift alarms among them. The epics monitored are the
template's Epics: the configured ones (LIVETRAIN_EPIC, comma-separated, as the streamer follows them).
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from infra.local.dispatcher import Dispatcher, LocalRule, manifest_event, start_pipeline
from infra.local.services import LOCAL_KEY, Service, local_client, start_mongo, start_moto, wait_until
from infra.rules import (
    alarm_rule_pattern,
    approval_rule_pattern,
    live_lift_alarm,
    manifest_rule_pattern,
)
from lambdas.epics import epic_name, parse_epics
from livetrain.config import LOCAL_ACCOUNT_ID, Config
from pipelines.local.submissions import Submissions
from processing.monitor import DEPENDENCE_SECONDS, QUALITY_FILE, WINDOW_HOURS

LOCAL_ROLE_ARN = f"arn:aws:iam::{LOCAL_ACCOUNT_ID}:role/livetrain-local"
IG_SECRET_ID = "livetrain/ig-credentials"
POLL_SECONDS = 0.5


class LocalStack:
    """Services, provisioning and event dispatch; use as a context manager, or start() and stop()."""

    def __init__(self, config: Config, state_dir: Path | None = None, *, max_jobs: int | None = None,
                 max_parallel_jobs: int | None = None, max_concurrent_executions: int | None = None, log=None,
                 monitor_every_s: float | None = None):
        self.config = config
        self.epics = parse_epics([config.epic])  # each with a live-lift alarm and a monitor (the template's Epics)
        self.state_dir = Path(state_dir or config.state_dir).resolve()
        self.max_jobs = max_jobs or config.max_jobs
        self.max_parallel_jobs = max_parallel_jobs or config.max_parallel_jobs
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.moto: Service | None = None
        self.mongo: Service | None = None
        self.endpoint = None
        self.dispatcher: Dispatcher | None = None  # made by provision()
        self.executions: list[Future] = []  # one per batch that landed, in arrival order
        self.deployments: list[dict] = []  # the deploy Lambda's reports
        self.alarm_actions: list[dict] = []  # the act-on-alarm Lambda's reports (also in S3: <prefix>/alarm-actions/)
        self.submissions = Submissions(self.state_dir)
        self._runs: dict[str, Future] = {}  # execution id → its run in this process, for every queued execution
        self._runs_lock = threading.Lock()
        self._runner = ThreadPoolExecutor(max_workers=max_concurrent_executions or config.max_concurrent_executions,
                                          thread_name_prefix="pipeline")
        self.monitor_every_s = monitor_every_s
        self.live_quality: list[dict] = []  # each monitoring run's live_quality.json
        self._stop = threading.Event()
        self._loop: threading.Thread | None = None
        self._failure: BaseException | None = None

    # ------------------------------------------------------------ services

    def start(self) -> LocalStack:
        from pipelines.local.endpoint import EndpointServer, RecordsResolver

        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.mongo = start_mongo(self.state_dir)  # first: it refuses a store another process holds
        self._recover()
        self.moto = start_moto(self.state_dir)
        resolver = RecordsResolver(self.client("sagemaker"), self.client("s3"))
        self.endpoint = EndpointServer(resolver)
        self.endpoint.start()
        self.log(f"local stack: AWS (moto) {self.moto.url}, MongoDB {self.mongo.url}, "
                 f"SageMaker Runtime {self.endpoint.url}")
        if self.monitor_every_s:
            threading.Thread(target=self._monitor_loop, name="live-quality", daemon=True).start()
        return self

    def _recover(self) -> None:
        """Runs a previous stack on this directory left Executing (it was killed): the queued ones are resumed by
        the runner (run_in_background), the others marked Failed; before moto serves new starts."""
        resumed, failed = self.submissions.recover()
        if resumed:
            self.log(f"resuming {len(resumed)} execution(s) the previous local stack left unfinished: "
                     f"{', '.join(resumed)}")
        if failed:
            self.log(f"marked Failed {len(failed)} execution(s) left Executing with nothing to resume: "
                     f"{', '.join(failed)}")

    def client(self, service: str):
        """A boto3 client for a local AWS service (sagemaker-runtime: the local endpoint server)."""
        url = self.endpoint.url if service == "sagemaker-runtime" else self.moto.url
        return local_client(service, url, self.config.region)

    def environment(self) -> dict[str, str]:
        """Environment for a process that should use the local stack (the streamer, a user's shell)."""
        return {"AWS_ENDPOINT_URL": self.moto.url, "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": self.endpoint.url,
                "AWS_DEFAULT_REGION": self.config.region,
                "AWS_ACCESS_KEY_ID": LOCAL_KEY, "AWS_SECRET_ACCESS_KEY": LOCAL_KEY,
                "MONGODB_URI": self.mongo.url}

    def stop(self) -> None:
        self._stop.set()
        if self._loop:
            self._loop.join(timeout=10)
        self._runner.shutdown(wait=True, cancel_futures=True)
        if self.endpoint:
            self.endpoint.stop()
        for service in (self.mongo, self.moto):
            if service:
                service.stop()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------ provisioning

    def provision(self) -> None:
        """What the CloudFormation template creates on AWS, then the pipeline upsert, then the rules. What moto
        kept from an earlier start on this directory (infra/local/moto_persistence.py) is kept as it is."""
        from pipelines.driver import upsert_pipeline

        config, s3 = self.config, self.client("s3")
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            s3.create_bucket(Bucket=config.bucket)
        s3.put_bucket_versioning(Bucket=config.bucket, VersioningConfiguration={"Status": "Enabled"})
        s3.put_bucket_notification_configuration(Bucket=config.bucket,
                                                 NotificationConfiguration={"EventBridgeConfiguration": {}})
        sagemaker = self.client("sagemaker")
        # The IG secret exists, as on AWS, with a placeholder value: the local demo streams the simulator.
        secrets = self.client("secretsmanager")
        with contextlib.suppress(secrets.exceptions.ResourceExistsException):
            secrets.create_secret(Name=IG_SECRET_ID, SecretString=json.dumps(
                {"ig_identifier": "", "ig_password": "", "ig_api_key": ""}))
        upsert_pipeline(s3, sagemaker, self.pipeline_settings(), config.cache_dir, progress=self.log)
        for epic in self.epics:
            self.client("cloudwatch").put_metric_alarm(**live_lift_alarm(config.endpoint_name, epic))
        self.dispatcher = Dispatcher(self.client("events"), self.client("sqs"), self.state_dir)
        self.dispatcher.add_rule(LocalRule(f"{config.pipeline_name}-batch-landed",  # every epic's rule at once
                                           manifest_rule_pattern(config.bucket), self._start_pipeline))
        self.dispatcher.add_rule(LocalRule(f"{config.pipeline_name}-package-approved",
                                           approval_rule_pattern(config.model_package_group), self._deploy))
        self.dispatcher.add_rule(LocalRule(f"{config.pipeline_name}-live-lift-alarm",
                                           alarm_rule_pattern(config.endpoint_name), self._act_on_alarm))
        self.log(f"provisioned bucket {config.bucket}, pipeline {config.pipeline_name}, the live-lift alarms of "
                 f"{', '.join(self.epics)} and the rules (each epic's models go to "
                 f"{config.model_package_group}-<epic>)")

    def model_package_group(self, epic: str | None = None) -> str:
        """The epic's model package group (default: the first configured epic's), where its runs register."""
        return epic_name(self.config.model_package_group, epic or self.epics[0])

    def endpoint_name(self, epic: str | None = None) -> str:
        """The epic's endpoint (default: the first configured epic's), where its approved packages are deployed."""
        return epic_name(self.config.endpoint_name, epic or self.epics[0])

    def pipeline_settings(self):
        """What the local pipeline's definition is built from (pipelines.driver.PipelineSettings)."""
        from pipelines.driver import PipelineSettings

        config = self.config
        return PipelineSettings(region=config.region, role_arn=LOCAL_ROLE_ARN, bucket=config.bucket,
                                pipeline_name=config.pipeline_name, model_package_group=config.model_package_group,
                                prefix=config.pipeline_name, max_jobs=self.max_jobs,
                                max_parallel_jobs=self.max_parallel_jobs)

    def run_in_background(self) -> None:
        """Start the batches no run was started for (start_missed_batches), then dispatch events until stop():
        rule matches to their targets, package changes to the bus."""
        self.start_missed_batches()

        def loop():
            try:
                while not self._stop.is_set():
                    self.run_queued()
                    if not self.dispatcher.poll_once():
                        self._stop.wait(POLL_SECONDS)
            except BaseException as exc:  # surfaced by check()
                self._failure = exc

        self._loop = threading.Thread(target=loop, name="dispatcher", daemon=True)
        self._loop.start()

    def start_missed_batches(self) -> list[str]:
        """Start a run for every batch manifest in S3 that has none: it landed while no stack ran, or its event was
        lost with moto's memory when the stack was killed (SQS is not journalled). The manifest rule's own target,
        with the batch's token, so its event arriving after all starts nothing more. The new executions' ids."""
        bucket = self.config.bucket
        (matcher,) = manifest_rule_pattern(bucket)["detail"]["object"]["key"]
        parts = matcher["wildcard"].split("*")
        prefix, suffix = parts[0], parts[-1]
        have = {(r["Parameters"].get("InputBucket"), r["Parameters"].get("InputManifestKey"))
                for r in self.submissions.store.all()}
        started = []
        for page in self.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for entry in page.get("Contents", []):
                if entry["Key"].endswith(suffix) and (bucket, entry["Key"]) not in have:
                    started.append(self._start_pipeline(manifest_event(bucket, entry["Key"], entry["ETag"])))
        return started

    def _monitor_loop(self) -> None:
        """monitor_once for each epic every `monitor_every_s` seconds, each run followed by the alarms; a failed run
        is logged, and the next one tries again."""
        while not self._stop.wait(self.monitor_every_s):
            for epic in self.epics:
                try:
                    quality = self.monitor_once(epic)
                    if quality is not None:
                        self.live_quality.append(quality)
                        self.evaluate_alarms()
                except Exception as exc:
                    self.log(f"live-quality monitor of {epic}: {exc}")

    def monitor_settings(self, epic: str | None = None):
        """The monitoring run's settings for the epic's endpoint (default: the first configured epic's)."""
        from infra.local.monitoring import MonitorSettings

        config = self.config  # its windows are wall-clock: a market simulated S times faster shrinks them S times
        return MonitorSettings(config.bucket, config.pipeline_name, self.endpoint_name(epic),
                               self.model_package_group(epic),
                               window_hours=WINDOW_HOURS / config.market_speed,
                               dependence_seconds=DEPENDENCE_SECONDS / config.market_speed)

    def monitor_once(self, epic: str | None = None) -> dict | None:
        """One run of the monitoring pipeline on the epic's endpoint, started as the epic's schedule rule starts it
        on AWS (after the local-only shadow scoring); its live_quality.json, or None while nothing is captured or
        known yet."""
        from infra.local.monitoring import upload_shadow_scores
        from pipelines.contract import monitor_pipeline_name
        from pipelines.local import s3io

        s3, sagemaker, settings = self.client("s3"), self.client("sagemaker"), self.monitor_settings(epic)
        for uri in (settings.capture_uri(), settings.ground_truth_uri()):
            bucket, prefix = s3io.split_s3_uri(uri)
            if not s3.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1).get("KeyCount"):
                return None  # the job's input would be empty: SageMaker would fail it
        upload_shadow_scores(s3, sagemaker, settings)
        arn = sagemaker.start_pipeline_execution(PipelineName=monitor_pipeline_name(self.config.pipeline_name),
                                                 PipelineParameters=settings.pipeline_parameters())[
            "PipelineExecutionArn"]
        record = self.run_queued()[arn.rsplit("/", 1)[-1]].result()
        if record["PipelineExecutionStatus"] != "Succeeded":
            raise RuntimeError(record.get("FailureReason") or record["PipelineExecutionStatus"])
        (output,) = record["Steps"]["MeasureLiveQuality"]["Properties"]["ProcessingOutputConfig"]["Outputs"]
        return s3io.read_json(s3, output["S3Output"]["S3Uri"].rstrip("/") + "/" + QUALITY_FILE)

    def evaluate_alarms(self) -> list[dict]:
        """What CloudWatch does on AWS and moto does not: evaluate the alarms, announce their state changes
        (infra/local/alarms.py)."""
        from infra.local.alarms import evaluate_alarms

        changes = evaluate_alarms(self.client("cloudwatch"), self.client("events"))
        for change in changes:
            detail = json.loads(change["Detail"])
            self.log(f"alarm {detail['alarmName']}: {detail['previousState']['value']} → {detail['state']['value']} "
                     f"({detail['state']['reason']})")
        return changes

    def check(self) -> None:
        """Raise what stopped the dispatcher or a service, if anything did."""
        if self._failure:
            raise RuntimeError(f"the local event dispatcher stopped: {self._failure}") from self._failure
        for service in (self.moto, self.mongo):
            service.check_alive()

    # ------------------------------------------------------------ the rules' targets

    def _start_pipeline(self, event: dict) -> str:
        """EventBridge's pipeline target (dispatcher.start_pipeline), then the run handed to the runner."""
        arn, parameters = start_pipeline(self.client("sagemaker"), self.config.pipeline_name, event)
        execution_id = arn.rsplit("/", 1)[-1]
        self.log(f"batch landed: s3://{parameters['InputBucket']}/{parameters['InputManifestKey']} "
                 f"→ pipeline {self.config.pipeline_name}, execution {execution_id}")
        run = self.run_queued().get(execution_id)  # None: the batch's run was made by an earlier stack
        if run is not None and run not in self.executions:  # not when the catch-up scan started it already
            self.executions.append(run)
        return execution_id

    def run_queued(self) -> dict[str, Future]:
        """Hand every queued execution not yet handed over to the runner (or queued again by a retry since its
        last run), in arrival order; every run so far."""
        with self._runs_lock:
            for execution_id in self.submissions.pending():
                if execution_id not in self._runs or self._runs[execution_id].done():
                    self._runs[execution_id] = self._runner.submit(self._run_execution, execution_id)
            return dict(self._runs)

    def _run_execution(self, execution_id: str) -> dict:
        from pipelines.local.engine import LocalExecution
        from pipelines.parameters import resolve_parameters

        if not self.submissions.claim(execution_id):  # stopped while queued, or run already
            return self.submissions.store.load(execution_id)
        record = self.submissions.store.load(execution_id)
        try:
            definition = self.submissions.definition(execution_id)
            execution = LocalExecution(definition, resolve_parameters(definition, record["Parameters"]),
                                       s3=self.client("s3"), sagemaker=self.client("sagemaker"),
                                       state_dir=self.state_dir, progress=self.log, execution_id=execution_id,
                                       pipeline_name=record["PipelineName"], pipeline_arn=record["PipelineArn"],
                                       cloudwatch=self.client("cloudwatch"))
            record = execution.run()
        except Exception as exc:  # the engine records a step's failure itself; this is anything around it
            record = self.submissions.fail(execution_id, f"the local engine could not run it: {exc}")
        self.submissions.done(execution_id)
        return record

    def _lambda_environment(self) -> dict[str, str]:
        """The deploy and act-on-alarm Lambdas' environment as the template sets it (the names' prefixes: each
        epic's package goes to the epic's endpoint, each epic's alarm acts on it), without EPICS: locally every
        epic's batches train (one local manifest rule), so every epic's packages deploy; no instances to bake."""
        return {"ENDPOINT_NAME": self.config.endpoint_name, "MODEL_PACKAGE_GROUP": self.config.model_package_group,
                "EXECUTION_ROLE_ARN": LOCAL_ROLE_ARN, "BAKE_SECONDS": "0", "POLL_SECONDS": "1",
                "DATA_CAPTURE_URI": f"s3://{self.config.bucket}/{self.config.pipeline_name}/datacapture",
                "DATA_BUCKET": self.config.bucket, "PREFIX": self.config.pipeline_name}

    def _deploy(self, event: dict) -> None:
        from lambdas.deploy_on_approval import DeployConfig, deploy

        self.deployments.append(deploy(event, self.client("sagemaker"), DeployConfig.from_env(
            self._lambda_environment()), wait_seconds=60))  # the Lambda logs its own report

    def _act_on_alarm(self, event: dict) -> None:
        from lambdas.act_on_alarm import ActionConfig, act

        report = act(event, self.client("s3"), self.client("sagemaker"),
                     ActionConfig.from_env(self._lambda_environment()), wait_seconds=60)
        self.alarm_actions.append(report)
        rollback = report.get("rollback", {})
        self.log(f"live-lift alarm {report.get('id', '')}: retrain {report.get('retrain', {}).get('action')}, "
                 f"rollback {rollback.get('action')} ({rollback.get('reason') or rollback.get('to', '')})")

    # ------------------------------------------------------------ what a reviewer and a client do

    def approve(self, package_arn: str) -> None:
        """What a reviewer's click in the model registry does."""
        self.client("sagemaker").update_model_package(ModelPackageArn=package_arn, ModelApprovalStatus="Approved")

    def wait_for_endpoint(self, package_arn: str, timeout: float = 120, epic: str | None = None) -> dict:
        """wait_for_endpoint on this stack for the epic's endpoint, raising what stops it meanwhile."""
        return wait_for_endpoint(self.client("sagemaker"), self.endpoint_name(epic), package_arn, timeout,
                                 check=self.check)


def wait_for_endpoint(sagemaker, endpoint_name: str, package_arn: str, timeout: float = 120,
                      check=lambda: None) -> dict:
    """DescribeEndpoint once the endpoint serves the package (the deploy Lambda names configs after its version)."""
    version = package_arn.rsplit("/", 1)[-1]

    def serving() -> bool:
        check()
        try:
            endpoint = sagemaker.describe_endpoint(EndpointName=endpoint_name)
        except sagemaker.exceptions.ClientError:
            return False
        return endpoint["EndpointStatus"] == "InService" and endpoint["EndpointConfigName"].endswith(f"-v{version}")

    wait_until(serving, timeout, f"endpoint {endpoint_name} serving package version {version}", interval=0.2)
    return sagemaker.describe_endpoint(EndpointName=endpoint_name)
