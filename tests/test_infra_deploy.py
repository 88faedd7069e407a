"""`livetrain infra deploy` against moto's CloudFormation in server mode.

moto's CloudFormation cannot create the full template (it does not expand its Fn::ForEach, skips secrets and bucket
policies, and fails a GetAtt on an alarm: shared/reference/moto.md), so the change-set flow runs on a reduced
template with the same deploy-managed parameters and resources moto does create (bucket, IAM role, Lambda
function from the uploaded zip). The full template is used for what fails before the change set; the reduced one
with an alarm's GetAtt for what fails at execution. Rollbacks
never happen in moto: their report is tested with a Stubber on CloudFormation's responses. moto 5.2.5 returns no
Outputs for a stack made through change sets, so the pipeline upsert is tested on its own, against moto.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber

from infra.deploy import DeploySettings, create_change_set, execute_and_wait, package_lambda, upsert_pipeline
from livetrain.errors import UserError

REDUCED_TEMPLATE = """\
AWSTemplateFormatVersion: "2010-09-09"
Parameters:
  DataBucketName: {Type: String}
  PipelineName: {Type: String, Default: livetrain}
  ModelPackageGroupName: {Type: String, Default: livetrain-models}
  LambdaCodeBucket: {Type: String}
  LambdaCodeKey: {Type: String}
  Epics: {Type: CommaDelimitedList}
Resources:
  DataBucket:
    Type: AWS::S3::Bucket
    Properties:
      BucketName: !Ref DataBucketName
  PipelineExecutionRole:
    Type: AWS::IAM::Role
    Properties:
      AssumeRolePolicyDocument:
        Version: "2012-10-17"
        Statement:
          - {Effect: Allow, Principal: {Service: sagemaker.amazonaws.com}, Action: sts:AssumeRole}
  DeployFunction:
    Type: AWS::Lambda::Function
    Properties:
      Runtime: python3.12
      Handler: deploy_on_approval.handler
      Role: !GetAtt PipelineExecutionRole.Arn
      Code: {S3Bucket: !Ref LambdaCodeBucket, S3Key: !Ref LambdaCodeKey}
      Environment:
        Variables: {EPICS: !Join [",", !Ref Epics]}
"""


# What moto's CloudFormation fails when the change set executes: a GetAtt on an alarm.
FAILING_RESOURCES = """\
  EndpointInvocationErrorsAlarm:
    Type: AWS::CloudWatch::Alarm
    Properties: {Namespace: AWS/SageMaker, MetricName: Invocation5XXErrors, Statistic: Sum, Period: 60,
                 EvaluationPeriods: 1, Threshold: 1, ComparisonOperator: GreaterThanOrEqualToThreshold}
  AlarmsQueue:
    Type: AWS::SQS::Queue
    Properties:
      Tags: [{Key: alarm, Value: !GetAtt EndpointInvocationErrorsAlarm.Arn}]
