"""The local engine: runs a SageMaker pipeline definition (JSON) on this machine.

It reads the definition (a file, or DescribePipeline at an endpoint such as moto's),
checks parameter overrides against the definition's Parameters, and runs the steps as a
DAG: a step starts when the steps it reads (`Get` references) and its `DependsOn` have
succeeded; steps nested in a Condition's IfSteps/ElseSteps run only on that outcome;
independent steps run in parallel threads (the heavy work is in child processes, most of
them forked warm from a fork server: pipelines/local/warm.py). Each step honours its
`CacheConfig` and `RetryPolicies`. Progress goes to `progress`; the execution's record is
kept on disk (`records.ExecutionStore`) as steps change state.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from livetrain.aws_errors import is_service_fault, is_throttling
from livetrain.errors import UserError
from pipelines.local import s3io, warm
from pipelines.local.cache import StepCache, cache_key
from pipelines.local.errors import DefinitionError, ExpressionError, StepFailure
from pipelines.local.expressions import Resolver, follow, now_iso, referenced_steps
from pipelines.local.records import ExecutionStatus, ExecutionStore, StepStatus, new_execution_id
from pipelines.local.steps import RUNNERS, SUPPORTED_STEP_TYPES
from pipelines.local.steps.base import Job
from pipelines.local.workers import stop_all

HEARTBEAT_SECONDS = 10.0
BRANCHES = {"IfSteps": True, "ElseSteps": False}
LOG_KEEP_BYTES = 1024 * 1024  # of each job's log once the job has ended (CloudWatch Logs' role on AWS)
JOB_NAME_LIMITS = {"Tuning": 32}  # HyperParameterTuningJobName is at most 32 characters; the others 63


# ---------------------------------------------------------------- definition and parameters

def load_definition_file(path: str | Path) -> dict:
    """A pipeline definition from a JSON file; UserError naming the file if it is missing or not JSON."""
    try:
        definition = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"definition file {path} does not exist; write one with `livetrain pipeline definition`") \
            from None
    except OSError as exc:  # a directory, no permission
        raise UserError(f"cannot read definition file {path} ({exc.strerror}); pass the JSON file written by "
                        "`livetrain pipeline definition --output FILE`") from None
    except ValueError as exc:
        raise UserError(f"definition file {path} is not JSON ({exc})") from None
    if not isinstance(definition, dict) or not isinstance(definition.get("Steps"), list):
        raise UserError(f"definition file {path} has no Steps list; is it a SageMaker pipeline definition?")
    return definition


def fetch_definition(sagemaker, pipeline_name: str) -> tuple[dict, str]:
    """(definition, pipeline ARN) from DescribePipeline."""
    described = sagemaker.describe_pipeline(PipelineName=pipeline_name)
    return json.loads(described["PipelineDefinition"]), described["PipelineArn"]


# ---------------------------------------------------------------- the DAG

@dataclass
class StepPlan:
    """A step of the flattened DAG."""

    name: str
    type: str
    spec: dict
    upstream: set[str]
    branch: tuple[str, bool] | None  # (Condition step, outcome on which this step runs)


def plan_steps(definition: dict) -> dict[str, StepPlan]:
    """Every step (branch steps included) with its upstream steps; DefinitionError if it cannot run."""
    plans: dict[str, StepPlan] = {}

    def add(spec: dict, branch: tuple[str, bool] | None) -> None:
        name, kind = spec.get("Name"), spec.get("Type")
        if name in plans:
            raise DefinitionError(f"two steps are named {name!r}")
        arguments = spec.get("Arguments", {})
        if kind == "Condition":
            arguments = {k: v for k, v in arguments.items() if k not in BRANCHES}
        upstream = referenced_steps(arguments) | set(spec.get("DependsOn", []))
        if branch:
            upstream.add(branch[0])
        plans[name] = StepPlan(name, kind, spec, upstream, branch)
        if kind == "Condition":
            for key, outcome in BRANCHES.items():
                for nested in spec.get("Arguments", {}).get(key, []):
                    add(nested, (name, outcome))

    for spec in definition.get("Steps", []):
        add(spec, None)
    unsupported = sorted({f"{p.name} ({p.type})" for p in plans.values() if p.type not in SUPPORTED_STEP_TYPES})
    if unsupported:
        raise DefinitionError(f"local mode cannot run step {', '.join(unsupported)}; "
                              f"it runs {', '.join(SUPPORTED_STEP_TYPES)}")
    for plan in plans.values():
        missing = sorted(plan.upstream - set(plans))
        if missing:
            raise DefinitionError(f"step {plan.name} refers to step {missing[0]!r}, which the definition lacks")
    _check_acyclic(plans)
    return plans


def _check_acyclic(plans: dict[str, StepPlan]) -> None:
    remaining = {name: set(plan.upstream) for name, plan in plans.items()}
    while remaining:
        ready = [name for name, upstream in remaining.items() if not upstream]
        if not ready:
            raise DefinitionError(f"steps {', '.join(sorted(remaining))} depend on each other in a cycle")
        for name in ready:
            del remaining[name]
        for upstream in remaining.values():
            upstream.difference_update(ready)


def job_name(step_name: str, execution_id: str, step_type: str) -> str:
    """A SageMaker-valid job name unique to the execution: <step>-<execution id>."""
    limit = JOB_NAME_LIMITS.get(step_type, 63)
    safe = re.sub(r"[^A-Za-z0-9-]", "-", step_name).strip("-") or "step"
    return f"{safe[: limit - len(execution_id) - 1]}-{execution_id}"


def _keep_tails(log_path: Path, work_dir: Path) -> None:
    """Cut the step's log and its training jobs' logs to their last LOG_KEEP_BYTES once the job has ended."""
    for path in (log_path, *work_dir.rglob("training.log")):
        if path.exists() and path.stat().st_size > LOG_KEEP_BYTES:
            with path.open("rb") as log:
                log.seek(-LOG_KEEP_BYTES, os.SEEK_END)
                tail = log.read()
            path.write_bytes(b"... (earlier lines left out)\n" + tail)


# ---------------------------------------------------------------- retries

def exception_type(error: BaseException) -> str | None:
    """The RetryPolicies ExceptionType an error counts as; None when it is not retryable."""
    if isinstance(error, StepFailure):
        return error.exception_type
    if is_throttling(error):
        return "Step.THROTTLING"
    if is_service_fault(error):
        return "Step.SERVICE_FAULT"
    return None


def failure_reason(error: BaseException) -> str:
    """One line for a step's failure: a StepFailure's own message, else the error's type and first line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if isinstance(error, StepFailure | ExpressionError):
        return lines[0] if lines else "failed"
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def retry_delay(policies: list[dict], kind: str | None, failures: int, elapsed: float) -> float | None:
    """Seconds to wait before the next attempt, or None when no policy retries this failure."""
    for policy in policies:
        if kind is None or kind not in policy.get("ExceptionType", []):
            continue
        if "MaxAttempts" in policy and failures > policy["MaxAttempts"]:
            return None
        if "ExpireAfterMin" in policy and elapsed > 60 * policy["ExpireAfterMin"]:
            return None
        return policy.get("IntervalSeconds", 1) * policy.get("BackoffRate", 2.0) ** (failures - 1)
    return None


