"""The SageMaker pipeline-execution API answered from the local engine's records (moto only records executions).

Plain functions from a request's parameters to a response's fields, each reading or writing the state
directory (`pipelines/local/records.py`, `submissions.py`); `moto_gaps.py` installs them as moto's handlers.
A lookup that fails raises `NotFound`; a request SageMaker would refuse raises `Invalid` (moto's own
exception types are chosen there, so this module needs no moto).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from livetrain.errors import UserError
from pipelines.local.records import ExecutionStatus, ExecutionStore, StepStatus
from pipelines.local.submissions import StateConflict, Submissions
from pipelines.parameters import resolve_parameters

# SageMaker's step metadata for each step type: the key under Metadata, the property holding the ARN, and the
# ARN's resource type for a job that failed (no properties then: its ARN follows from its name).
_METADATA_ARN = {"Processing": ("ProcessingJob", "ProcessingJobArn", "processing-job"),
                 "Tuning": ("TuningJob", "HyperParameterTuningJobArn", "hyper-parameter-tuning-job"),
                 "Transform": ("TransformJob", "TransformJobArn", "transform-job"),
                 "Model": ("Model", "ModelArn", None),
                 "RegisterModel": ("RegisterModel", "ModelPackageArn", None)}


class NotFound(Exception):
    """No such execution."""


class Invalid(Exception):
    """A request SageMaker would refuse (ValidationException)."""


class Conflict(Exception):
    """A request the execution's state does not allow (ConflictException)."""


