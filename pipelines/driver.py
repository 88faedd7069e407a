"""The pipeline's driver: the definition (built, or reused from its cache), its code uploaded, the pipeline created
or updated, executions started, followed, described and listed, through the boto3 clients passed in.

The SageMaker Projects seed code's split: `definition.py` builds, this module drives, `cli.py` parses and
prints. Standard library only at import time: the SDK is imported only to build a definition not yet cached.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

from livetrain.aws_errors import aws_call, is_not_found
from livetrain.config import Config
from livetrain.errors import UserError
from livetrain.files import write_text_atomically
from pipelines.code import PROCESSING_DIR, code_bundles
from pipelines.contract import PLACEHOLDER_ROLE_ARN, monitor_pipeline_name
from pipelines.parameters import resolve_parameters, with_batch_epic

FINISHED = ("Succeeded", "Failed", "Stopped")
PIPELINE_DESCRIPTION = ("livetrain: one batch of paper trades -> features -> tuned Linear Learner -> "
                        "quality gate on the held-out test slice -> model registry")
MONITOR_DESCRIPTION = ("livetrain: the endpoint's captured predictions joined with the trades' outcomes -> live "
                       "precision and lift with intervals -> CloudWatch metrics (started on a schedule)")
IF_MISSING = "create the pipeline with `livetrain pipeline upsert`, or pass --pipeline-name/--region"
# What a built definition depends on besides its arguments: the sources that build it and the SDK's version.
_ROOT = Path(__file__).resolve().parents[1]
DEFINITION_SOURCES = ("pipelines/definition.py", "pipelines/code.py", "pipelines/contract.py", "livetrain/config.py")
SDK_DISTRIBUTIONS = ("sagemaker", "sagemaker-core", "sagemaker-train", "sagemaker-serve", "sagemaker-mlops",
                     "boto3", "botocore", "arch")  # arch: the evaluation step ships its bootstrap (pipelines/code.py)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class PipelineSettings:
    """What the definition is built from: where the pipeline runs, its names, and its tuning budget."""

    region: str
    role_arn: str
    bucket: str
    pipeline_name: str
    model_package_group: str
    prefix: str  # key prefix in the bucket for the code and each run's data
    max_jobs: int = Config.max_jobs
    max_parallel_jobs: int = Config.max_parallel_jobs

    def __post_init__(self):
        if self.max_parallel_jobs > self.max_jobs:
            raise UserError(f"--max-parallel-jobs {self.max_parallel_jobs} exceeds --max-jobs {self.max_jobs}; "
                            "pass a value no greater than --max-jobs")


def checked_role_arn(role_arn: str | None) -> str:
    """The role ARN if it looks like one; UserError saying what to pass otherwise."""
    if not role_arn:
        raise UserError("no execution role: pass --role-arn arn:aws:iam::<account>:role/<name> "
                        "or set LIVETRAIN_ROLE_ARN")
    partition, _, rest = role_arn.partition(":iam::")
    account, _, role = rest.partition(":role/")
    if not (partition.startswith("arn:aws") and account.isdigit() and len(account) == 12 and role):
        raise UserError(f"--role-arn {role_arn!r} is not an IAM role ARN; "
                        "pass arn:aws:iam::<12-digit account>:role/<name>")
    return role_arn


# ---------------------------------------------------------------- the definition


def definition_key(settings: PipelineSettings, code_dir: Path = PROCESSING_DIR, monitor: bool = False) -> str:
    """The content address of the definition `settings` build (the monitoring pipeline's with `monitor`): sha256
    over the arguments, the sources that build it (the processing scripts included: the definition names them by
    their own hash) and the SDK's versions."""
    digest = hashlib.sha256(json.dumps({**asdict(settings), "monitor": monitor}, sort_keys=True).encode())
    digest.update(f"{sys.version_info[:2]}\n".encode())
    for name in SDK_DISTRIBUTIONS:
        digest.update(f"{name}=={metadata.version(name)}\n".encode())
    for path in [*(_ROOT / name for name in DEFINITION_SOURCES), *sorted(code_dir.glob("*.py"))]:
        digest.update(f"{path.name}\0{hashlib.sha256(path.read_bytes()).hexdigest()}\n".encode())
    return digest.hexdigest()


def build_definition(settings: PipelineSettings, cache_dir: str | Path | None = None, monitor: bool = False) -> str:
    """The definition JSON (the monitoring pipeline's with `monitor`); from `cache_dir`/definitions when an identical
    build is there (the build is byte-identical for identical inputs), else built with the SDK and kept there. No
    cache_dir: always built."""
    key = definition_key(settings, monitor=monitor)
    cached = Path(cache_dir).expanduser() / "definitions" / f"{key}.json" if cache_dir else None
    if cached and cached.is_file():
        return cached.read_text()
    from pipelines.definition import build_definition as build

    text = build(monitor=monitor, **asdict(settings))
    if cached:
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomically(cached, text)
        except OSError:
            pass  # an unwritable cache only costs the next build its time
    return text


# ---------------------------------------------------------------- the pipeline in SageMaker


def upsert_pipeline(s3, sagemaker, settings: PipelineSettings, cache_dir: str | Path | None = None,
                    progress: Callable[[str], None] = _stderr) -> tuple[str, bool]:
    """Upload the processing code to its content address, then create or update the pipeline and its monitoring
    pipeline (`<name>-monitor`).

    Returns (the pipeline's ARN, whether it was created).
    """
    if settings.role_arn == PLACEHOLDER_ROLE_ARN:
        raise UserError("--role-arn: the placeholder role exists in no account; pass the pipeline's real role")
    for step_name, bundle in code_bundles(settings.bucket, settings.prefix).items():
        for code_bucket, key, content in bundle.uploads():
            with aws_call(f"S3 PutObject s3://{code_bucket}/{key}"):
                s3.put_object(Bucket=code_bucket, Key=key, Body=content)
        progress(f"uploaded {step_name} code ({len(bundle.files)} files) to {bundle.s3_prefix}")
    arns = []
    for name, monitor, description in ((settings.pipeline_name, False, PIPELINE_DESCRIPTION),
                                       (monitor_pipeline_name(settings.pipeline_name), True, MONITOR_DESCRIPTION)):
        progress(f"building the definition of pipeline {name}…")
        request = {"PipelineName": name, "PipelineDefinition": build_definition(settings, cache_dir, monitor),
                   "RoleArn": settings.role_arn, "PipelineDescription": description}
        if _pipeline_exists(sagemaker, name):
            with aws_call("UpdatePipeline"):
                arns.append((sagemaker.update_pipeline(**request)["PipelineArn"], False))
        else:
            with aws_call("CreatePipeline"):
                arns.append((sagemaker.create_pipeline(**request)["PipelineArn"], True))
    return arns[0]


def _pipeline_exists(sagemaker, name: str) -> bool:
    from botocore.exceptions import ClientError

    with aws_call("DescribePipeline"):
        try:
            sagemaker.describe_pipeline(PipelineName=name)
        except ClientError as exc:
            if is_not_found(exc):
                return False
            raise
    return True


def start_execution(sagemaker, s3, pipeline_name: str, parameters: dict[str, str]) -> str:
    """Start an execution with these parameters, Epic taken from the batch's key unless given (with_batch_epic); its
    ARN. First checks them against the types the pipeline's definition declares, and that the batch's manifest
    (InputBucket, InputManifestKey) exists in S3."""
    _, definition = describe_pipeline(sagemaker, pipeline_name)
    parameters = with_batch_epic(definition, parameters)
    resolve_parameters(definition, parameters)
    _check_manifest(s3, parameters["InputBucket"], parameters["InputManifestKey"])
    with aws_call("StartPipelineExecution", IF_MISSING):
        return sagemaker.start_pipeline_execution(
            PipelineName=pipeline_name,
            PipelineParameters=[{"Name": name, "Value": value} for name, value in parameters.items()],
        )["PipelineExecutionArn"]


def _check_manifest(s3, bucket: str, key: str) -> None:
    from botocore.exceptions import ClientError

    with aws_call(f"S3 HeadObject s3://{bucket}/{key}"):
        try:
            s3.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if is_not_found(exc):
                raise UserError(f"no batch manifest at s3://{bucket}/{key}; pass the --manifest-key "
                                "(and --bucket) of an exported batch") from None
            raise


def wait_for_execution(sagemaker, arn: str, poll_seconds: float,
                       report: Callable[[str, float], None] = lambda status, seconds: None) -> dict:
    """Poll the execution until it finishes; `report(status, seconds)` after each poll. The last description."""
    started = time.monotonic()
    while True:
        with aws_call("DescribePipelineExecution"):
            execution = sagemaker.describe_pipeline_execution(PipelineExecutionArn=arn)
        report(execution["PipelineExecutionStatus"], time.monotonic() - started)
        if execution["PipelineExecutionStatus"] in FINISHED:
            return execution
        time.sleep(poll_seconds)


def describe_pipeline(sagemaker, pipeline_name: str) -> tuple[dict, dict]:
    """(DescribePipeline's answer, the definition it holds; {} when that is not JSON)."""
    with aws_call("DescribePipeline", IF_MISSING):
        pipeline = sagemaker.describe_pipeline(PipelineName=pipeline_name)
    try:
        definition = json.loads(pipeline.get("PipelineDefinition") or "{}")
    except json.JSONDecodeError:
        definition = {}
    return pipeline, definition


def list_executions(sagemaker, pipeline_name: str, max_results: int) -> list[dict]:
    """The pipeline's most recent executions, newest first."""
    with aws_call("ListPipelineExecutions", IF_MISSING):
        return sagemaker.list_pipeline_executions(
            PipelineName=pipeline_name, SortBy="CreationTime", SortOrder="Descending",
            MaxResults=max_results)["PipelineExecutionSummaries"]
