"""The deploy-on-approval Lambda against moto's SageMaker in server mode.

moto has no UpdateEndpoint (HTTP 500), so the update path sends that one call to a botocore Stubber (which
validates the request against the service model) and every other call to moto.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from botocore.stub import Stubber

from infra.rules import model_package_state_change_event
from lambdas.deploy_on_approval import DeployConfig, deploy, handler

ACCOUNT, REGION = "123456789012", "us-east-1"
GROUP, ENDPOINT = "livetrain-models", "livetrain"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/endpoint-model-role"
CONFIG = DeployConfig(endpoint_name=ENDPOINT, model_package_group=GROUP, execution_role_arn=ROLE,
                      alarm_names=("livetrain-invocation-5xx", "livetrain-model-latency"), bake_seconds=120,
                      wait_seconds=5, poll_seconds=1)


@pytest.fixture
def sagemaker(aws):
    client = aws.client("sagemaker")
    client.create_model_package_group(ModelPackageGroupName=GROUP)
    client.create_model_package_group(ModelPackageGroupName="other-models")
    return client


def register(sagemaker, group=GROUP, status="Approved") -> dict:
    """A package in `group` (PendingManualApproval, then `status`); returns the event AWS would emit."""
    arn = sagemaker.create_model_package(
        ModelPackageGroupName=group, ModelApprovalStatus="PendingManualApproval",
        InferenceSpecification={
            "Containers": [{"Image": "382416733822.dkr.ecr.us-east-1.amazonaws.com/linear-learner:1",
                            "ModelDataUrl": "s3://livetrain-data/livetrain/model.tar.gz"}],
            "SupportedContentTypes": ["text/csv"], "SupportedResponseMIMETypes": ["application/json"]},
    )["ModelPackageArn"]
    sagemaker.update_model_package(ModelPackageArn=arn, ModelApprovalStatus=status)
    return model_package_state_change_event(sagemaker.describe_model_package(ModelPackageName=arn), ACCOUNT, REGION)


def names(sagemaker) -> tuple[list[str], list[str]]:
    models = [m["ModelName"] for m in sagemaker.list_models()["Models"]]
    configs = [c["EndpointConfigName"] for c in sagemaker.list_endpoint_configs()["EndpointConfigs"]]
    return sorted(models), sorted(configs)


def test_approved_package_creates_the_endpoint_and_a_replay_is_a_no_op(sagemaker):
    event = register(sagemaker)

    report = deploy(event, sagemaker, CONFIG)

    assert report["action"] == "created" and report["status"] == "InService"
    endpoint = sagemaker.describe_endpoint(EndpointName=ENDPOINT)
    assert endpoint["EndpointConfigName"] == "livetrain-v1"
    model = sagemaker.describe_model(ModelName="livetrain-v1")
    assert model["PrimaryContainer"]["ModelPackageName"] == event["detail"]["ModelPackageArn"]
    assert model["ExecutionRoleArn"] == ROLE
    variant = sagemaker.describe_endpoint_config(EndpointConfigName="livetrain-v1")["ProductionVariants"][0]
    assert (variant["ModelName"], variant["InstanceType"]) == ("livetrain-v1", "ml.m5.large")

    replay = deploy(event, sagemaker, CONFIG)

    assert replay["action"] == "skipped" and "already in service" in replay["reason"]
    assert names(sagemaker) == (["livetrain-v1"], ["livetrain-v1"])


def test_other_group_is_a_no_op(sagemaker):
    report = deploy(register(sagemaker, group="other-models"), sagemaker, CONFIG)

    assert report["action"] == "skipped" and "'other-models'" in report["reason"]
    assert names(sagemaker) == ([], [])
    assert sagemaker.list_endpoints()["Endpoints"] == []


def test_rejected_package_is_a_no_op(sagemaker):
    report = deploy(register(sagemaker, status="Rejected"), sagemaker, CONFIG)

    assert report["action"] == "skipped" and "Rejected" in report["reason"]
    assert names(sagemaker) == ([], []) and sagemaker.list_endpoints()["Endpoints"] == []


def test_stale_approval_of_a_package_since_rejected_is_a_no_op(sagemaker):
    event = register(sagemaker)
    sagemaker.update_model_package(ModelPackageArn=event["detail"]["ModelPackageArn"], ModelApprovalStatus="Rejected")

    report = deploy(event, sagemaker, CONFIG)

    assert report["action"] == "skipped" and "stale" in report["reason"]
    assert sagemaker.list_endpoints()["Endpoints"] == []


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
    "EndpointName": "livetrain",
    "EndpointConfigName": "livetrain-v2",
    "DeploymentConfig": {
        "BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 120},
            "TerminationWaitInSeconds": 0,
            "MaximumExecutionTimeoutInSeconds": 1920,
        },
        "AutoRollbackConfiguration": {
            "Alarms": [{"AlarmName": "livetrain-invocation-5xx"}, {"AlarmName": "livetrain-model-latency"}]},
    },
}


def test_a_newer_package_updates_the_endpoint_blue_green_once(sagemaker, aws):
    deploy(register(sagemaker), sagemaker, CONFIG)
    second = register(sagemaker)
    client = UpdateEndpointStubbed(sagemaker, aws, completes=True)
    client.stubber.add_response("update_endpoint", {"EndpointArn": "arn:aws:sagemaker:us-east-1:123456789012:"
                                                                   "endpoint/livetrain"}, EXPECTED_UPDATE)

    report = deploy(second, client, CONFIG)

    client.stubber.assert_no_pending_responses()
    assert (report["action"], report["status"], report["endpoint_config"]) == ("updated", "InService", "livetrain-v2")
    assert names(sagemaker) == (["livetrain-v1", "livetrain-v2"], ["livetrain-v1", "livetrain-v2"])

    replay = deploy(second, client, CONFIG)  # the Stubber has no second response: another update would raise

    assert replay["action"] == "skipped"
    assert names(sagemaker) == (["livetrain-v1", "livetrain-v2"], ["livetrain-v1", "livetrain-v2"])


def test_an_update_that_ends_on_the_old_config_is_reported_rolled_back(sagemaker, aws):
    deploy(register(sagemaker), sagemaker, CONFIG)
    client = UpdateEndpointStubbed(sagemaker, aws, completes=False)
    client.stubber.add_response("update_endpoint", {"EndpointArn": "arn:aws:sagemaker:us-east-1:123456789012:"
                                                                   "endpoint/livetrain"}, EXPECTED_UPDATE)

    report = deploy(register(sagemaker), client, CONFIG)

    assert (report["action"], report["status"]) == ("updated", "RolledBack")


def test_handler_reads_its_configuration_from_the_environment(sagemaker, aws, monkeypatch):
    event = register(sagemaker)
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws.endpoint_url)
    for name, value in {"ENDPOINT_NAME": "from-env", "MODEL_PACKAGE_GROUP": GROUP, "EXECUTION_ROLE_ARN": ROLE,
                        "ALARM_NAMES": "a,b", "INSTANCE_TYPE": "ml.c5.xlarge", "WAIT_SECONDS": "5"}.items():
        monkeypatch.setenv(name, value)

    report = handler(event, None)

    assert report["action"] == "created" and report["endpoint_config"] == "from-env-v1"
    variant = sagemaker.describe_endpoint_config(EndpointConfigName="from-env-v1")["ProductionVariants"][0]
    assert variant["InstanceType"] == "ml.c5.xlarge"


def test_missing_configuration_is_named():
    with pytest.raises(RuntimeError, match="ENDPOINT_NAME, EXECUTION_ROLE_ARN"):
        DeployConfig.from_env({"MODEL_PACKAGE_GROUP": GROUP})


def test_the_lambda_does_not_import_the_sagemaker_sdk():
    code = ("import sys, lambdas.deploy_on_approval\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'sagemaker'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
