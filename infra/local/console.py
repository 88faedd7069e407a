"""`livetrain local console`: a web page over the local stack, talking to it only through the SageMaker API.

Like Studio, it is a client: ordinary boto3 clients against the stack's AWS endpoint (the AWS_ENDPOINT_URL a
shell exports). It shows the pipeline's executions (ListPipelineExecutions), one run's DAG (its definition from
DescribePipelineDefinitionForExecution, drawn as the report draws it) and steps with their
status, durations and metadata (ListPipelineExecutionSteps; the page refreshes them while the run is
Executing) and its evaluation with 95 % intervals (evaluation.json, found through the evaluation step's
DescribeProcessingJob), the model registry (ListModelPackages, DescribeModelPackage; each package's metrics
from its ModelQuality statistics in S3) with Approve and Reject buttons that call UpdateModelPackage with the
comment as ApprovalDescription, Stop and Retry buttons on a run (StopPipelineExecution, RetryPipelineExecution), and
the endpoint's serving version (DescribeEndpoint → its config's model →
the model package the deploy Lambda built it from). A run's page also shows the report's plots (tuning, verdict,
confusion matrix; pipelines/local/report.py draws them from the same API answers), and each step's logs.

Logs: on AWS, Studio shows a step's logs from CloudWatch Logs (/aws/sagemaker/ProcessingJobs,
/aws/sagemaker/TrainingJobs, one stream per job). The local engine writes them as files beside its records
(<state dir>/executions/<id>/logs/<step>.log, and each training job's training.log under jobs/<step>/); the console
reads those, the last LOG_TAIL_BYTES of each, when it is given the state directory.

aiohttp serves it on 127.0.0.1; jinja2 renders the templates in console_templates/ beside this module. The
live parts (executions, endpoint, a run's steps) are fragments a little JS on the page fetches every second.
"""

from __future__ import annotations

import asyncio
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import jinja2
from aiohttp import web
from botocore.exceptions import BotoCoreError, ClientError

from infra.local.services import local_client
from lambdas.epics import epic_name
from livetrain.aws_errors import describe, is_not_found
from livetrain.config import Config
from livetrain.errors import UserError
from pipelines.local.engine import plan_steps
from pipelines.local.records import ExecutionStore, StepStatus
from pipelines.local.report import interval_text, models_of, plot_confusion, plot_dag, plot_tuning, plot_verdict

TEMPLATES = Path(__file__).with_name("console_templates")
METRICS = ("precision", "recall", "auc", "lift", "precision_at_target_recall")
DECISIONS = ("Approved", "Rejected")
MAX_EXECUTIONS = 20
LOG_TAIL_BYTES = 64 * 1024  # of each log file shown
PLOTS = ("tuning", "verdict", "confusion")


