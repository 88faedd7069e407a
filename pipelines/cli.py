"""`livetrain pipeline …`: build, upload, start and inspect the SageMaker Pipeline.

Only the standard library (and livetrain's own stdlib-only modules) is imported here; handlers import
the SDK and boto3 when they run.
`definition` needs no AWS account; the other commands call SageMaker (and S3) through boto3, at
`--endpoint-url` when given (moto in local mode), else wherever boto3's configuration points
(AWS_ENDPOINT_URL included).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from livetrain import UserError, positive_int
from pipelines.contract import MAX_JOBS, MAX_PARALLEL_JOBS, PARAMETER_NAMES, PLACEHOLDER_ROLE_ARN
from pipelines.local import cli as local_cli

FINISHED = ("Succeeded", "Failed", "Stopped")
PIPELINE_DESCRIPTION = ("livetrain: one batch of paper trades -> features -> tuned Linear Learner -> "
                        "quality gate on the held-out test slice -> model registry")


def parameter(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or name not in PARAMETER_NAMES:
        raise argparse.ArgumentTypeError(
            f"expected NAME=VALUE with NAME one of {', '.join(PARAMETER_NAMES)}, not {text!r}")
    return name, value


def add_commands(commands, config) -> None:
    group = commands.add_parser(
        "pipeline", help="the SageMaker Pipeline: definition, upsert, start, describe, executions",
        description="Build the SageMaker Pipeline definition, create or update it, start and inspect runs.")
    subparsers = group.add_subparsers(dest="pipeline_command", required=True, metavar="SUBCOMMAND")
    parsers = add_pipeline_subcommands(subparsers, config)
    local_cli.add_pipeline_subcommands(subparsers, config)
    local_cli.add_local_option(parsers["executions"], config)


def add_pipeline_subcommands(subparsers, config) -> dict[str, argparse.ArgumentParser]:
    """Register definition, upsert, start, describe and executions on the `pipeline` group's subparsers.

    Returns their parsers by name, so that another part can add options (e.g. `executions --local`).
    """
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
        description="Start an execution on the batch whose manifest is s3://BUCKET/MANIFEST_KEY.")
    _add_target_arguments(start, config)
    start.add_argument("--bucket", default=config.bucket, help=f"the batch's bucket (default {config.bucket})")
    start.add_argument("--manifest-key", required=True, metavar="KEY",
                       help="the batch's manifest key, e.g. batches/<epic>/<batch_id>/batch.manifest")
    start.add_argument("--parameter", type=parameter, action="append", default=[], metavar="NAME=VALUE",
                       help=f"another pipeline parameter ({', '.join(PARAMETER_NAMES[2:])}); repeatable")
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
    return {"definition": definition, "upsert": upsert, "start": start, "describe": describe,
            "executions": executions}


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
    parser.add_argument("--max-jobs", type=positive_int, default=MAX_JOBS,
                        help=f"training jobs per tuning run (default {MAX_JOBS})")
    parser.add_argument("--max-parallel-jobs", type=positive_int, default=MAX_PARALLEL_JOBS,
                        help=f"training jobs at a time (default {MAX_PARALLEL_JOBS})")


def _definition_json(args: argparse.Namespace, role_arn: str) -> str:
    from pipelines.definition import build_definition

    return build_definition(region=args.region, role_arn=role_arn, bucket=args.bucket,
                            pipeline_name=args.pipeline_name, model_package_group=args.model_package_group,
                            prefix=_prefix(args), max_jobs=args.max_jobs, max_parallel_jobs=args.max_parallel_jobs)


def _check_build_arguments(args: argparse.Namespace) -> None:
    if args.max_parallel_jobs > args.max_jobs:
        raise UserError(f"--max-parallel-jobs {args.max_parallel_jobs} exceeds --max-jobs {args.max_jobs}; "
                        "pass a value no greater than --max-jobs")


def _prefix(args: argparse.Namespace) -> str:
    return (args.prefix or args.pipeline_name).strip("/")


def run_definition(args: argparse.Namespace) -> int:
    _check_build_arguments(args)
    target = Path(args.output) if args.output else None
    if target and not target.parent.is_dir():
        raise UserError(f"--output {args.output}: directory {target.parent} does not exist; create it first")
    if not args.role_arn:
        print(f"note: no --role-arn or LIVETRAIN_ROLE_ARN: the definition names the placeholder role "
              f"{PLACEHOLDER_ROLE_ARN}", file=sys.stderr)
    text = _definition_json(args, args.role_arn or PLACEHOLDER_ROLE_ARN) + "\n"
    if not target:
        sys.stdout.write(text)
        return 0
    with tempfile.NamedTemporaryFile("w", dir=target.parent, prefix=f".{target.name}.", delete=False) as tmp:
        try:
            tmp.write(text)
        except BaseException:
            os.unlink(tmp.name)
            raise
    os.replace(tmp.name, target)  # all or nothing: never a half-written FILE
    print(f"wrote the definition of pipeline {args.pipeline_name} to {target}", file=sys.stderr)
    return 0


def run_upsert(args: argparse.Namespace) -> int:
    _check_build_arguments(args)
    role_arn = checked_role_arn(args.role_arn)
    if role_arn == PLACEHOLDER_ROLE_ARN:
        raise UserError("--role-arn: the placeholder role exists in no account; pass the pipeline's real role")
    arn, created = upsert_pipeline(_client("s3", args), _client("sagemaker", args), region=args.region,
                                   role_arn=role_arn, bucket=args.bucket, pipeline_name=args.pipeline_name,
                                   model_package_group=args.model_package_group, prefix=_prefix(args),
                                   max_jobs=args.max_jobs, max_parallel_jobs=args.max_parallel_jobs)
    print(f"{'created' if created else 'updated'} pipeline {arn}")
    return 0


def upsert_pipeline(s3, sagemaker, *, region: str, role_arn: str, bucket: str, pipeline_name: str,
                    model_package_group: str, prefix: str, max_jobs: int = MAX_JOBS,
                    max_parallel_jobs: int = MAX_PARALLEL_JOBS) -> tuple[str, bool]:
    """Upload the processing code to its content address, then create or update the pipeline.

    Returns (pipeline ARN, whether it was created). Progress goes to stderr.
    """
    from pipelines.definition import build_definition, code_bundles

    print(f"building the definition of pipeline {pipeline_name}…", file=sys.stderr)
    definition = build_definition(region=region, role_arn=role_arn, bucket=bucket, pipeline_name=pipeline_name,
                                  model_package_group=model_package_group, prefix=prefix, max_jobs=max_jobs,
                                  max_parallel_jobs=max_parallel_jobs)
    for step_name, bundle in code_bundles(bucket, prefix).items():
        for code_bucket, key, content in bundle.uploads():
            with aws_call(f"S3 PutObject s3://{code_bucket}/{key}"):
                s3.put_object(Bucket=code_bucket, Key=key, Body=content)
        print(f"uploaded {step_name} code ({len(bundle.files)} files) to {bundle.s3_prefix}", file=sys.stderr)
    request = {"PipelineName": pipeline_name, "PipelineDefinition": definition, "RoleArn": role_arn,
               "PipelineDescription": PIPELINE_DESCRIPTION}
    if _pipeline_exists(sagemaker, pipeline_name):
        with aws_call("UpdatePipeline"):
            return sagemaker.update_pipeline(**request)["PipelineArn"], False
    with aws_call("CreatePipeline"):
        return sagemaker.create_pipeline(**request)["PipelineArn"], True


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


def _pipeline_exists(sagemaker, name: str) -> bool:
    from botocore.exceptions import ClientError

    with aws_call("DescribePipeline"):
        try:
            sagemaker.describe_pipeline(PipelineName=name)
        except ClientError as exc:
            if _is_not_found(exc):
                return False
            raise
    return True


def run_start(args: argparse.Namespace) -> int:
    parameters = {"InputBucket": args.bucket, "InputManifestKey": args.manifest_key.lstrip("/"),
                  **dict(args.parameter)}
    sagemaker = _client("sagemaker", args)
    with aws_call("StartPipelineExecution"):
        arn = sagemaker.start_pipeline_execution(
            PipelineName=args.pipeline_name,
            PipelineParameters=[{"Name": name, "Value": value} for name, value in parameters.items()],
        )["PipelineExecutionArn"]
    print(arn)
    if not args.wait:
        return 0
    return _wait(sagemaker, arn, args.poll_seconds)


def _wait(sagemaker, arn: str, poll_seconds: int) -> int:
    """Poll the execution until it finishes, a line per poll on stderr; 0 when it succeeded."""
    started = time.monotonic()
    while True:
        with aws_call("DescribePipelineExecution"):
            execution = sagemaker.describe_pipeline_execution(PipelineExecutionArn=arn)
        status = execution["PipelineExecutionStatus"]
        print(f"[{time.monotonic() - started:6.0f}s] {status}", file=sys.stderr)
        if status in FINISHED:
            break
        time.sleep(poll_seconds)
    if status == "Succeeded":
        return 0
    print(f"execution {status.lower()}: {execution.get('FailureReason') or 'no reason given'}", file=sys.stderr)
    return 1


def run_describe(args: argparse.Namespace) -> int:
    sagemaker = _client("sagemaker", args)
    with aws_call("DescribePipeline"):
        pipeline = sagemaker.describe_pipeline(PipelineName=args.pipeline_name)
    print(f"{pipeline['PipelineName']}  {pipeline.get('PipelineStatus', '?')}  {pipeline['PipelineArn']}")
    print(f"  role {pipeline.get('RoleArn', '?')}")
    for key, label in (("CreationTime", "created"), ("LastModifiedTime", "last modified"), ("LastRunTime", "last run")):
        if key in pipeline:
            print(f"  {label} {pipeline[key].isoformat(timespec='seconds')}")
    try:
        definition = json.loads(pipeline.get("PipelineDefinition") or "{}")
    except json.JSONDecodeError:
        definition = {}
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
    sagemaker = _client("sagemaker", args)
    with aws_call("ListPipelineExecutions"):
        summaries = sagemaker.list_pipeline_executions(
            PipelineName=args.pipeline_name, SortBy="CreationTime", SortOrder="Descending",
            MaxResults=args.max_results)["PipelineExecutionSummaries"]
    if not summaries:
        print(f"no executions of pipeline {args.pipeline_name} yet", file=sys.stderr)
    for summary in summaries:
        reason = summary.get("PipelineExecutionFailureReason")
        print("  ".join([summary["PipelineExecutionArn"].rsplit("/", 1)[-1], summary["PipelineExecutionStatus"],
                         summary["StartTime"].isoformat(timespec="seconds"),
                         summary.get("PipelineExecutionDisplayName", ""),
                         reason if reason and reason != "None" else ""]).rstrip())
    return 0


def _client(service: str, args: argparse.Namespace):
    import boto3

    return boto3.client(service, region_name=args.region, endpoint_url=args.endpoint_url)


def _is_not_found(exc) -> bool:
    error = exc.response.get("Error", {})
    message = error.get("Message", "")
    return (error.get("Code") in ("ResourceNotFound", "NoSuchKey", "NoSuchBucket")
            or "Could not find" in message or "does not exist" in message)


@contextmanager
def aws_call(operation: str):
    """Turn a failure of one AWS call into a UserError: one line naming the call, the cause and what to do."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
    )

    try:
        yield
    except (NoCredentialsError, PartialCredentialsError):
        raise UserError(f"{operation}: no AWS credentials found; configure them (aws configure, AWS_PROFILE, or "
                        "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY) or pass --endpoint-url of a local stack"
                        ) from None
    except EndpointConnectionError as exc:
        raise UserError(f"{operation}: cannot connect to {exc.kwargs.get('endpoint_url')}; "
                        "check --endpoint-url and the network") from None
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code, message = error.get("Code", "Error"), error.get("Message", str(exc))
        raise UserError(f"{operation}: {code}: {message}{_hint(exc, code)}") from None
    except BotoCoreError as exc:
        raise UserError(f"{operation}: {exc}") from None


def _hint(exc, code: str) -> str:
    if code == "NoSuchBucket":
        return "; create the bucket or pass --bucket"
    if _is_not_found(exc):
        return "; create the pipeline with `livetrain pipeline upsert`, or pass --pipeline-name/--region"
    if "AccessDenied" in code or code in ("UnauthorizedOperation", "UnrecognizedClientException"):
        return "; the credentials in use are not allowed to make this call"
    if code in ("ExpiredToken", "ExpiredTokenException", "InvalidClientTokenId"):
        return "; refresh the AWS credentials"
    return ""
