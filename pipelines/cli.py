"""`livetrain pipeline …`: build, upload, start and inspect the SageMaker Pipeline.

Parses the command line into settings, calls the driver (`pipelines/driver.py`) and prints. Only the standard
library and stdlib-only modules are imported here; the SDK and boto3 are imported when a command runs.
`definition` needs no AWS account; the other commands call SageMaker (and S3) through boto3, at
`--endpoint-url` when given (moto in local mode), else wherever boto3's configuration points
(AWS_ENDPOINT_URL included).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from livetrain import aws
from livetrain.arguments import positive_int
from livetrain.errors import UserError
from livetrain.files import write_text_atomically
from pipelines import driver
from pipelines.contract import PARAMETER_NAMES, PLACEHOLDER_ROLE_ARN
from pipelines.parameters import parse_assignments


def add_commands(commands, config) -> None:
    subparsers = commands.add_group(
        "pipeline", help="the SageMaker Pipeline: definition, upsert, start, describe, executions",
        description="Build the SageMaker Pipeline definition, create or update it, start and inspect runs.")
    definition = subparsers.add_parser(
        "definition", help="print the pipeline definition JSON (no AWS account needed)",
        description="Print the pipeline definition JSON that `upsert` sends. Needs no credentials and no network.")
    _add_build_arguments(definition, config, role_required=False)
    definition.add_argument("--output", metavar="FILE", help="write the JSON to FILE instead of stdout")
    definition.set_defaults(handler=run_definition)

    upsert = subparsers.add_parser(
        "upsert", help="upload the processing code and create or update the pipeline",
        description="Upload the processing scripts to their content address in S3, then create or update "
                    "the pipeline.")
    _add_build_arguments(upsert, config, role_required=True)
    _add_service_arguments(upsert)
    upsert.set_defaults(handler=run_upsert)

    start = subparsers.add_parser(
        "start", help="start a pipeline execution on one batch",
        description="Start an execution on the batch whose manifest is s3://BUCKET/MANIFEST_KEY; its Epic parameter "
                    "is the batch's (batches/<epic>/…), as the epic's EventBridge rule passes it.")
    _add_target_arguments(start, config)
    start.add_argument("--bucket", default=config.bucket, help=f"the batch's bucket (default {config.bucket})")
    start.add_argument("--manifest-key", required=True, metavar="KEY",
                       help="the batch's manifest key, e.g. batches/<epic>/<batch_id>/batch.manifest")
    start.add_argument("--param", "--parameter", dest="param", action="append", default=[], metavar="NAME=VALUE",
                       help=f"another pipeline parameter ({', '.join(PARAMETER_NAMES[2:])}), checked against the "
                            "types the pipeline declares; repeatable")
    start.add_argument("--wait", action="store_true", help="poll until the execution finishes")
    start.add_argument("--poll-seconds", type=positive_int, default=15, help="seconds between polls (default 15)")
    start.set_defaults(handler=run_start)

    describe = subparsers.add_parser("describe", help="show the pipeline and its steps",
                                     description="Show the pipeline's status and the steps of its definition.")
    _add_target_arguments(describe, config)
    describe.set_defaults(handler=run_describe)

    executions = subparsers.add_parser("executions", help="list recent executions, newest first",
                                       description="List the pipeline's recent executions, newest first.")
    _add_target_arguments(executions, config)
    executions.add_argument("--max-results", type=positive_int, default=10, help="how many (default 10)")
    executions.set_defaults(handler=run_executions)


def _add_target_arguments(parser: argparse.ArgumentParser, config) -> None:
    parser.add_argument("--region", default=config.region, help=f"AWS region (default {config.region})")
    parser.add_argument("--pipeline-name", default=config.pipeline_name,
                        help=f"default {config.pipeline_name}")
    _add_service_arguments(parser)


def _add_service_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--endpoint-url", metavar="URL",
                        help="AWS endpoint for SageMaker and S3, e.g. a local moto server")


def _add_build_arguments(parser: argparse.ArgumentParser, config, role_required: bool) -> None:
    parser.add_argument("--region", default=config.region, help=f"AWS region (default {config.region})")
    parser.add_argument("--role-arn", default=config.role_arn or None, metavar="ARN",
                        help="the pipeline's execution role (default $LIVETRAIN_ROLE_ARN)" if role_required else
                        f"the pipeline's execution role (default $LIVETRAIN_ROLE_ARN, else {PLACEHOLDER_ROLE_ARN})")
    parser.add_argument("--bucket", default=config.bucket,
                        help=f"bucket for the code and each run's data (default {config.bucket})")
    parser.add_argument("--pipeline-name", default=config.pipeline_name, help=f"default {config.pipeline_name}")
    parser.add_argument("--model-package-group", default=config.model_package_group,
                        help=f"default {config.model_package_group}")
    parser.add_argument("--prefix", help="key prefix in the bucket for code and run data (default: the pipeline name)")
    parser.add_argument("--max-jobs", type=positive_int, default=config.max_jobs,
                        help=f"training jobs per tuning run (default {config.max_jobs})")
    parser.add_argument("--max-parallel-jobs", type=positive_int, default=config.max_parallel_jobs,
                        help=f"training jobs at a time (default {config.max_parallel_jobs})")
    parser.set_defaults(cache_dir=config.cache_dir)


def _settings(args: argparse.Namespace, role_arn: str) -> driver.PipelineSettings:
    return driver.PipelineSettings(
        region=args.region, role_arn=role_arn, bucket=args.bucket, pipeline_name=args.pipeline_name,
        model_package_group=args.model_package_group, prefix=(args.prefix or args.pipeline_name).strip("/"),
        max_jobs=args.max_jobs, max_parallel_jobs=args.max_parallel_jobs)


def _client(service: str, args: argparse.Namespace):
    return aws.client(service, args.region, args.endpoint_url)


def run_definition(args: argparse.Namespace) -> int:
    settings = _settings(args, args.role_arn or PLACEHOLDER_ROLE_ARN)
    target = Path(args.output) if args.output else None
    if target and not target.parent.is_dir():
        raise UserError(f"--output {args.output}: directory {target.parent} does not exist; create it first")
    if not args.role_arn:
        print(f"note: no --role-arn or LIVETRAIN_ROLE_ARN: the definition names the placeholder role "
              f"{PLACEHOLDER_ROLE_ARN}", file=sys.stderr)
    text = driver.build_definition(settings, args.cache_dir) + "\n"
    if not target:
        sys.stdout.write(text)
        return 0
    write_text_atomically(target, text)  # all or nothing: never a half-written FILE
    print(f"wrote the definition of pipeline {args.pipeline_name} to {target}", file=sys.stderr)
    return 0


def run_upsert(args: argparse.Namespace) -> int:
    settings = _settings(args, driver.checked_role_arn(args.role_arn))
    arn, created = driver.upsert_pipeline(_client("s3", args), _client("sagemaker", args), settings, args.cache_dir)
    print(f"{'created' if created else 'updated'} pipeline {arn}")
    return 0


def run_start(args: argparse.Namespace) -> int:
    parameters = {"InputBucket": args.bucket, "InputManifestKey": args.manifest_key.lstrip("/"),
                  **parse_assignments(args.param)}
    sagemaker = _client("sagemaker", args)
    arn = driver.start_execution(sagemaker, _client("s3", args), args.pipeline_name, parameters)
    print(arn)
    if not args.wait:
        return 0
    execution = driver.wait_for_execution(
        sagemaker, arn, args.poll_seconds,
        report=lambda status, seconds: print(f"[{seconds:6.0f}s] {status}", file=sys.stderr))
    status = execution["PipelineExecutionStatus"]
    if status == "Succeeded":
        return 0
    print(f"execution {status.lower()}: {execution.get('FailureReason') or 'no reason given'}", file=sys.stderr)
    return 1


def run_describe(args: argparse.Namespace) -> int:
    pipeline, definition = driver.describe_pipeline(_client("sagemaker", args), args.pipeline_name)
    print(f"{pipeline['PipelineName']}  {pipeline.get('PipelineStatus', '?')}  {pipeline['PipelineArn']}")
    print(f"  role {pipeline.get('RoleArn', '?')}")
    for key, label in (("CreationTime", "created"), ("LastModifiedTime", "last modified"), ("LastRunTime", "last run")):
        if key in pipeline:
            print(f"  {label} {pipeline[key].isoformat(timespec='seconds')}")
    for parameter_ in definition.get("Parameters", []):
        print(f"  parameter {parameter_['Name']} ({parameter_['Type']})"
              + (f" = {parameter_['DefaultValue']}" if "DefaultValue" in parameter_ else " (required)"))
    for step, depth in _steps(definition.get("Steps", [])):
        print(f"  {'  ' * depth}step {step['Name']} ({step['Type']}): {step.get('DisplayName', '')}")
    return 0


def _steps(steps: list, depth: int = 0):
    """(step, depth) for each step, a Condition's branches indented under it."""
    for step in steps:
        yield step, depth
        arguments = step.get("Arguments", {}) if step.get("Type") == "Condition" else {}
        for branch in ("IfSteps", "ElseSteps"):
            yield from _steps(arguments.get(branch, []), depth + 1)


def run_executions(args: argparse.Namespace) -> int:
    summaries = driver.list_executions(_client("sagemaker", args), args.pipeline_name, args.max_results)
    if not summaries:
        print(f"no executions of pipeline {args.pipeline_name} yet", file=sys.stderr)
    for summary in summaries:
        reason = summary.get("PipelineExecutionFailureReason")
        print("  ".join([summary["PipelineExecutionArn"].rsplit("/", 1)[-1], summary["PipelineExecutionStatus"],
                         summary["StartTime"].isoformat(timespec="seconds"),
                         summary.get("PipelineExecutionDisplayName", ""),
                         reason if reason and reason != "None" else ""]).rstrip())
    return 0
