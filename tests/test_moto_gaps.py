"""The operations infra/local/moto_gaps.py adds to moto, through the local stack's moto daemon."""

import json

import botocore.exceptions
import pytest

from infra.local.services import start_moto
from pipelines.local.records import ExecutionStore


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("moto")


@pytest.fixture(scope="module")
def moto_daemon(state_dir):
    moto = start_moto(state_dir)
    yield moto
    moto.stop()


def client(moto, service: str):
    import boto3

    return boto3.client(service, endpoint_url=moto.url, region_name="us-east-1")


@pytest.fixture
def sagemaker(moto_daemon):
    return client(moto_daemon, "sagemaker")


def test_every_s3_event_has_its_own_id(moto_daemon):
    s3, events, sqs = (client(moto_daemon, name) for name in ("s3", "events", "sqs"))
    s3.create_bucket(Bucket="events-bucket")
    s3.put_bucket_notification_configuration(Bucket="events-bucket",
                                             NotificationConfiguration={"EventBridgeConfiguration": {}})
    queue = sqs.create_queue(QueueName="all-s3-events")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="all-s3", EventPattern=json.dumps({"source": ["aws.s3"], "detail-type": ["Object Created"]}))
    events.put_targets(Rule="all-s3", Targets=[{"Id": "queue", "Arn": arn}])
    for key in ("a.manifest", "b.manifest", "c.manifest"):
        s3.put_object(Bucket="events-bucket", Key=key, Body=b"[]")
    messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=5)["Messages"]
    ids = [json.loads(message["Body"])["id"] for message in messages]
    assert len(ids) == 3 and len(set(ids)) == 3


