"""The template's two rules through moto's real EventBridge, and the deploy-on-approval Lambda against moto's
SageMaker, all in server mode.

moto has no UpdateEndpoint (HTTP 500), so the update path sends that one call to a botocore Stubber (which
validates the request against the service model) and every other call to moto.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from botocore.stub import Stubber

from infra.local.dispatcher import rule_parameters
from infra.rules import approval_rule_pattern, manifest_rule_pattern
from lambdas.deploy_on_approval import DeployConfig, deploy, deployment_config, handler
from processing.batch_contract import MANIFEST_FILE, PRICES_MANIFEST_SUFFIX, batch_key_prefix

ACCOUNT, REGION = "123456789012", "us-east-1"
# The configured names are prefixes: the pipeline registers an epic's models into its own group, and the deploy
# Lambda serves them from the epic's own endpoint.
GROUP, ENDPOINT = "livetrain-models-CS-D-BITCOIN-CFD-IP", "livetrain-CS-D-BITCOIN-CFD-IP"
V1, V2 = f"{ENDPOINT}-v1", f"{ENDPOINT}-v2"
ENDPOINT_ARN = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/{ENDPOINT.lower()}"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/endpoint-model-role"
CONFIG = DeployConfig(endpoint_name="livetrain", model_package_group="livetrain-models", execution_role_arn=ROLE,
                      alarm_names=("livetrain-invocation-5xx", "livetrain-model-latency"), bake_seconds=120,
                      wait_seconds=5, poll_seconds=1)


@pytest.fixture
def sagemaker(aws):
    client = aws.client("sagemaker")
    client.create_model_package_group(ModelPackageGroupName=GROUP)
    client.create_model_package_group(ModelPackageGroupName="other-models")
    return client


def tap(aws, name: str, pattern: dict) -> str:
    """A rule on moto's default bus with an SQS queue as its target; the queue's URL."""
    events, sqs = aws.client("events"), aws.client("sqs")
    events.put_rule(Name=name, EventPattern=json.dumps(pattern), State="ENABLED")
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_targets(Rule=name, Targets=[{"Id": "tap", "Arn": arn}])
    return url


def test_an_epics_manifest_rule_matches_a_batch_manifest_of_the_epic_only(aws):
    s3, sqs = aws.client("s3"), aws.client("sqs")
    for bucket in ("livetrain-data", "elsewhere"):
        s3.create_bucket(Bucket=bucket)
        s3.put_bucket_notification_configuration(Bucket=bucket,
                                                 NotificationConfiguration={"EventBridgeConfiguration": {}})
    manifest_rule = tap(aws, "manifest", manifest_rule_pattern("livetrain-data", "CS.D.BITCOIN.CFD.IP"))
    # Why one wildcard matcher: matchers listed in one array are OR-ed, so prefix and suffix side by side
    # would also match these other keys.
    either_rule = tap(aws, "prefix-or-suffix", {"source": ["aws.s3"], "detail-type": ["Object Created"],
                                                "detail": {"object": {"key": [{"prefix": "batches/"},
                                                                              {"suffix": ".manifest"}]}}})
    batch = batch_key_prefix("CS.D.BITCOIN.CFD.IP", "b1")
    manifest = batch + MANIFEST_FILE
    for bucket, key in (("livetrain-data", batch + MANIFEST_FILE + PRICES_MANIFEST_SUFFIX),  # the shards' manifest
                        ("livetrain-data", "exports/b1/batch.manifest"), ("elsewhere", manifest),
                        ("livetrain-data", batch_key_prefix("CS.D.ETHUSD.CFD.IP", "b1") + MANIFEST_FILE),  # its rule's
                        ("livetrain-data", manifest)):
        s3.put_object(Bucket=bucket, Key=key, Body=b"[]")

    (event,) = drain(sqs, manifest_rule)

    assert (event["detail-type"], event["detail"]["object"]["key"]) == ("Object Created", manifest)
    assert rule_parameters(event) == {"InputBucket": "livetrain-data", "InputManifestKey": manifest,
                                      "Epic": "CS.D.BITCOIN.CFD.IP"}
    assert len(drain(sqs, either_rule)) == 5


@pytest.fixture
def bus(aws):
    """moto's default bus with two SQS-tapped rules (every package state change, and the template's approval
    rule); the local stack's moto puts package state changes on it, as SageMaker does on AWS (moto_gaps.py)."""
    queues = {"all-packages": tap(aws, "all-packages", {"source": ["aws.sagemaker"]}),
              "approval": tap(aws, "approval", approval_rule_pattern(CONFIG.model_package_group))}
    return aws.client("sqs"), queues