def _time(text: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


class ExecutionApi:
    def __init__(self, state_dir: str | Path):
        self.store = ExecutionStore(state_dir)
        self.submissions = Submissions(state_dir)

    def _record(self, arn: str) -> dict:
        try:
            return self.store.load(arn or "")
        except UserError:
            raise NotFound(f"Pipeline execution '{arn}' does not exist.") from None

    def start(self, *, pipeline_name: str, pipeline_arn: str, definition_json: str, parameters: list[dict] | None,
              display_name: str | None, description: str | None, client_token: str | None) -> dict:
        """StartPipelineExecution: the parameters are checked against the definition's, then the run is queued."""
        try:
            definition = json.loads(definition_json or "{}")
        except json.JSONDecodeError:
            raise Invalid(f"pipeline {pipeline_name}'s definition is not JSON; local mode cannot run it") from None
        values = {item["Name"]: str(item["Value"]) for item in parameters or []}
        try:
            resolve_parameters(definition, values)
        except UserError as exc:
            raise Invalid(str(exc)) from None
        record = self.submissions.submit(pipeline_name=pipeline_name, pipeline_arn=pipeline_arn,
                                         definition=definition, parameters=values, display_name=display_name,
                                         description=description, client_token=client_token)
        return {"PipelineExecutionArn": record["PipelineExecutionArn"]}

    def _status(self, record: dict) -> str:
        """The record's status, or Stopping while a requested stop waits for the running steps."""
        status = record["PipelineExecutionStatus"]
        if status == ExecutionStatus.EXECUTING and self.store.stop_requested(record["PipelineExecutionId"]):
            return ExecutionStatus.STOPPING
        return status

    def stop(self, arn: str) -> dict:
        """StopPipelineExecution: a queued run never starts; a running one stops at its next step boundary."""
        return self._transition(self.submissions.stop, arn)

    def retry(self, arn: str, client_token: str | None) -> dict:
        """RetryPipelineExecution: a Failed run again, from the step that failed (succeeded steps are reused)."""
        return self._transition(lambda execution_id: self.submissions.retry(execution_id, client_token), arn)

    def _transition(self, change, arn: str) -> dict:
        record = self._record(arn)
        try:
            change(record["PipelineExecutionId"])
        except StateConflict as exc:
            raise Conflict(str(exc)) from None
        return {"PipelineExecutionArn": record["PipelineExecutionArn"]}

    def describe(self, arn: str) -> dict:
        record = self._record(arn)
        path = self.store.execution_dir(record["PipelineExecutionId"]) / "execution.json"
        answer = {"PipelineArn": record["PipelineArn"], "PipelineExecutionArn": record["PipelineExecutionArn"],
                  "PipelineExecutionDisplayName": record.get("PipelineExecutionDisplayName"),
                  "PipelineExecutionStatus": self._status(record),
                  "PipelineExecutionDescription": record.get("PipelineExecutionDescription"),
                  "CreationTime": _time(record.get("CreationTime") or record["StartTime"]),
                  "LastModifiedTime": dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC)}
        if record.get("FailureReason"):
            answer["FailureReason"] = record["FailureReason"]
        return {k: v for k, v in answer.items() if v is not None}

    def definition(self, arn: str) -> dict:
        """DescribePipelineDefinitionForExecution: the definition as it stood when the execution started."""
        record = self._record(arn)
        return {"PipelineDefinition": json.dumps(self.submissions.definition(record["PipelineExecutionId"])),
                "CreationTime": _time(record.get("CreationTime") or record["StartTime"])}

    def list(self, pipeline_name: str, *, sort_by: str | None = None, sort_order: str | None = None,
             max_results: int | None = None, next_token: str | None = None) -> dict:
        """ListPipelineExecutions: newest first unless asked otherwise, in pages of MaxResults (default 50)."""
        records = [r for r in self.store.all() if r.get("PipelineName") == pipeline_name]
        key = "PipelineExecutionArn" if sort_by == "PipelineExecutionArn" else "CreationTime"
        records.sort(key=lambda r: r.get(key) or r.get("StartTime") or "", reverse=sort_order != "Ascending")
        summaries = [{"PipelineExecutionArn": r["PipelineExecutionArn"], "StartTime": _time(r["StartTime"]),
                      "PipelineExecutionStatus": self._status(r),
                      "PipelineExecutionDisplayName": r.get("PipelineExecutionDisplayName"),
                      "PipelineExecutionDescription": r.get("PipelineExecutionDescription"),
                      "PipelineExecutionFailureReason": r.get("FailureReason")} for r in records]
        return _page("PipelineExecutionSummaries", [{k: v for k, v in s.items() if v is not None} for s in summaries],
                     max_results, next_token)

    def steps(self, arn: str, *, sort_order: str | None = None, max_results: int | None = None,
              next_token: str | None = None) -> dict:
        """ListPipelineExecutionSteps: the steps that have started, the latest first (SageMaker's default)."""
        record = self._record(arn)
        started = [s for s in record.get("Steps", {}).values() if s.get("StartTime")]
        started.sort(key=lambda s: s["StartTime"], reverse=sort_order != "Ascending")
        return _page("PipelineExecutionSteps", [step_summary(s, _arn_prefix(record)) for s in started],
                     max_results, next_token)

    # ------------------------------------------------------------ the jobs behind the steps

    def _job_step(self, step_type: str, job_name: str) -> tuple[dict, dict] | None:
        """(record, step) of the step that ran the job (a cache hit runs none), the newest first. Job names are
        unique regardless of case (their ARNs are lower-cased), so they match regardless of case."""
        for record in self.store.all():
            for step in record.get("Steps", {}).values():
                if step["StepType"] == step_type and (step.get("JobName") or "").lower() == job_name.lower():
                    return record, step
        return None

    def _job(self, step_type: str, job_name: str, metadata_key: str) -> tuple[dict, dict] | None:
        """(the step's properties, the fields every Describe of its job has), or None if no step ran it."""
        found = self._job_step(step_type, job_name)
        if found is None:
            return None
        record, step = found
        common = {"Name": step["JobName"], "Arn": step_metadata(step, _arn_prefix(record))[metadata_key]["Arn"],
                  "Status": _JOB_STATUS[step["StepStatus"]], "CreationTime": step["StartTime"],
                  "EndTime": step.get("EndTime"), "LastModifiedTime": step.get("EndTime") or step["StartTime"],
                  "FailureReason": step.get("FailureReason")}
        return step.get("Properties") or {}, common

    def describe_processing_job(self, name: str) -> dict | None:
        """DescribeProcessingJob for a job a Processing step ran (None: not one of the engine's)."""
        return self._describe_job("Processing", name, last_modified=True)

    def describe_transform_job(self, name: str) -> dict | None:
        """DescribeTransformJob for a job a Transform step ran (None: not one of the engine's)."""
        return self._describe_job("Transform", name)

    def _describe_job(self, kind: str, name: str, last_modified: bool = False) -> dict | None:
        """Describe<kind>Job from the step's properties and its record (SageMaker's field names)."""
        found = self._job(kind, name, f"{kind}Job")
        if found is None:
            return None
        properties, common = found
        answer = {**{k: v for k, v in properties.items() if k != "PropertyFiles"}, f"{kind}JobName": common["Name"],
                  f"{kind}JobArn": common["Arn"], f"{kind}JobStatus": common["Status"],
                  "CreationTime": common["CreationTime"], f"{kind}StartTime": common["CreationTime"],
                  f"{kind}EndTime": common["EndTime"], "FailureReason": common["FailureReason"],
                  "LastModifiedTime": common["LastModifiedTime"] if last_modified else None}
        return {k: v for k, v in answer.items() if v is not None}

    def describe_tuning_job(self, name: str) -> dict | None:
        """DescribeHyperParameterTuningJob for a job a Tuning step ran (None: not one of the engine's)."""
        found = self._job("Tuning", name, "TuningJob")
        if found is None:
            return None
        properties, common = found
        answer = {"CreationTime": common["CreationTime"], **properties, "HyperParameterTuningJobName": common["Name"],
                  "HyperParameterTuningJobArn": common["Arn"], "HyperParameterTuningJobStatus": common["Status"],
                  "LastModifiedTime": common["LastModifiedTime"], "FailureReason": common["FailureReason"]}
        return {k: v for k, v in answer.items() if v is not None}

    def list_training_jobs(self, tuning_job_name: str, *, sort_by: str | None = None, sort_order: str | None = None,
                           status_equals: str | None = None, max_results: int | None = None,
                           next_token: str | None = None) -> dict | None:
        """ListTrainingJobsForHyperParameterTuningJob (by Name, ascending, unless asked otherwise)."""
        found = self._job("Tuning", tuning_job_name, "TuningJob")
        if found is None:
            return None
        jobs = [job for job in found[0].get("TrainingJobSummaries", [])
                if status_equals in (None, job["TrainingJobStatus"])]
        if sort_by == "FinalObjectiveMetricValue":  # SageMaker leaves out the jobs without one
            jobs = [job for job in jobs if "FinalHyperParameterTuningJobObjectiveMetric" in job]
        key = {"CreationTime": lambda job: job["CreationTime"], "Status": lambda job: job["TrainingJobStatus"],
               "FinalObjectiveMetricValue": lambda job: job["FinalHyperParameterTuningJobObjectiveMetric"]["Value"],
               }.get(sort_by or "Name", lambda job: job["TrainingJobName"])
        jobs.sort(key=key, reverse=sort_order == "Descending")
        return _page("TrainingJobSummaries", jobs, max_results, next_token)

    def describe_training_job(self, name: str) -> dict | None:
        """DescribeTrainingJob for a training job of a tuning job the engine ran (None: not one of its)."""
        for record in self.store.all():
            for step in record.get("Steps", {}).values():
                properties = step.get("Properties") or {}
                if step["StepType"] != "Tuning" or not step.get("JobName"):
                    continue
                for job in properties.get("TrainingJobSummaries", []):
                    if job["TrainingJobName"] == name:
                        return _training_job(job, properties)
        return None