class StackView:
    """What the console shows, read through the SageMaker (and S3) API of the stack at `endpoint_url`."""

    def __init__(self, config: Config, endpoint_url: str, state_dir: Path | None = None):
        self.config = config
        self.sagemaker = local_client("sagemaker", endpoint_url, config.region)
        self.s3 = local_client("s3", endpoint_url, config.region)
        self.records = ExecutionStore(state_dir) if state_dir else None  # the engine's, for the step logs

    def executions(self) -> list[dict]:
        """The newest executions first, each with its status, start and (once finished) duration; none before the
        pipeline exists."""
        try:
            summaries = self.sagemaker.list_pipeline_executions(
                PipelineName=self.config.pipeline_name, SortOrder="Descending",
                MaxResults=MAX_EXECUTIONS)["PipelineExecutionSummaries"]
        except ClientError as error:
            if is_not_found(error):
                return []
            raise
        return [self.execution(summary["PipelineExecutionArn"]) for summary in summaries]

    def execution(self, arn: str) -> dict:
        described = self.sagemaker.describe_pipeline_execution(PipelineExecutionArn=arn)
        status = described["PipelineExecutionStatus"]
        return {"arn": arn, "id": arn.rsplit("/", 1)[-1], "status": status,
                "name": described.get("PipelineExecutionDisplayName", ""),
                "start": described["CreationTime"], "failure": described.get("FailureReason", ""),
                "duration": None if status in ("Executing", "Stopping") else
                described["LastModifiedTime"] - described["CreationTime"]}

    def _steps(self, arn: str) -> list[dict]:
        pages = self.sagemaker.get_paginator("list_pipeline_execution_steps").paginate(PipelineExecutionArn=arn)
        return [step for page in pages for step in page["PipelineExecutionSteps"]]

    def steps(self, arn: str) -> list[dict]:
        """Each step, in the order it started (the API answers newest first), with its metadata in one line."""
        return [{"name": step["StepName"], "status": step["StepStatus"], "start": step.get("StartTime"),
                 "duration": step["EndTime"] - step["StartTime"] if step.get("EndTime") and step.get("StartTime")
                 else None, "failure": step.get("FailureReason", ""), "metadata": _metadata_text(step["Metadata"])}
                for step in reversed(self._steps(arn))]

    def dag_png(self, arn: str) -> bytes:
        """The run's DAG with each step's status so far, as Studio draws it: the definition the run started with
        (DescribePipelineDefinitionForExecution) and its steps (ListPipelineExecutionSteps). A step not started is
        Pending while the run goes on, NotExecuted once it has ended."""
        definition = json.loads(self.sagemaker.describe_pipeline_definition_for_execution(
            PipelineExecutionArn=arn)["PipelineDefinition"])
        live = self.execution(arn)["status"] in ("Executing", "Stopping")
        not_started = StepStatus.PENDING if live else StepStatus.NOT_EXECUTED
        started = {step["StepName"]: step for step in self._steps(arn)}
        steps = {}
        for name, plan in plan_steps(definition).items():
            step = started.get(name, {})
            steps[name] = {"StepType": plan.type, "Upstream": sorted(plan.upstream), "Branch": plan.branch,
                           "StepStatus": step.get("StepStatus", not_started),
                           **{key: step[key].isoformat() for key in ("StartTime", "EndTime") if step.get(key)}}
        image = io.BytesIO()
        plot_dag(steps, image)
        return image.getvalue()

    def run_evaluation(self, arn: str) -> dict | None:
        """The run's evaluation.json: the output named "evaluation" of one of its processing jobs."""
        for step in self._steps(arn):
            job = step["Metadata"].get("ProcessingJob", {}).get("Arn")
            if not job:
                continue
            try:
                outputs = self.sagemaker.describe_processing_job(ProcessingJobName=job.rsplit("/", 1)[-1]).get(
                    "ProcessingOutputConfig", {}).get("Outputs", [])
            except ClientError as error:
                if is_not_found(error):
                    continue
                raise
            for output in outputs:
                if output["OutputName"] == "evaluation":
                    return self._json(output["S3Output"]["S3Uri"].rstrip("/") + "/evaluation.json")
        return None

    def tuning(self, arn: str) -> dict | None:
        """The run's tuning job as DescribeHyperParameterTuningJob answers, with its training jobs
        (ListTrainingJobsForHyperParameterTuningJob); None if no tuning job ran."""
        job = next((step["Metadata"]["TuningJob"]["Arn"] for step in self._steps(arn)
                    if step["Metadata"].get("TuningJob", {}).get("Arn")), None)
        if job is None:
            return None
        name = job.rsplit("/", 1)[-1]
        described = self.sagemaker.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
        pages = self.sagemaker.get_paginator("list_training_jobs_for_hyper_parameter_tuning_job").paginate(
            HyperParameterTuningJobName=name)
        return {**described, "TrainingJobSummaries": [job for page in pages for job in page["TrainingJobSummaries"]]}

    def plot_png(self, arn: str, name: str) -> bytes | None:
        """One of the report's PLOTS for the run; None when the run has nothing to draw it from (yet)."""
        source = self.tuning(arn) if name == "tuning" else self.run_evaluation(arn)
        if source is None:
            return None
        image = io.BytesIO()
        {"tuning": plot_tuning, "verdict": plot_verdict, "confusion": plot_confusion}[name](source, image)
        return image.getvalue()

    def step_logs(self, execution_id: str, step_name: str) -> dict | None:
        """{"status", "cached_from", "logs": [(title, text)]} for one step of a run, from the engine's log files;
        None when the run or the step is unknown. A step that has not run has no logs."""
        try:
            step = self.records.load(execution_id)["Steps"][step_name]
        except (UserError, KeyError):
            return None
        directory = self.records.execution_dir(execution_id)
        files = [Path(step["LogFile"])] if step.get("LogFile") else []
        files += sorted((directory / "jobs" / step_name).rglob("training.log"))  # a tuning step's training jobs
        return {"status": step["StepStatus"], "logs": [(_log_title(path), _tail(path)) for path in files
                                                       if path.exists()],
                "cached_from": step.get("CacheHitResult", {}).get("SourcePipelineExecutionArn", "")}

    def packages(self) -> list[dict]:
        """The configured epic's group's packages, newest first, with approval status, comment and metrics."""
        summaries = self.sagemaker.list_model_packages(
            ModelPackageGroupName=epic_name(self.config.model_package_group, self.config.epic), SortBy="CreationTime",
            SortOrder="Descending")["ModelPackageSummaryList"]
        packages = []
        for summary in summaries:
            package = self.sagemaker.describe_model_package(ModelPackageName=summary["ModelPackageArn"])
            statistics = package.get("ModelMetrics", {}).get("ModelQuality", {}).get("Statistics", {})
            packages.append({
                "arn": package["ModelPackageArn"], "version": package.get("ModelPackageVersion"),
                "status": package["ModelApprovalStatus"], "comment": package.get("ApprovalDescription", ""),
                "created": package["CreationTime"],
                "evaluation": self._json(statistics["S3Uri"]) if statistics.get("S3Uri") else None})
        return packages

    def endpoint(self) -> dict | None:
        """The configured epic's endpoint's status and the package version it serves; None before the first
        deployment."""
        try:
            endpoint = self.sagemaker.describe_endpoint(EndpointName=epic_name(self.config.endpoint_name,
                                                                               self.config.epic))
            config = self.sagemaker.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
            model = self.sagemaker.describe_model(ModelName=config["ProductionVariants"][0]["ModelName"])
        except ClientError as error:
            if is_not_found(error):
                return None
            raise
        package = model.get("PrimaryContainer", {}).get("ModelPackageName", "")
        return {"name": endpoint["EndpointName"], "status": endpoint["EndpointStatus"],
                "config": endpoint["EndpointConfigName"], "model": model["ModelName"], "package": package,
                "version": package.rsplit("/", 1)[-1] if package else ""}

    def decide(self, arn: str, decision: str, comment: str) -> None:
        """Approve or reject a package, the comment as its ApprovalDescription (what Studio's dialog sends)."""
        self.sagemaker.update_model_package(ModelPackageArn=arn, ModelApprovalStatus=decision,
                                            ApprovalDescription=comment)

    def stop(self, arn: str) -> None:
        """StopPipelineExecution: a queued run never starts, a running one stops at its next step boundary."""
        self.sagemaker.stop_pipeline_execution(PipelineExecutionArn=arn)

    def retry(self, arn: str) -> None:
        """RetryPipelineExecution: a Failed run again, from its failed step."""
        self.sagemaker.retry_pipeline_execution(PipelineExecutionArn=arn)  # botocore fills in the client token

    def _json(self, uri: str) -> dict | None:
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        try:
            return json.loads(self.s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        except ClientError as error:
            if is_not_found(error):
                return None
            raise


def _metadata_text(metadata: dict) -> str:
    """A step's Metadata in one line: the job or package ARN, the condition's outcome, the fail message."""
    parts = []
    for kind, value in metadata.items():
        if "Arn" in value:
            parts.append(f"{kind}: {value['Arn']}")
        elif "Outcome" in value:
            parts.append(f"outcome: {value['Outcome']}")
        elif "ErrorMessage" in value:
            parts.append(value["ErrorMessage"])
    return "; ".join(parts)


def _log_title(path: Path) -> str:
    """A training job's log by its job's name, the step's own log as "step"."""
    return path.parent.name if path.name == "training.log" else "step"


def _tail(path: Path) -> str:
    """The last LOG_TAIL_BYTES of a log, saying how much was left out."""
    size = path.stat().st_size
    with path.open("rb") as log:
        log.seek(max(0, size - LOG_TAIL_BYTES))
        text = log.read().decode(errors="replace")
    return text if size <= LOG_TAIL_BYTES else f"… (the first {size - LOG_TAIL_BYTES:,} bytes left out)\n{text}"


def metric_rows(evaluation: dict) -> list[tuple[str, ...]]:
    """(metric, value [lower, upper] for each scored model); the base rate last."""
    models = models_of(evaluation)
    rows = [(name, *(interval_text(values.get(name)) for values in models.values())) for name in METRICS]
    return [*rows, ("base rate", interval_text(evaluation["base_rate"]), *[""] * (len(models) - 1))]


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value else ""


def _seconds(value) -> str:
    return f"{value.total_seconds():.1f} s" if value is not None else ""


def _templates() -> jinja2.Environment:
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                                     undefined=jinja2.StrictUndefined)
    environment.filters.update(when=_when, seconds=_seconds)
    environment.globals.update(models_of=models_of, metric_rows=metric_rows)
    return environment


