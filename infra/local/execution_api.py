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
from pipelines.local.records import ExecutionStore
from pipelines.local.submissions import Submissions
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

    def describe(self, arn: str) -> dict:
        record = self._record(arn)
        path = self.store.execution_dir(record["PipelineExecutionId"]) / "execution.json"
        answer = {"PipelineArn": record["PipelineArn"], "PipelineExecutionArn": record["PipelineExecutionArn"],
                  "PipelineExecutionDisplayName": record.get("PipelineExecutionDisplayName"),
                  "PipelineExecutionStatus": record["PipelineExecutionStatus"],
                  "PipelineExecutionDescription": record.get("PipelineExecutionDescription"),
                  "CreationTime": _time(record.get("CreationTime") or record["StartTime"]),
                  "LastModifiedTime": dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC)}
        if record.get("FailureReason"):
            answer["FailureReason"] = record["FailureReason"]
        return {k: v for k, v in answer.items() if v is not None}

    def list(self, pipeline_name: str, *, sort_by: str | None = None, sort_order: str | None = None,
             max_results: int | None = None, next_token: str | None = None) -> dict:
        """ListPipelineExecutions: newest first unless asked otherwise, in pages of MaxResults (default 50)."""
        records = [r for r in self.store.all() if r.get("PipelineName") == pipeline_name]
        key = "PipelineExecutionArn" if sort_by == "PipelineExecutionArn" else "CreationTime"
        records.sort(key=lambda r: r.get(key) or r.get("StartTime") or "", reverse=sort_order != "Ascending")
        start = int(next_token or 0)
        end = start + int(max_results or 50)
        summaries = [{"PipelineExecutionArn": r["PipelineExecutionArn"], "StartTime": _time(r["StartTime"]),
                      "PipelineExecutionStatus": r["PipelineExecutionStatus"],
                      "PipelineExecutionDisplayName": r.get("PipelineExecutionDisplayName"),
                      "PipelineExecutionDescription": r.get("PipelineExecutionDescription"),
                      "PipelineExecutionFailureReason": r.get("FailureReason")} for r in records[start:end]]
        answer = {"PipelineExecutionSummaries": [{k: v for k, v in s.items() if v is not None} for s in summaries]}
        if end < len(records):
            answer["NextToken"] = str(end)
        return answer

    def steps(self, arn: str, *, sort_order: str | None = None, max_results: int | None = None,
              next_token: str | None = None) -> dict:
        """ListPipelineExecutionSteps: the steps that have started, the latest first (SageMaker's default)."""
        record = self._record(arn)
        started = [s for s in record.get("Steps", {}).values() if s.get("StartTime")]
        started.sort(key=lambda s: s["StartTime"], reverse=sort_order != "Ascending")
        start = int(next_token or 0)
        end = start + int(max_results or 50)
        arn_prefix = record["PipelineArn"].split(":pipeline/")[0] + ":"
        answer = {"PipelineExecutionSteps": [step_summary(s, arn_prefix) for s in started[start:end]]}
        if end < len(started):
            answer["NextToken"] = str(end)
        return answer


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