_JOB_STATUS = {StepStatus.EXECUTING: "InProgress", StepStatus.SUCCEEDED: "Completed", StepStatus.FAILED: "Failed"}


def _arn_prefix(record: dict) -> str:
    return record["PipelineArn"].split(":pipeline/")[0] + ":"


def _page(key: str, items: list, max_results: int | None, next_token: str | None) -> dict:
    """One page of `items` (MaxResults, default 50; the NextToken is the next item's index)."""
    start = int(next_token or 0)
    end = start + int(max_results or 50)
    answer = {key: items[start:end]}
    if end < len(items):
        answer["NextToken"] = str(end)
    return answer


def _training_job(job: dict, tuning: dict) -> dict:
    """DescribeTrainingJob's answer from a tuning job's summary of it and the tuning job's training definition."""
    definition = tuning.get("TrainingJobDefinition", {})
    output_path = definition.get("OutputDataConfig", {}).get("S3OutputPath", "").rstrip("/")
    answer = {"TrainingJobName": job["TrainingJobName"], "TrainingJobArn": job["TrainingJobArn"],
              "TuningJobArn": tuning.get("HyperParameterTuningJobArn"),
              "TrainingJobStatus": job["TrainingJobStatus"], "SecondaryStatus": job["TrainingJobStatus"],
              "HyperParameters": {**definition.get("StaticHyperParameters", {}), **job["TunedHyperParameters"]},
              "AlgorithmSpecification": definition.get("AlgorithmSpecification"),
              "RoleArn": definition.get("RoleArn"), "InputDataConfig": definition.get("InputDataConfig"),
              "OutputDataConfig": definition.get("OutputDataConfig"),
              "ResourceConfig": definition.get("ResourceConfig"),
              "StoppingCondition": definition.get("StoppingCondition"),
              "CreationTime": job["CreationTime"], "TrainingStartTime": job.get("TrainingStartTime"),
              "TrainingEndTime": job.get("TrainingEndTime"), "LastModifiedTime": job.get("TrainingEndTime"),
              "FinalMetricDataList": job.get("FinalMetricDataList"), "FailureReason": job.get("FailureReason")}
    if job["TrainingJobStatus"] == "Completed":
        answer["ModelArtifacts"] = {"S3ModelArtifacts": f"{output_path}/{job['TrainingJobName']}/output/model.tar.gz"}
    return {k: v for k, v in answer.items() if v is not None}


