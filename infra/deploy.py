"""`livetrain infra deploy`: package the Lambda, change-set the stack, wait, upsert the pipeline, print outputs.

Each stage that fails raises one UserError line: which stage, the cause, and what it left behind.
"""

from __future__ import annotations

import hashlib
import io
import secrets
import sys
import time
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from infra.template import TEMPLATE_PATH
from livetrain import aws
from livetrain.aws_errors import describe, is_not_found
from livetrain.errors import UserError

LAMBDA_SOURCES = tuple(Path(__file__).resolve().parents[1] / "lambdas" / name  # the handler modules, what they import
                       for name in ("act_on_alarm.py", "deploy_on_approval.py", "epics.py", "find_champion.py",
                                    "publish_live_quality.py"))
MAX_TEMPLATE_BYTES = 1_000_000  # what CloudFormation accepts from S3 (TemplateURL)
POLL_SECONDS = 5
SET_BY_DEPLOY = {
    "DataBucketName": "pass --bucket instead (the pipeline upsert uses it too)",
    "PipelineName": "pass --pipeline-name instead (the pipeline upsert uses it too)",
    "ModelPackageGroupName": "pass --model-package-group instead (the pipeline upsert uses it too)",
    "EndpointName": "pass --endpoint-name instead",
    "Epics": "pass --epic instead (one or several, comma-separated)",
    "LambdaCodeBucket": "deploy uploads the Lambda; pass --artifact-bucket to choose the bucket",
    "LambdaCodeKey": "deploy uploads the Lambda and names the key after its content",
}
NO_CHANGES = ("didn't contain changes", "No updates are to be performed")
DONE = ("CREATE_COMPLETE", "UPDATE_COMPLETE", "IMPORT_COMPLETE")
WHAT_IS_LEFT = {
    "ROLLBACK_COMPLETE": "the creation was rolled back; delete the stack "
                        "(aws cloudformation delete-stack --stack-name {stack}) before deploying again",
    "ROLLBACK_FAILED": "the creation's rollback failed; delete the stack and the resources it names",
    "UPDATE_ROLLBACK_COMPLETE": "the update was rolled back; the stack runs its previous version",
    "UPDATE_ROLLBACK_FAILED": "the update's rollback failed; fix the resources named above, then "
                              "`aws cloudformation continue-update-rollback --stack-name {stack}`",
}


@dataclass(frozen=True)
class DeploySettings:
    """What `livetrain infra deploy` deploys (infra/cli.py builds it from the command line)."""

    stack_name: str
    region: str
    bucket: str
    pipeline_name: str
    model_package_group: str
    endpoint_name: str
    epics: tuple[str, ...]  # the markets the streamer follows; each has its rule, group and endpoint
    parameters: tuple[str, ...] = ()  # KEY=VALUE for the template's other parameters
    template: Path = TEMPLATE_PATH
    role_arn: str | None = None  # the service role CloudFormation assumes (None: the caller's credentials)
    endpoint_url: str | None = None
    artifact_bucket: str | None = None  # None: livetrain-artifacts-<account>-<region>
    timeout: float = 3600
    upsert_pipeline: bool = True
    cache_dir: str | None = None  # where built pipeline definitions are kept


def progress(message: str) -> None:
    print(f"infra deploy: {message}", file=sys.stderr, flush=True)