def drain(sqs, url: str) -> list[dict]:
    """Every event in the queue (moto delivers during put_events, so the queue is complete when it returns)."""
    received = []
    while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        received += [json.loads(m["Body"]) for m in messages]
        sqs.delete_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                                                       for i, m in enumerate(messages)])
    return received


def register(sagemaker, bus, group=GROUP, status="Approved") -> dict:
    """A package in `group`, PendingManualApproval then `status`; returns its last state change event from the
    bus (the one of the update)."""
    sqs, queues = bus
    arn = sagemaker.create_model_package(
        ModelPackageGroupName=group, ModelApprovalStatus="PendingManualApproval",
        InferenceSpecification={
            "Containers": [{"Image": "382416733822.dkr.ecr.us-east-1.amazonaws.com/linear-learner:1",
                            "ModelDataUrl": "s3://livetrain-data/livetrain/model.tar.gz"}],
            "SupportedContentTypes": ["text/csv"], "SupportedResponseMIMETypes": ["application/json"]},
    )["ModelPackageArn"]
    sagemaker.update_model_package(ModelPackageArn=arn, ModelApprovalStatus=status)
    return [e for e in drain(sqs, queues["all-packages"]) if e["detail"]["ModelPackageArn"] == arn][-1]


def names(sagemaker) -> tuple[list[str], list[str]]:
    models = [m["ModelName"] for m in sagemaker.list_models()["Models"]]
    configs = [c["EndpointConfigName"] for c in sagemaker.list_endpoint_configs()["EndpointConfigs"]]
    return sorted(models), sorted(configs)


def test_approved_package_creates_the_endpoint_and_a_replay_is_a_no_op(sagemaker, bus):
    event = register(sagemaker, bus)

    report = deploy(event, sagemaker, CONFIG)

    assert report["action"] == "created" and report["status"] == "InService"
    endpoint = sagemaker.describe_endpoint(EndpointName=ENDPOINT)
    assert endpoint["EndpointConfigName"] == V1
    model = sagemaker.describe_model(ModelName=V1)
    assert model["PrimaryContainer"]["ModelPackageName"] == event["detail"]["ModelPackageArn"]
    assert model["ExecutionRoleArn"] == ROLE
    config = sagemaker.describe_endpoint_config(EndpointConfigName=V1)
    variant = config["ProductionVariants"][0]
    assert (variant["ModelName"], variant["InstanceType"]) == (V1, "ml.m5.large")
    assert not config.get("DataCaptureConfig")  # no DATA_CAPTURE_URI, no capture (moto answers {})

    replay = deploy(event, sagemaker, CONFIG)

    assert replay["action"] == "skipped" and "already in service" in replay["reason"]
    assert names(sagemaker) == ([V1], [V1])


def test_other_group_is_a_no_op(sagemaker, bus):
    report = deploy(register(sagemaker, bus, group="other-models"), sagemaker, CONFIG)

    assert report["action"] == "skipped" and "'other-models'" in report["reason"]
    assert names(sagemaker) == ([], [])
    assert sagemaker.list_endpoints()["Endpoints"] == []


def test_a_package_of_another_stacks_group_sharing_the_prefix_is_a_no_op(sagemaker, bus):
    """A dev stack named livetrain-…-dev beside this one: its groups begin with this stack's prefix, and its epics'
    slugs would make this stack's Lambda deploy to the dev endpoint; EPICS (the template's) names this stack's own."""
    config = replace(CONFIG, epics=("CS.D.BITCOIN.CFD.IP",))
    sagemaker.create_model_package_group(ModelPackageGroupName="livetrain-models-dev-CS-D-BITCOIN-CFD-IP")
    report = deploy(register(sagemaker, bus, group="livetrain-models-dev-CS-D-BITCOIN-CFD-IP"), sagemaker, config)

    assert report["action"] == "skipped" and "'livetrain-models-dev-CS-D-BITCOIN-CFD-IP'" in report["reason"]
    assert sagemaker.list_endpoints()["Endpoints"] == []
    assert deploy(register(sagemaker, bus), sagemaker, config)["action"] == "created"  # its own epic's