def _config(sagemaker, name: str, model: str) -> None:
    sagemaker.create_model(ModelName=model, ExecutionRoleArn="arn:aws:iam::123456789012:role/r",
                           PrimaryContainer={"Image": "img", "ModelDataUrl": f"s3://b/{model}.tar.gz"})
    sagemaker.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[
        {"VariantName": "AllTraffic", "ModelName": model, "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}])


def test_update_endpoint_switches_to_the_new_config(sagemaker):
    _config(sagemaker, "config-1", "model-1")
    _config(sagemaker, "config-2", "model-2")
    sagemaker.create_endpoint(EndpointName="live", EndpointConfigName="config-1")
    arn = sagemaker.update_endpoint(EndpointName="live", EndpointConfigName="config-2",
                                    DeploymentConfig={"BlueGreenUpdatePolicy": {
                                        "TrafficRoutingConfiguration": {"Type": "ALL_AT_ONCE",
                                                                        "WaitIntervalInSeconds": 0}}})["EndpointArn"]
    endpoint = sagemaker.describe_endpoint(EndpointName="live")
    assert endpoint["EndpointArn"] == arn
    assert (endpoint["EndpointConfigName"], endpoint["EndpointStatus"]) == ("config-2", "InService")


def test_update_endpoint_names_what_is_missing(sagemaker):
    with pytest.raises(botocore.exceptions.ClientError, match="Could not find endpoint 'nowhere'"):
        sagemaker.update_endpoint(EndpointName="nowhere", EndpointConfigName="config-1")
    _config(sagemaker, "config-3", "model-3")
    sagemaker.create_endpoint(EndpointName="other", EndpointConfigName="config-3")
    with pytest.raises(botocore.exceptions.ClientError, match="Could not find endpoint configuration 'missing'"):
        sagemaker.update_endpoint(EndpointName="other", EndpointConfigName="missing")


DEFINITION = {"Version": "2020-12-01", "Steps": [],
              "Parameters": [{"Name": "InputBucket", "Type": "String"},
                             {"Name": "Threshold", "Type": "Float", "DefaultValue": 0.5}]}


@pytest.fixture(scope="module")
def pipeline(moto_daemon):
    sagemaker = client(moto_daemon, "sagemaker")
    sagemaker.create_pipeline(PipelineName="api", PipelineDefinition=json.dumps(DEFINITION),
                              RoleArn="arn:aws:iam::123456789012:role/r")
    return "api"


def start(sagemaker, token: str, **extra) -> str:
    return sagemaker.start_pipeline_execution(
        PipelineName="api", ClientRequestToken=token.ljust(32, "0"),
        PipelineParameters=[{"Name": "InputBucket", "Value": "b"}, {"Name": "Threshold", "Value": "0.7"}],
        **extra)["PipelineExecutionArn"]


def test_start_pipeline_execution_queues_a_run_of_the_stored_definition(sagemaker, pipeline, state_dir):
    arn = start(sagemaker, "token-1", PipelineExecutionDisplayName="first-run")
    assert start(sagemaker, "token-1", PipelineExecutionDisplayName="first-run") == arn  # idempotent by token
    execution_id = arn.rsplit("/", 1)[-1]
    described = sagemaker.describe_pipeline_execution(PipelineExecutionArn=arn)
    assert (described["PipelineExecutionDisplayName"], described["PipelineExecutionStatus"]) == \
        ("first-run", "Executing")  # nothing runs it here: the local stack's runner takes the queue
    assert "FailureReason" not in described
    record = ExecutionStore(state_dir).load(execution_id)
    assert record["Parameters"] == {"InputBucket": "b", "Threshold": "0.7"}
    assert json.loads((state_dir / "executions" / execution_id / "definition.json").read_text()) == DEFINITION
    assert list((state_dir / "queue").glob(f"*-{execution_id}.json"))

    second = start(sagemaker, "token-2")
    listed = sagemaker.list_pipeline_executions(PipelineName="api", SortBy="CreationTime", SortOrder="Descending",
                                                MaxResults=1)
    assert [s["PipelineExecutionArn"] for s in listed["PipelineExecutionSummaries"]] == [second]
    rest = sagemaker.list_pipeline_executions(PipelineName="api", SortBy="CreationTime", SortOrder="Descending",
                                              NextToken=listed["NextToken"])["PipelineExecutionSummaries"]
    assert arn in [s["PipelineExecutionArn"] for s in rest] and second not in [s["PipelineExecutionArn"] for s in rest]


def test_start_pipeline_execution_refuses_what_the_definition_does_not_declare(sagemaker, pipeline):
    with pytest.raises(botocore.exceptions.ClientError, match="unknown parameter 'Nope'"):
        sagemaker.start_pipeline_execution(PipelineName="api", PipelineParameters=[{"Name": "Nope", "Value": "1"}])
    with pytest.raises(botocore.exceptions.ClientError, match="Threshold"):
        sagemaker.start_pipeline_execution(PipelineName="api", PipelineParameters=[
            {"Name": "InputBucket", "Value": "b"}, {"Name": "Threshold", "Value": "high"}])
    with pytest.raises(botocore.exceptions.ClientError, match="ResourceNotFound"):
        sagemaker.describe_pipeline_execution(
            PipelineExecutionArn="arn:aws:sagemaker:us-east-1:123456789012:pipeline/api/execution/nothing")


def test_execution_steps_carry_sagemakers_metadata(sagemaker, pipeline, state_dir):
    arn = start(sagemaker, "token-steps")
    store = ExecutionStore(state_dir)
    record = store.load(arn)
    job = "arn:aws:sagemaker:us-east-1:123456789012:processing-job/prep"
    record["Steps"] = {
        "Prep": {"StepName": "Prep", "StepType": "Processing", "StepStatus": "Succeeded",
                 "StartTime": "2026-12-04T10:00:00.000Z", "EndTime": "2026-12-04T10:00:05.000Z", "AttemptCount": 1,
                 "Properties": {"ProcessingJobArn": job}},
        "Gate": {"StepName": "Gate", "StepType": "Condition", "StepStatus": "Succeeded",
                 "StartTime": "2026-12-04T10:00:06.000Z", "EndTime": "2026-12-04T10:00:06.100Z",
                 "Properties": {"Outcome": False}},
        "Explain": {"StepName": "Explain", "StepType": "Fail", "StepStatus": "Failed",
                    "StartTime": "2026-12-04T10:00:07.000Z", "EndTime": "2026-12-04T10:00:07.100Z",
                    "FailureReason": "not better than the baseline"},
        "Register": {"StepName": "Register", "StepType": "RegisterModel", "StepStatus": "NotExecuted"}}
    record.update(PipelineExecutionStatus="Failed", FailureReason="not better than the baseline")
    store.save(record)

    steps = sagemaker.list_pipeline_execution_steps(PipelineExecutionArn=arn)["PipelineExecutionSteps"]
    assert [(s["StepName"], s["StepStatus"], s["Metadata"]) for s in steps] == [
        ("Explain", "Failed", {"Fail": {"ErrorMessage": "not better than the baseline"}}),
        ("Gate", "Succeeded", {"Condition": {"Outcome": "false"}}),
        ("Prep", "Succeeded", {"ProcessingJob": {"Arn": job}})]
    assert steps[0]["FailureReason"] == "not better than the baseline"
    described = sagemaker.describe_pipeline_execution(PipelineExecutionArn=arn)
    assert (described["PipelineExecutionStatus"], described["FailureReason"]) == \
        ("Failed", "not better than the baseline")
    (summary,) = [s for s in sagemaker.list_pipeline_executions(PipelineName="api")["PipelineExecutionSummaries"]
                  if s["PipelineExecutionArn"] == arn]
    assert summary["PipelineExecutionFailureReason"] == "not better than the baseline"