@contextmanager
def stage(name: str, left: str = ""):
    """Turn an AWS or OS error inside the stage into one line naming the stage, the cause and what is left."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (BotoCoreError, ClientError, OSError) as exc:
        raise UserError(f"{name} failed: {describe(exc)}" + (f"; {left}" if left else "")) from exc


def package_lambda(sources: tuple[Path, ...] = LAMBDA_SOURCES) -> bytes:
    """A zip of the handler modules and what they import, at its root (boto3 comes with the runtime),
    byte-identical for identical source; every function of the template runs from it with its own Handler."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for source in sources:
            entry = zipfile.ZipInfo(source.name, date_time=(1980, 1, 1, 0, 0, 0))
            entry.external_attr = 0o644 << 16
            archive.writestr(entry, source.read_bytes(), compress_type=zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def ensure_artifact_bucket(s3, bucket: str, region: str) -> None:
    """Create the artefact bucket if missing; (re)apply encryption, versioning and the public access block."""
    from botocore.exceptions import ClientError

    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as exc:
        if not is_not_found(exc):
            raise
        progress(f"creating artefact bucket {bucket}")
        location = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
        s3.create_bucket(Bucket=bucket, **location)
    s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration={
        "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True})
    s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={
        "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]})
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})


def parse_parameters(pairs: tuple[str, ...] | list[str], declared: dict) -> dict[str, str]:
    """KEY=VALUE pairs from --parameter, each naming a parameter the template declares."""
    values = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"--parameter {pair!r} is not KEY=VALUE (e.g. StreamerSubnetIds=subnet-a,subnet-b)")
        if key not in declared:
            raise UserError(f"--parameter {key}: the template has no such parameter; it has {', '.join(declared)}")
        values[key] = value
    return values


def stack_status(cloudformation, stack: str) -> str | None:
    """The stack's status, or None when there is no such stack."""
    from botocore.exceptions import ClientError

    try:
        return cloudformation.describe_stacks(StackName=stack)["Stacks"][0]["StackStatus"]
    except ClientError as exc:
        if is_not_found(exc):
            return None
        raise


def stack_parameters(declared: dict, values: dict[str, str], creating: bool, stack: str) -> list[dict]:
    """Parameters for the change set: given values; on update, the previous value of every other one."""
    missing = [name for name, spec in declared.items() if name not in values and "Default" not in spec]
    if creating and missing:
        raise UserError(f"creating stack {stack} needs " + " ".join(f"--parameter {name}=…" for name in missing)
                        + f" ({declared[missing[0]].get('Description', '')})")
    parameters = [{"ParameterKey": name, "ParameterValue": values[name]} for name in declared if name in values]
    if not creating:
        parameters += [{"ParameterKey": name, "UsePreviousValue": True} for name in declared if name not in values]
    return parameters


def create_change_set(cloudformation, stack: str, template_url: str, parameters: list[dict], creating: bool,
                      role_arn: str | None = None) -> str | None:
    """Create the change set of the template at `template_url` (S3) and wait until it is ready; its name, or None
    when there is nothing to change."""
    name = f"livetrain-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"  # two deploys in one second differ
    request = {"StackName": stack, "ChangeSetName": name, "TemplateURL": template_url,
               "Parameters": parameters, "Capabilities": ["CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"],
               "ChangeSetType": "CREATE" if creating else "UPDATE", "Description": "livetrain infra deploy"}
    if role_arn:
        request["RoleARN"] = role_arn
    unchanged = "stack unchanged" if not creating else "nothing created"
    try:
        with stage("create the change set", left=unchanged):
            cloudformation.create_change_set(**request)
    except UserError as exc:  # some endpoints refuse an empty change set outright instead of failing it
        if any(text in str(exc) for text in NO_CHANGES):
            return None
        raise
    deadline = time.monotonic() + 600
    while True:
        with stage("create the change set", left=f"change set {name} not executed, {unchanged}"):
            change_set = cloudformation.describe_change_set(StackName=stack, ChangeSetName=name)
        if change_set["Status"] == "CREATE_COMPLETE":
            break
        reason = change_set.get("StatusReason", "")
        if change_set["Status"] == "FAILED":
            if any(text in reason for text in NO_CHANGES):
                with stage("delete the empty change set", left=f"change set {name} left FAILED, {unchanged}"):
                    cloudformation.delete_change_set(StackName=stack, ChangeSetName=name)
                return None
            raise UserError(f"create the change set failed: {reason}; change set {name} left FAILED and not "
                            f"executed, {unchanged}")
        if time.monotonic() > deadline:
            raise UserError(f"create the change set failed: still {change_set['Status']} after 600 s; "
                            f"change set {name} not executed, {unchanged}")
        progress(f"change set {name}: {change_set['Status']}")
        time.sleep(POLL_SECONDS)
    for change in change_set.get("Changes", []):
        resource = change.get("ResourceChange", {})
        replace = " (replacement)" if resource.get("Replacement") == "True" else ""
        progress(f"  {resource.get('Action')} {resource.get('LogicalResourceId')} "
                 f"({resource.get('ResourceType')}){replace}")
    return name