def build_app(view: StackView) -> web.Application:
    templates = _templates()

    def page(name: str, **context) -> web.Response:
        return web.Response(text=templates.get_template(name).render(config=view.config, **context),
                            content_type="text/html")

    async def call(function, *args):  # boto3 blocks: off the event loop
        return await asyncio.to_thread(function, *args)

    async def index(request: web.Request) -> web.Response:
        return page("index.html", executions=await call(view.executions), packages=await call(view.packages),
                    endpoint=await call(view.endpoint))

    async def executions_part(request: web.Request) -> web.Response:
        return page("executions.html", executions=await call(view.executions))

    async def endpoint_part(request: web.Request) -> web.Response:
        return page("endpoint.html", endpoint=await call(view.endpoint))

    async def execution_arn(request: web.Request) -> str:
        pipeline = await call(lambda: view.sagemaker.describe_pipeline(PipelineName=view.config.pipeline_name))
        return f"{pipeline['PipelineArn']}/execution/{request.match_info['id']}"

    async def execution(request: web.Request) -> web.Response:
        arn = await execution_arn(request)
        evaluation = await call(view.run_evaluation, arn)
        plots = [*(["tuning"] if await call(view.tuning, arn) else []), *(["verdict", "confusion"] if evaluation
                                                                           else [])]
        return page("execution.html", execution=await call(view.execution, arn), steps=await call(view.steps, arn),
                    evaluation=evaluation, plots=plots)

    async def steps_part(request: web.Request) -> web.Response:
        arn = await execution_arn(request)
        return page("steps.html", execution=await call(view.execution, arn), steps=await call(view.steps, arn))

    async def dag(request: web.Request) -> web.Response:
        arn = await execution_arn(request)
        return web.Response(body=await call(view.dag_png, arn), content_type="image/png")

    async def plot(request: web.Request) -> web.Response:
        image = await call(view.plot_png, await execution_arn(request), request.match_info["name"])
        if image is None:
            raise web.HTTPNotFound(text="this run has nothing to draw that plot from (yet)")
        return web.Response(body=image, content_type="image/png")

    async def logs(request: web.Request) -> web.Response:
        if view.records is None:
            raise web.HTTPNotFound(text="this console was started without the stack's state directory: no logs")
        execution_id, step = request.match_info["id"], request.match_info["step"]
        found = await call(view.step_logs, execution_id, step)
        if found is None:
            raise web.HTTPNotFound(text=f"execution {execution_id} has no step {step}")
        return page("logs.html", execution_id=execution_id, step=step, **found)

    async def decide(request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("decision") not in DECISIONS or not form.get("arn"):
            raise web.HTTPBadRequest(text="a decision needs the package's arn and decision=Approved or Rejected")
        await call(view.decide, form["arn"], form["decision"], form.get("comment", "").strip())
        raise web.HTTPSeeOther("/#registry")

    async def control(request: web.Request) -> web.Response:
        arn = await execution_arn(request)
        await call(view.stop if request.match_info["action"] == "stop" else view.retry, arn)
        raise web.HTTPSeeOther(f"/executions/{request.match_info['id']}")

    @web.middleware
    async def aws_errors(request: web.Request, handler):
        try:
            return await handler(request)
        except (ClientError, BotoCoreError) as error:
            return web.Response(status=502, text=f"the local stack answered: {describe(error)}")

    app = web.Application(middlewares=[aws_errors])
    app.router.add_get("/", index)
    app.router.add_get("/parts/executions", executions_part)
    app.router.add_get("/parts/endpoint", endpoint_part)
    app.router.add_get("/executions/{id}", execution)
    app.router.add_get("/parts/executions/{id}/steps", steps_part)
    app.router.add_get("/executions/{id}/dag.png", dag)
    app.router.add_get("/executions/{id}/plots/{name:" + "|".join(PLOTS) + "}.png", plot)
    app.router.add_get("/executions/{id}/steps/{step}/logs", logs)
    app.router.add_post("/packages/decision", decide)
    app.router.add_post(r"/executions/{id}/{action:stop|retry}", control)
    return app


def background_console(config: Config, endpoint_url: str, state_dir: Path | None = None, port: int = 0):
    """The console over the stack at `endpoint_url` (its step logs from `state_dir`), served from a background
    thread (a context manager)."""
    from pipelines.local.app_server import BackgroundApp

    return BackgroundApp(lambda: build_app(StackView(config, endpoint_url, state_dir)), port, name="console")


def serve(config: Config, endpoint_url: str, state_dir: Path, port: int = 0) -> None:
    """`livetrain local console`: serve the console in the foreground until Ctrl-C or SIGTERM."""
    from pipelines.local.app_server import serve_until_stopped

    serve_until_stopped(background_console(config, endpoint_url, state_dir, port),
                        lambda url: print(f"the console: {url} (Ctrl-C stops it)", flush=True))