def test_rejected_package_is_a_no_op(sagemaker, bus):
    report = deploy(register(sagemaker, bus, status="Rejected"), sagemaker, CONFIG)

    assert report["action"] == "skipped" and "Rejected" in report["reason"]
    assert names(sagemaker) == ([], []) and sagemaker.list_endpoints()["Endpoints"] == []


def test_stale_approval_of_a_package_since_rejected_is_a_no_op(sagemaker, bus):
    event = register(sagemaker, bus)
    sagemaker.update_model_package(ModelPackageArn=event["detail"]["ModelPackageArn"], ModelApprovalStatus="Rejected")

    report = deploy(event, sagemaker, CONFIG)

    assert report["action"] == "skipped" and "stale" in report["reason"]
    assert sagemaker.list_endpoints()["Endpoints"] == []


def test_every_approval_change_is_an_event_in_order_so_the_endpoint_ends_on_the_right_version(sagemaker, bus):
    """v2 replaced v1; the reviewer rolls back by rejecting and approving v1 again, at once. Each update is an
    event, in order (a poll of the registry would have seen v1 Approved as before, and left v2 serving)."""
    sqs, queues = bus
    v1 = register(sagemaker, bus)["detail"]["ModelPackageArn"]
    v2 = register(sagemaker, bus)["detail"]["ModelPackageArn"]
    for event in drain(sqs, queues["approval"]):
        deploy(event, sagemaker, CONFIG)
    assert sagemaker.describe_endpoint(EndpointName=ENDPOINT)["EndpointConfigName"] == V2

    for status in ("Rejected", "Approved"):
        sagemaker.update_model_package(ModelPackageArn=v1, ModelApprovalStatus=status)
    assert [e["detail"]["ModelApprovalStatus"] for e in drain(sqs, queues["all-packages"])] == ["Rejected", "Approved"]
    for event in drain(sqs, queues["approval"]):
        deploy(event, sagemaker, CONFIG)
    assert sagemaker.describe_endpoint(EndpointName=ENDPOINT)["EndpointConfigName"] == V1
    assert v2 != v1


class UpdateEndpointStubbed:
    """The moto client, except UpdateEndpoint: that call goes to a Stubber-backed client, then (when
    `completes`) its outcome is applied to moto the way SageMaker ends a successful blue/green update."""

    def __init__(self, sagemaker, aws, completes: bool):
        self._sagemaker, self._completes = sagemaker, completes
        self._stubbed = aws.client("sagemaker")
        self.stubber = Stubber(self._stubbed)
        self.stubber.activate()

    def __getattr__(self, name):
        return getattr(self._sagemaker, name)

    def update_endpoint(self, **kwargs):
        response = self._stubbed.update_endpoint(**kwargs)
        if self._completes:
            self._sagemaker.delete_endpoint(EndpointName=kwargs["EndpointName"])
            self._sagemaker.create_endpoint(EndpointName=kwargs["EndpointName"],
                                            EndpointConfigName=kwargs["EndpointConfigName"])
        return response


EXPECTED_UPDATE = {
    "EndpointName": ENDPOINT,
    "EndpointConfigName": V2,
    "DeploymentConfig": {
        "BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 120},
            "TerminationWaitInSeconds": 0,
            "MaximumExecutionTimeoutInSeconds": 1920,
        },
        "AutoRollbackConfiguration": {
            "Alarms": [{"AlarmName": f"{ENDPOINT}-invocation-5xx"}, {"AlarmName": f"{ENDPOINT}-model-latency"}]},
    },
}