def _failure_reason(events: list[dict]) -> str:
    """The first resource failure CloudFormation reported (the cause; later ones are usually consequences)."""
    failed = [e for e in events if e["ResourceStatus"].endswith("FAILED") and e.get("ResourceStatusReason")]
    if not failed:
        return "no resource reported a reason"
    first = min(failed, key=lambda e: e["Timestamp"])
    return f"{first['LogicalResourceId']} {first['ResourceStatus']}: {first['ResourceStatusReason']}"


def execute_and_wait(cloudformation, stack: str, change_set: str, timeout: float) -> str:
    """Execute the change set and follow the stack's events until it settles; its final status."""
    seen: set[str] = set()
    events: list[dict] = []
    started = time.time()

    def left() -> str:
        status = stack_status(cloudformation, stack)
        return f"stack {stack} is {status}" if status else f"stack {stack} does not exist"

    try:
        with stage("execute the change set"):
            cloudformation.execute_change_set(StackName=stack, ChangeSetName=change_set)
    except UserError as exc:
        raise UserError(f"{exc}; {left()}") from exc
    deadline = time.monotonic() + timeout
    while True:
        with stage("wait for the stack", left=f"it carries on in CloudFormation: {stack}"):
            status = cloudformation.describe_stacks(StackName=stack)["Stacks"][0]["StackStatus"]
            new = [event for event in cloudformation.describe_stack_events(StackName=stack)["StackEvents"][::-1]
                   if event["EventId"] not in seen and event["Timestamp"].timestamp() >= started - 5]
        for event in new:
            seen.add(event["EventId"])
            events.append(event)
            reason = f" — {event['ResourceStatusReason']}" if event.get("ResourceStatusReason") else ""
            progress(f"  {event['LogicalResourceId']}: {event['ResourceStatus']}{reason}")
        if not status.endswith("_IN_PROGRESS"):
            break
        if not new:
            progress(f"stack {stack}: {status} ({time.time() - started:.0f} s)")
        if time.monotonic() > deadline:
            raise UserError(f"wait for the stack failed: still {status} after {timeout:.0f} s; it carries on in "
                            f"CloudFormation (aws cloudformation describe-stack-events --stack-name {stack})")
        time.sleep(POLL_SECONDS)
    if status not in DONE:
        left_behind = WHAT_IS_LEFT.get(status, "see the stack's events").format(stack=stack)
        raise UserError(f"execute the change set failed: stack {stack} is {status} ({_failure_reason(events)}); "
                        f"{left_behind}")
    return status