def step_summary(step: dict, arn_prefix: str) -> dict:
    """One step as ListPipelineExecutionSteps returns it, with its Metadata as SageMaker fills it in."""
    summary = {"StepName": step["StepName"], "StepStatus": step["StepStatus"], "StartTime": _time(step["StartTime"]),
               "EndTime": _time(step.get("EndTime")), "FailureReason": step.get("FailureReason"),
               "AttemptCount": step.get("AttemptCount"), "CacheHitResult": step.get("CacheHitResult"),
               "Metadata": step_metadata(step, arn_prefix)}
    return {k: v for k, v in summary.items() if v is not None}


def step_metadata(step: dict, arn_prefix: str) -> dict:
    properties, kind = step.get("Properties") or {}, step["StepType"]
    if kind in _METADATA_ARN:
        key, field, resource = _METADATA_ARN[kind]
        if field in properties:
            return {key: {"Arn": properties[field]}}
        if resource and step.get("JobName"):
            return {key: {"Arn": f"{arn_prefix}{resource}/{step['JobName'].lower()}"}}
        return {}
    if kind == "Condition" and "Outcome" in properties:
        return {"Condition": {"Outcome": str(properties["Outcome"]).lower()}}
    if kind == "Fail" and step.get("FailureReason"):
        return {"Fail": {"ErrorMessage": step["FailureReason"]}}
    if kind == "Lambda" and "FunctionArn" in properties:
        return {"Lambda": {"Arn": properties["FunctionArn"], "OutputParameters": [
            {"Name": name, "Value": str(value)} for name, value in properties.get("OutputParameters", {}).items()]}}
    return {}