def test_a_newer_package_updates_the_endpoint_blue_green_once(sagemaker, bus, aws):
    deploy(register(sagemaker, bus), sagemaker, CONFIG)
    second = register(sagemaker, bus)
    client = UpdateEndpointStubbed(sagemaker, aws, completes=True)
    client.stubber.add_response("update_endpoint", {"EndpointArn": ENDPOINT_ARN}, EXPECTED_UPDATE)

    report = deploy(second, client, CONFIG)

    client.stubber.assert_no_pending_responses()
    assert (report["action"], report["status"], report["endpoint_config"]) == ("updated", "InService", V2)
    assert names(sagemaker) == ([V1, V2], [V1, V2])

    replay = deploy(second, client, CONFIG)  # the Stubber has no second response: another update would raise

    assert replay["action"] == "skipped"
    assert names(sagemaker) == ([V1, V2], [V1, V2])


def test_an_update_that_ends_on_the_old_config_is_reported_rolled_back(sagemaker, bus, aws):
    deploy(register(sagemaker, bus), sagemaker, CONFIG)
    client = UpdateEndpointStubbed(sagemaker, aws, completes=False)
    client.stubber.add_response("update_endpoint", {"EndpointArn": ENDPOINT_ARN}, EXPECTED_UPDATE)

    report = deploy(register(sagemaker, bus), client, CONFIG)

    assert (report["action"], report["status"]) == ("updated", "RolledBack")


def test_handler_reads_its_configuration_from_the_environment(sagemaker, bus, aws, monkeypatch):
    event = register(sagemaker, bus)
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws.endpoint_url)
    for name, value in {"ENDPOINT_NAME": "from-env", "MODEL_PACKAGE_GROUP": "livetrain-models",
                        "EXECUTION_ROLE_ARN": ROLE, "EPICS": "CS.D.ETHUSD.CFD.IP,CS.D.BITCOIN.CFD.IP",
                        "ALARM_NAMES": "a,b", "INSTANCE_TYPE": "ml.c5.xlarge", "WAIT_SECONDS": "5",
                        "DATA_CAPTURE_URI": "s3://livetrain-data/livetrain/datacapture"}.items():
        monkeypatch.setenv(name, value)

    report = handler(event, None)

    assert report["action"] == "created" and report["endpoint_config"] == "from-env-CS-D-BITCOIN-CFD-IP-v1"
    config = sagemaker.describe_endpoint_config(EndpointConfigName="from-env-CS-D-BITCOIN-CFD-IP-v1")
    assert config["ProductionVariants"][0]["InstanceType"] == "ml.c5.xlarge"
    capture = config["DataCaptureConfig"]
    assert capture["DestinationS3Uri"] == "s3://livetrain-data/livetrain/datacapture"
    assert capture["InitialSamplingPercentage"] == 100 and capture["CaptureOptions"] == [
        {"CaptureMode": "Input"}, {"CaptureMode": "Output"}]


def test_the_approval_rule_delivers_approved_packages_of_the_group_only(sagemaker, bus):
    approved = register(sagemaker, bus)
    register(sagemaker, bus, status="Rejected")
    register(sagemaker, bus, group="other-models")

    delivered = drain(bus[0], bus[1]["approval"])

    assert [e["detail"]["ModelPackageArn"] for e in delivered] == [approved["detail"]["ModelPackageArn"]]


def test_missing_configuration_is_named():
    with pytest.raises(RuntimeError, match="ENDPOINT_NAME, EXECUTION_ROLE_ARN"):
        DeployConfig.from_env({"MODEL_PACKAGE_GROUP": GROUP})


def test_the_lambdas_import_as_the_zip_holds_them_without_the_sagemaker_sdk():
    code = ("import sys; sys.path.insert(0, 'lambdas'); import act_on_alarm, deploy_on_approval\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sagemaker', 'lambdas', 'livetrain')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout
    assert out.strip() == "[]"


def test_rollback_watches_the_alarms_and_is_left_out_without_any():
    config = DeployConfig(endpoint_name="e", model_package_group="g", execution_role_arn="arn:aws:iam::1:role/r")
    assert "AutoRollbackConfiguration" not in deployment_config(config)  # the API refuses an empty alarm list
    alarmed = DeployConfig(endpoint_name="e", model_package_group="g", execution_role_arn="arn:aws:iam::1:role/r",
                           alarm_names=("e-5xx", "e-latency"))
    assert deployment_config(alarmed)["AutoRollbackConfiguration"] == {
        "Alarms": [{"AlarmName": "e-5xx"}, {"AlarmName": "e-latency"}]}
