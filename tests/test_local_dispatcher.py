"""The local dispatcher: moto matches rules, SQS taps carry the events, targets run once per event."""

import json

import pytest

from infra.local.dispatcher import Dispatcher, LocalRule, json_path
from infra.local.services import wait_until

MANIFEST_PATTERN = {"source": ["aws.s3"], "detail-type": ["Object Created"],
                    "detail": {"bucket": {"name": ["data"]}, "object": {"key": [{"suffix": ".manifest"}]}}}


@pytest.fixture
def clients(aws):
    return {name: aws.client(name) for name in ("s3", "events", "sqs", "sagemaker")}


def pending_package(sagemaker) -> str:
    """A new package pending approval in the group "models"; its ARN."""
    return sagemaker.create_model_package(
        ModelPackageGroupName="models", ModelApprovalStatus="PendingManualApproval",
        InferenceSpecification={
            "Containers": [{"Image": "img", "ModelDataUrl": "s3://b/model.tar.gz"}],
            "SupportedContentTypes": ["text/csv"], "SupportedResponseMIMETypes": ["application/json"]},
    )["ModelPackageArn"]


def test_json_path():
    event = {"detail": {"object": {"key": "batches/a/b.manifest"}}}
    assert json_path(event, "$.detail.object.key") == "batches/a/b.manifest"
    with pytest.raises(ValueError):
        json_path(event, "detail.object")


def test_manifest_upload_reaches_the_target_once(clients, tmp_path):
    s3, events, sqs = clients["s3"], clients["events"], clients["sqs"]
    s3.create_bucket(Bucket="data")
    s3.put_bucket_notification_configuration(Bucket="data",
                                             NotificationConfiguration={"EventBridgeConfiguration": {}})
    received = []
    dispatcher = Dispatcher(events, sqs, tmp_path)
    dispatcher.add_rule(LocalRule("batch-landed", MANIFEST_PATTERN, received.append))

    s3.put_object(Bucket="data", Key="batches/E/b1/prices.csv", Body=b"x")
    s3.put_object(Bucket="data", Key="batches/E/b1/batch.manifest", Body=b"[]")
    wait_until(lambda: dispatcher.poll_once(wait_seconds=1) or received, 20, "the manifest event")
    assert [json_path(e, "$.detail.object.key") for e in received] == ["batches/E/b1/batch.manifest"]

    # at-least-once delivery: the same event again is acknowledged and skipped, even after a restart
    queue_url = sqs.get_queue_url(QueueName="batch-landed-tap")["QueueUrl"]
    sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(received[0]))
    restarted = Dispatcher(events, sqs, tmp_path)
    restarted.add_rule(LocalRule("batch-landed", MANIFEST_PATTERN, received.append))
    assert restarted.poll_once(wait_seconds=1) == 0
    assert len(received) == 1
    assert "Messages" not in sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=0)


def test_a_failing_target_is_retried(clients, tmp_path):
    events, sqs = clients["events"], clients["sqs"]
    attempts = []

    def flaky(event):
        attempts.append(event["id"])
        if len(attempts) == 1:
            raise RuntimeError("transient")

    dispatcher = Dispatcher(events, sqs, tmp_path)
    dispatcher.add_rule(LocalRule("custom", {"source": ["test.source"]}, flaky))
    events.put_events(Entries=[{"Source": "test.source", "DetailType": "t", "Detail": "{}"}])
    wait_until(lambda: dispatcher.poll_once(wait_seconds=1) == 1, 20, "the retried event")
    assert len(attempts) == 2 and attempts[0] == attempts[1]


def test_every_model_package_change_is_an_event_in_order(clients, tmp_path):
    """moto (with moto_gaps) puts a state change event per CreateModelPackage and UpdateModelPackage, as
    SageMaker does: approve, reject and approve again at once are three events, in order."""
    events, sqs, sagemaker = clients["events"], clients["sqs"], clients["sagemaker"]
    sagemaker.create_model_package_group(ModelPackageGroupName="models")
    received = []
    dispatcher = Dispatcher(events, sqs, tmp_path)
    dispatcher.add_rule(LocalRule("packages", {"source": ["aws.sagemaker"],
                                               "detail-type": ["SageMaker Model Package State Change"],
                                               "detail": {"ModelPackageGroupName": ["models"]}}, received.append))
    arn = pending_package(sagemaker)
    for status in ("Approved", "Rejected", "Approved"):
        sagemaker.update_model_package(ModelPackageArn=arn, ModelApprovalStatus=status)
    wait_until(lambda: dispatcher.poll_once(wait_seconds=1) == 0 and len(received) >= 4, 20, "four events")
    assert [e["detail"]["ModelApprovalStatus"] for e in received] == \
        ["PendingManualApproval", "Approved", "Rejected", "Approved"]
    assert {e["detail"]["ModelPackageArn"] for e in received} == {arn}
    assert received[0]["detail"]["InferenceSpecification"]["SupportedContentTypes"] == ["text/csv"]