"""


@pytest.fixture
def reduced_template(tmp_path) -> Path:
    path = tmp_path / "reduced.yaml"
    path.write_text(REDUCED_TEMPLATE)
    return path


def deploy(run_cli, aws, *args):
    return run_cli("infra", "deploy", "--stack-name", "lt", "--endpoint-url", aws.endpoint_url, *args)


def error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("livetrain:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_deploy_creates_updates_and_reports_no_changes(run_cli, aws, reduced_template):
    cloudformation = aws.client("cloudformation")

    created = deploy(run_cli, aws, "--template", reduced_template, "--no-pipeline", "--epic", "CS.D.ONE")

    assert created.returncode == 0, created.stderr
    assert cloudformation.describe_stacks(StackName="lt")["Stacks"][0]["StackStatus"] == "CREATE_COMPLETE"
    (function,) = aws.client("lambda").list_functions()["Functions"]
    assert function["CodeSha256"] == base64.b64encode(hashlib.sha256(package_lambda()).digest()).decode()

    unchanged = deploy(run_cli, aws, "--template", reduced_template, "--no-pipeline", "--epic", "CS.D.ONE")

    assert unchanged.returncode == 0, unchanged.stderr
    assert "stack lt: no changes" in unchanged.stderr
    assert [s["Status"] for s in cloudformation.list_change_sets(StackName="lt")["Summaries"]] == ["CREATE_COMPLETE"]

    updated = deploy(run_cli, aws, "--template", reduced_template, "--no-pipeline", "--epic", "CS.D.TWO,CS.D.THREE")

    assert updated.returncode == 0, updated.stderr
    stack = cloudformation.describe_stacks(StackName="lt")["Stacks"][0]
    assert stack["StackStatus"] == "UPDATE_COMPLETE"
    parameters = {p["ParameterKey"]: p["ParameterValue"] for p in stack["Parameters"]}
    assert parameters["DataBucketName"] == "livetrain-data"  # (moto 5.2.5 shows a list parameter as a Python list)
    (function,) = aws.client("lambda").list_functions()["Functions"]
    assert function["Environment"]["Variables"] == {"EPICS": "CS.D.TWO,CS.D.THREE"}


def test_without_the_role_output_the_upsert_stage_says_what_is_deployed(run_cli, aws, reduced_template):
    result = deploy(run_cli, aws, "--template", reduced_template, "--epic", "CS.D.ONE")

    assert result.returncode == 2
    assert "upsert the pipeline failed: stack lt has no PipelineExecutionRoleArn output; the stack is deployed" in (
        error_line(result))
    assert aws.client("cloudformation").describe_stacks(StackName="lt")["Stacks"][0]["StackStatus"] == (
        "CREATE_COMPLETE")


def upsert_settings(aws) -> DeploySettings:
    return DeploySettings(stack_name="lt", region="us-east-1", endpoint_url=aws.endpoint_url, bucket="livetrain-data",
                          pipeline_name="lt-pipeline", model_package_group="lt-models", endpoint_name="lt",
                          epics=("CS.D.ONE",))


def test_a_failed_upsert_names_the_stage_and_the_command_to_retry(aws):
    with pytest.raises(UserError) as failure:
        upsert_pipeline(upsert_settings(aws), "not-a-role")

    message = str(failure.value)
    assert message.startswith("upsert the pipeline failed: ") and "is not an IAM role ARN" in message
    assert "stack lt is deployed but pipeline lt-pipeline was not updated" in message


def test_creating_without_a_required_parameter_names_it_and_touches_nothing(run_cli, aws):
    result = deploy(run_cli, aws)

    assert result.returncode == 2
    assert "creating stack lt needs --parameter StreamerSubnetIds=… --parameter StreamerSecurityGroupIds=…" in (
        error_line(result))
    assert aws.client("s3").list_buckets()["Buckets"] == []
    assert aws.client("cloudformation").list_stacks()["StackSummaries"] == []


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--parameter", "StreamerSubnetIds", "is not KEY=VALUE"),
    ("--parameter", "NoSuchParameter=1", "--parameter NoSuchParameter: the template has no such parameter"),
    ("--parameter", "DataBucketName=other", "--parameter DataBucketName: pass --bucket instead"),
    ("--epic", "CS.D.ONE,,CS.D.TWO", "an empty epic"),
    ("--epic", "CS.D.ONE,CS.D.ONE", "CS.D.ONE given more than once"),
    ("--epic", "CS.D.BIT COIN", "no SageMaker name can be made from it"),
])
def test_bad_parameters_and_epics_are_named_before_anything_is_touched(run_cli, aws, flag, value, message):
    result = deploy(run_cli, aws, flag, value)

    assert result.returncode == 2 and message in error_line(result)
    assert aws.client("s3").list_buckets()["Buckets"] == []


def test_a_failed_execution_names_the_stage_the_cause_and_the_stack_left(run_cli, aws, tmp_path):
    failing = tmp_path / "failing.yaml"  # moto's CloudFormation cannot GetAtt an alarm: it fails at execution
    failing.write_text(REDUCED_TEMPLATE + FAILING_RESOURCES)
    result = deploy(run_cli, aws, "--no-pipeline", "--template", str(failing))

    assert result.returncode == 2
    line = error_line(result)
    assert line.startswith("livetrain: error: execute the change set failed: ")
    assert "EndpointInvocationErrorsAlarm" in line and line.endswith("stack lt is REVIEW_IN_PROGRESS")


def test_a_rolled_back_creation_reports_the_first_failure_and_what_to_do():
    cloudformation = boto3.client("cloudformation", region_name="us-east-1")
    now = datetime.now(UTC)
    stack_id = "arn:aws:cloudformation:us-east-1:123456789012:stack/lt/1"
    events = [{"EventId": event_id, "StackName": "lt", "StackId": stack_id, "LogicalResourceId": resource,
               "ResourceStatus": status, "Timestamp": now, **({"ResourceStatusReason": reason} if reason else {})}
              for event_id, resource, status, reason in (
                  ("3", "lt", "ROLLBACK_COMPLETE", ""),
                  ("2", "DeployFunction", "CREATE_FAILED", "Resource creation cancelled"),
                  ("1", "DataBucket", "CREATE_FAILED", "livetrain-data already exists"))]
    events[2]["Timestamp"] = now - timedelta(seconds=1)  # the earliest failure is the cause
    stack = {"StackName": "lt", "StackStatus": "ROLLBACK_COMPLETE", "CreationTime": now}
    with Stubber(cloudformation) as stubber:
        stubber.add_response("execute_change_set", {}, {"StackName": "lt", "ChangeSetName": "cs"})
        stubber.add_response("describe_stacks", {"Stacks": [stack]}, {"StackName": "lt"})
        stubber.add_response("describe_stack_events", {"StackEvents": events}, {"StackName": "lt"})

        with pytest.raises(UserError, match="execute the change set failed") as failure:
            execute_and_wait(cloudformation, "lt", "cs", timeout=60)

    message = str(failure.value)
    assert "stack lt is ROLLBACK_COMPLETE (DataBucket CREATE_FAILED: livetrain-data already exists)" in message
    assert "delete the stack (aws cloudformation delete-stack --stack-name lt)" in message


def test_a_change_set_without_changes_is_deleted_and_reported_as_none():
    cloudformation = boto3.client("cloudformation", region_name="us-east-1")
    with Stubber(cloudformation) as stubber:
        stubber.add_response("create_change_set", {"Id": "cs-arn"})
        stubber.add_response("describe_change_set", {
            "Status": "FAILED", "StackName": "lt", "ChangeSetName": "cs",
            "StatusReason": "The submitted information didn't contain changes. Submit different information."})
        stubber.add_response("delete_change_set", {})

        assert create_change_set(cloudformation, "lt", "https://b.s3.us-east-1.amazonaws.com/t.yaml", [],
                                 creating=False) is None
        stubber.assert_no_pending_responses()


def test_the_lambda_zip_is_the_handlers_and_what_they_import_and_reproducible(tmp_path):
    import io
    import subprocess
    import sys
    import zipfile

    archive = zipfile.ZipFile(io.BytesIO(package_lambda()))

    assert archive.namelist() == ["act_on_alarm.py", "deploy_on_approval.py", "epics.py", "find_champion.py",
                                  "publish_live_quality.py"]
    assert package_lambda() == package_lambda()
    # every handler imports from the zip alone, as in the Lambda runtime (boto3 beside it, no livetrain package)
    archive.extractall(tmp_path)
    handlers = ", ".join(name.removesuffix(".py") for name in archive.namelist())
    imported = subprocess.run([sys.executable, "-c", f"import sys; sys.modules['lambdas'] = None; import {handlers}"],
                              cwd=tmp_path, capture_output=True, text=True)
    assert imported.returncode == 0, imported.stderr


def test_upsert_creates_the_pipeline_with_the_stacks_role(aws):
    aws.client("s3").create_bucket(Bucket="livetrain-data")
    upsert_pipeline(upsert_settings(aws), "arn:aws:iam::123456789012:role/lt-pipeline")
    pipeline = aws.client("sagemaker").describe_pipeline(PipelineName="lt-pipeline")
    assert pipeline["RoleArn"] == "arn:aws:iam::123456789012:role/lt-pipeline"
    assert '"TuneLinearLearner"' in pipeline["PipelineDefinition"]
