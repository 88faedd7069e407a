"""The operations infra/local/moto_gaps.py adds to moto, through the local stack's moto daemon."""

import json

import botocore.exceptions
import pytest

from infra.local.services import start_moto


@pytest.fixture(scope="module")
def moto_daemon(tmp_path_factory):
    moto = start_moto(tmp_path_factory.mktemp("moto"))
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