def upsert_pipeline(settings: DeploySettings, role_arn: str) -> None:
    """The pipelines part's upsert, with this stack's execution role, bucket and names."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    from pipelines import driver

    session = boto3.session.Session(region_name=settings.region)
    try:
        pipeline = driver.PipelineSettings(
            region=settings.region, role_arn=driver.checked_role_arn(role_arn), bucket=settings.bucket,
            pipeline_name=settings.pipeline_name, model_package_group=settings.model_package_group,
            prefix=settings.pipeline_name)
        driver.upsert_pipeline(aws.client("s3", endpoint_url=settings.endpoint_url, session=session),
                               aws.client("sagemaker", endpoint_url=settings.endpoint_url, session=session), pipeline,
                               settings.cache_dir)
    except (UserError, BotoCoreError, ClientError) as exc:
        raise UserError(f"upsert the pipeline failed: {exc}; stack {settings.stack_name} is deployed but pipeline "
                        f"{settings.pipeline_name} was not updated: run "
                        f"`livetrain pipeline upsert --role-arn {role_arn} --region {settings.region}`") from None


def deploy(settings: DeploySettings) -> dict[str, str]:
    """The whole deploy; prints the stack's outputs (KEY=VALUE lines on stdout) and returns them."""
    import boto3

    from infra.template import load_template

    session = boto3.session.Session(region_name=settings.region)

    def client(service: str):
        return aws.client(service, endpoint_url=settings.endpoint_url, session=session)

    with stage("read the template"):
        template = settings.template.read_text()
    if len(template.encode()) > MAX_TEMPLATE_BYTES:
        raise UserError(f"{settings.template} is {len(template.encode())} bytes; CloudFormation takes at most "
                        f"{MAX_TEMPLATE_BYTES}: split it into nested stacks")
    declared = load_template(template).get("Parameters", {})
    overrides = parse_parameters(settings.parameters, declared)
    for name, instead in SET_BY_DEPLOY.items():
        if name in overrides:
            raise UserError(f"--parameter {name}: {instead}")
    cloudformation = client("cloudformation")

    with stage("find the account", left="nothing deployed"):
        account = client("sts").get_caller_identity()["Account"]
        status = stack_status(cloudformation, settings.stack_name)
    if status in ("ROLLBACK_COMPLETE", "ROLLBACK_FAILED"):
        raise UserError(f"stack {settings.stack_name} is {status}: "
                        + WHAT_IS_LEFT[status].format(stack=settings.stack_name))
    if status and status.endswith("_IN_PROGRESS") and status != "REVIEW_IN_PROGRESS":
        raise UserError(f"stack {settings.stack_name} is {status}: wait until it settles, then deploy again")
    creating = status in (None, "REVIEW_IN_PROGRESS")

    code = package_lambda()
    artifact_bucket = settings.artifact_bucket or f"livetrain-artifacts-{account}-{settings.region}"
    code_key = f"lambdas/lambdas-{hashlib.sha256(code).hexdigest()[:16]}.zip"
    values = {"DataBucketName": settings.bucket, "PipelineName": settings.pipeline_name,
              "ModelPackageGroupName": settings.model_package_group, "EndpointName": settings.endpoint_name,
              "Epics": ",".join(settings.epics), "LambdaCodeBucket": artifact_bucket, "LambdaCodeKey": code_key,
              **overrides}
    parameters = stack_parameters(declared, {k: v for k, v in values.items() if k in declared}, creating,
                                  settings.stack_name)

    # The template goes by S3 too, as `aws cloudformation deploy --s3-bucket` sends it: inline, CloudFormation
    # takes 51,200 bytes at most.
    template_key = f"templates/template-{hashlib.sha256(template.encode()).hexdigest()[:16]}.yaml"
    with stage("upload the Lambdas and the template", left="nothing deployed"):
        s3 = client("s3")
        ensure_artifact_bucket(s3, artifact_bucket, settings.region)
        progress(f"uploading the Lambdas ({len(code)} bytes) to s3://{artifact_bucket}/{code_key}")
        s3.put_object(Bucket=artifact_bucket, Key=code_key, Body=code)
        s3.put_object(Bucket=artifact_bucket, Key=template_key, Body=template.encode())
    template_url = f"https://{artifact_bucket}.s3.{settings.region}.amazonaws.com/{template_key}"

    progress(f"{'creating' if creating else 'updating'} stack {settings.stack_name} in {settings.region}")
    change_set = create_change_set(cloudformation, settings.stack_name, template_url, parameters, creating,
                                   settings.role_arn)
    if change_set is None:
        progress(f"stack {settings.stack_name}: no changes")
    else:
        status = execute_and_wait(cloudformation, settings.stack_name, change_set, settings.timeout)
        progress(f"stack {settings.stack_name}: {status}")

    with stage("read the stack's outputs", left=f"stack {settings.stack_name} is deployed"):
        stack = cloudformation.describe_stacks(StackName=settings.stack_name)["Stacks"][0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    if settings.upsert_pipeline:
        if "PipelineExecutionRoleArn" not in outputs:
            raise UserError(f"upsert the pipeline failed: stack {settings.stack_name} has no PipelineExecutionRoleArn "
                            "output; the stack is deployed, the pipeline was not updated (or pass --no-pipeline)")
        progress(f"upserting pipeline {settings.pipeline_name}")
        upsert_pipeline(settings, outputs["PipelineExecutionRoleArn"])
    for key, value in sorted(outputs.items()):
        print(f"{key}={value}")
    return outputs
