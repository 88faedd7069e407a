"""The console's routes over moto's SageMaker API, without a browser (the browser test is in test_local_stack)."""

import urllib.error
import urllib.parse
import urllib.request

import pytest

from infra.local.console import background_console
from livetrain.config import Config

CONFIG = Config()


@pytest.fixture
def console(aws):
    with background_console(CONFIG, aws.endpoint_url) as served:
        yield served


def post(url: str, **form) -> int:
    try:
        return urllib.request.urlopen(url, data=urllib.parse.urlencode(form).encode(), timeout=30).status
    except urllib.error.HTTPError as error:
        return error.code


def test_reject_with_a_comment_is_an_update_model_package(aws, console):
    sagemaker = aws.client("sagemaker")
    sagemaker.create_model_package_group(ModelPackageGroupName=CONFIG.model_package_group)
    arn = sagemaker.create_model_package(
        ModelPackageGroupName=CONFIG.model_package_group, ModelApprovalStatus="PendingManualApproval",
        InferenceSpecification={"Containers": [{"Image": "local/linear-learner"}],
                                "SupportedContentTypes": ["text/csv"],
                                "SupportedResponseMIMETypes": ["text/csv"]})["ModelPackageArn"]
    assert 'id="package-1"' in urllib.request.urlopen(console.url, timeout=30).read().decode()

    assert post(f"{console.url}/packages/decision", arn=arn, decision="Rejected", comment=" leaks the label ") == 200
    package = sagemaker.describe_model_package(ModelPackageName=arn)
    assert (package["ModelApprovalStatus"], package["ApprovalDescription"]) == ("Rejected", "leaks the label")
    assert post(f"{console.url}/packages/decision", arn=arn, decision="Maybe") == 400


def test_what_the_stack_refuses_is_one_line(aws, console):
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(f"{console.url}/executions/nope", timeout=30)
    assert answer.value.code == 502
    assert answer.value.read().decode().count("\n") == 0
