"""The operations infra/local/moto_gaps.py adds to moto, through the local stack's moto daemon."""

import botocore.exceptions
import pytest

from infra.local.services import start_moto


@pytest.fixture(scope="module")
def sagemaker(tmp_path_factory):
    import boto3

    moto = start_moto(tmp_path_factory.mktemp("moto"))
    yield boto3.client("sagemaker", endpoint_url=moto.url, region_name="us-east-1")
    moto.stop()


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