# ---------------------------------------------------------------- one execution

class LocalExecution:
    """One run of a definition; `run()` returns the final record (also kept on disk)."""

    def __init__(self, definition: dict, parameters: dict, *, s3, sagemaker, state_dir: str | Path,
                 pipeline_name: str, pipeline_arn: str, progress: Callable[[str], None] | None = None,
                 max_parallel_steps: int = 4, execution_id: str | None = None, cloudwatch=None):
        """`execution_id`: run an execution already recorded (started through the SageMaker API,
        `submissions.py`), keeping its record's other fields (display name, client token, creation time) and
        the steps that had succeeded (a retried run starts from the step that failed)."""
        self.definition = definition
        self.s3, self.sagemaker, self.cloudwatch = s3, sagemaker, cloudwatch
        self.copies = s3io.LocalCopies()
        self.store = ExecutionStore(state_dir)
        self.cache = StepCache(state_dir)
        self.progress = progress or (lambda line: print(line, file=sys.stderr, flush=True))
        self.max_parallel_steps = max_parallel_steps
        self.id = execution_id or new_execution_id()
        self.arn = f"{pipeline_arn}/execution/{self.id}"
        self.arn_prefix = pipeline_arn.split(":pipeline/")[0]
        self.directory = self.store.execution_dir(self.id)
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._properties: dict[str, dict] = {}
        self._step_clock: dict[str, float] = {}
        self._started = time.monotonic()
        start = now_iso()
        self.execution_variables = {"PipelineExecutionId": self.id, "PipelineExecutionArn": self.arn,
                                    "PipelineName": pipeline_name, "PipelineArn": pipeline_arn,
                                    "StartDateTime": start}
        self.parameters = parameters
        earlier = self.store.load(execution_id) if execution_id else {}
        self._succeeded_before = {name: step for name, step in earlier.get("Steps", {}).items()
                                  if step["StepStatus"] == StepStatus.SUCCEEDED}
        self.record = {**earlier, "PipelineExecutionId": self.id, "PipelineExecutionArn": self.arn,
                       "PipelineName": pipeline_name, "PipelineArn": pipeline_arn, "Parameters": parameters,
                       "PipelineExecutionStatus": ExecutionStatus.EXECUTING, "StartTime": start, "EndTime": None,
                       "FailureReason": None, "Steps": {}}

    # -- public

    def run(self) -> dict:
        warm.start()  # its imports run beside the first steps; the jobs of later steps start warm
        try:
            plans = plan_steps(self.definition)
        except DefinitionError as exc:
            self.progress(f"cannot run this definition: {exc}")
            return self._finish(str(exc))
        self.record["Steps"] = {name: {"StepName": name, "StepType": plan.type, "StepStatus": StepStatus.PENDING,
                                       "Upstream": sorted(plan.upstream),
                                       "Branch": list(plan.branch) if plan.branch else None}
                                for name, plan in plans.items()}
        for name, step in self._succeeded_before.items():  # a retry reuses them: they do not run again
            if name in plans and step["StepType"] == plans[name].type:
                self.record["Steps"][name] = step
                self._properties[name] = step.get("Properties", {})
        self._set()
        self.progress(f"execution {self.id}: {len(plans)} steps, records in {self.directory}")
        try:
            self._run_dag(plans)
        except KeyboardInterrupt:
            self._finish("interrupted", status=ExecutionStatus.STOPPED)
            raise
        failed = self._failed_step()
        stopped = self.store.stop_requested(self.id)
        for step in self.record["Steps"].values():
            if step["StepStatus"] == StepStatus.PENDING:
                self._set(step["StepName"], StepStatus=StepStatus.NOT_EXECUTED,
                          Reason="the execution was stopped" if stopped else f"step {failed} failed")
        if stopped:
            self.progress(f"execution {self.id}: stopped")
            return self._finish(None, status=ExecutionStatus.STOPPED)
        if failed is None:
            return self._finish(None)
        step = self.record["Steps"][failed]
        if step["StepType"] == "Fail":
            return self._finish(step["FailureReason"])
        return self._finish(f"step {failed} failed: {step['FailureReason']}")

    # -- scheduling

    def _run_dag(self, plans: dict[str, StepPlan]) -> None:
        """Start every ready step, in parallel, until nothing runs; no new step starts once one failed or a stop
        was requested (StopPipelineExecution: the running steps finish, nothing after them starts)."""
        with ThreadPoolExecutor(self.max_parallel_steps, thread_name_prefix="step") as pool:
            running: dict = {}
            try:
                while True:
                    self._skip_unreachable(plans)
                    if not self._failed_step() and not self.store.stop_requested(self.id):
                        for name in self._ready(plans, running.values()):
                            self._step_clock[name] = time.monotonic()
                            running[pool.submit(self._run_step, plans[name])] = name
                    if not running:
                        return
                    done, _ = wait(running, timeout=HEARTBEAT_SECONDS, return_when=FIRST_COMPLETED)
                    for future in done:
                        future.result()
                        del running[future]
                    if not done:
                        self._heartbeat(running.values())
            except KeyboardInterrupt:
                stop_all()  # a running Tuning step's jobs stop and its thread ends, so the pool can shut down
                raise

    def _status(self, name: str) -> str:
        return self.record["Steps"][name]["StepStatus"]

    def _failed_step(self) -> str | None:
        return next((n for n, s in self.record["Steps"].items() if s["StepStatus"] == StepStatus.FAILED), None)

    def _branch_open(self, plan: StepPlan) -> bool | None:
        """True/False once the gating Condition has decided; None while undecided or ungated."""
        if not plan.branch:
            return True
        condition, outcome = plan.branch
        if self._status(condition) != StepStatus.SUCCEEDED:
            return None
        return self._properties[condition]["Outcome"] == outcome

    def _ready(self, plans: dict[str, StepPlan], running) -> list[str]:
        return [name for name, plan in plans.items()
                if self._status(name) == StepStatus.PENDING and name not in running
                and all(self._status(u) == StepStatus.SUCCEEDED for u in plan.upstream) and self._branch_open(plan)]

    def _skip_unreachable(self, plans: dict[str, StepPlan]) -> None:
        """Mark NotExecuted the steps of an untaken branch and the steps that read them, transitively."""
        changed = True
        while changed:
            changed = False
            for name, plan in plans.items():
                if self._status(name) != StepStatus.PENDING:
                    continue
                reason = None
                if plan.branch and self._branch_open(plan) is False:
                    reason = f"{plan.branch[0]} evaluated to {not plan.branch[1]}"
                elif any(self._status(u) == StepStatus.NOT_EXECUTED for u in plan.upstream):
                    reason = "an upstream step was not executed"
                if reason:
                    self._set(name, StepStatus=StepStatus.NOT_EXECUTED, Reason=reason)
                    self.progress(f"{name}: not executed ({reason})")
                    changed = True

    def _heartbeat(self, running) -> None:
        for name in running:
            seconds = time.monotonic() - self._step_clock[name]
            job = self._jobs.get(name)
            detail = f": {job.last_line[:100]}" if job and job.last_line else ""
            self.progress(f"{name}: running for {seconds:.0f} s{detail}")

    # -- one step

    def _run_step(self, plan: StepPlan) -> None:
        name = plan.name
        self._set(name, StepStatus=StepStatus.EXECUTING, StartTime=now_iso(), AttemptCount=0)
        self.progress(f"{name}: started ({plan.type})")
        try:
            properties = self._execute(plan)
        except Exception as exc:
            reason = failure_reason(exc)
            self._set(name, StepStatus=StepStatus.FAILED, EndTime=now_iso(), FailureReason=reason)
            self.progress(f"{name}: Failed after {self._elapsed(name)}: {reason}")
            return
        self._properties[name] = properties
        self._set(name, StepStatus=StepStatus.SUCCEEDED, EndTime=now_iso(), Properties=properties)
        outcome = f" (Outcome {properties['Outcome']})" if plan.type == "Condition" else ""
        cached = " from cache" if self.record["Steps"][name].get("CacheHitResult") else ""
        self.progress(f"{name}: Succeeded{cached} in {self._elapsed(name)}{outcome}")

    def _execute(self, plan: StepPlan) -> dict:
        """Resolve, consult the cache, run with retries; the step's properties."""
        name = plan.name
        arguments = plan.spec.get("Arguments", {})
        if plan.type == "Condition":
            arguments = {k: v for k, v in arguments.items() if k not in BRANCHES}
        name_of_job = job_name(name, self.id, plan.type)
        variables = {"ProcessingJobName": name_of_job} if plan.type == "Processing" else {}
        resolver = Resolver(self.parameters, {**self.execution_variables, **variables}, self._step_properties,
                            read_json=lambda uri: s3io.read_json(self.s3, uri))
        resolved = resolver.resolve(arguments)
        if plan.type == "Lambda":  # SageMaker invokes the function with the Arguments as its event
            resolved = {"FunctionArn": plan.spec["FunctionArn"], "Payload": resolved,
                        "OutputParameters": plan.spec.get("OutputParameters", [])}

        cache_config = plan.spec.get("CacheConfig", {})
        key = cache_key(plan.type, resolved) if cache_config.get("Enabled") else None
        if key:
            try:
                entry = self.cache.lookup(key, cache_config.get("ExpireAfter"))
            except ValueError as exc:
                raise StepFailure(str(exc)) from None
            if entry:
                source = f"{self.arn.rsplit('/execution/', 1)[0]}/execution/{entry['PipelineExecutionId']}"
                self._set(name, CacheHitResult={"SourcePipelineExecutionArn": source})
                return entry["Properties"]

        log_path = self.directory / "logs" / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        work_dir = self.directory / "jobs" / name
        job = Job(step_name=name, job_name=name_of_job, arn_prefix=self.arn_prefix, work_dir=work_dir,
                  log_path=log_path, s3=self.s3, sagemaker=self.sagemaker, cloudwatch=self.cloudwatch,
                  copies=self.copies)
        self._jobs[name] = job
        self._set(name, LogFile=str(log_path), JobName=name_of_job)
        first_attempt, failures = time.monotonic(), 0
        while True:
            shutil.rmtree(work_dir, ignore_errors=True)
            work_dir.mkdir(parents=True)
            self._set(name, AttemptCount=failures + 1)
            job.log(f"== {name} ({plan.type}) attempt {failures + 1}")
            try:
                properties = RUNNERS[plan.type](resolved, job)
                properties = self._with_property_files(plan, properties)
                break
            except Exception as exc:  # its log ends with why (a Fail step's message, a script's last error)
                job.log(f"failed: {exc}" if isinstance(exc, StepFailure | ExpressionError) else traceback.format_exc())
                failures += 1
                kind = exception_type(exc)
                delay = retry_delay(plan.spec.get("RetryPolicies", []), kind, failures,
                                    time.monotonic() - first_attempt)
                if delay is None:
                    raise
                self.progress(f"{name}: attempt {failures} failed ({kind}: {exc}); retrying in {delay:g} s")
                time.sleep(delay)
            finally:  # each attempt's end
                _keep_tails(log_path, work_dir)
        if key:
            self.cache.store(key, self.id, name, properties)
        return properties

    def _with_property_files(self, plan: StepPlan, properties: dict) -> dict:
        """A Processing step's PropertyFiles, read from the outputs it uploaded to S3."""
        files = {}
        for item in plan.spec.get("PropertyFiles", []):
            output = follow(properties, f"ProcessingOutputConfig.Outputs['{item['OutputName']}'].S3Output.S3Uri",
                            f"PropertyFile {item['PropertyFileName']}")
            files[item["PropertyFileName"]] = s3io.read_json(self.s3, f"{output.rstrip('/')}/{item['FilePath']}")
        return {**properties, "PropertyFiles": files} if files else properties

    def _step_properties(self, name: str) -> dict:
        if name not in self._properties:
            raise ExpressionError(f"step {name} has not succeeded, so its properties are unknown")
        return self._properties[name]

    # -- the record

    def _elapsed(self, name: str) -> str:
        return f"{time.monotonic() - self._step_clock[name]:.1f} s"

    def _set(self, name: str | None = None, **fields) -> None:
        """Update a step's record (or the execution's, when `name` is None) and write it to disk."""
        with self._lock:
            (self.record["Steps"][name] if name else self.record).update(fields)
            self.store.save(self.record)

    def _finish(self, failure_reason: str | None, status: str | None = None) -> dict:
        status = status or (ExecutionStatus.FAILED if failure_reason else ExecutionStatus.SUCCEEDED)
        self._set(PipelineExecutionStatus=status, FailureReason=failure_reason, EndTime=now_iso(),
                  DurationSeconds=round(time.monotonic() - self._started, 2))
        return self.record

