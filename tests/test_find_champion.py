"""lambdas/find_champion.py against moto's SageMaker records: no champion, the latest Approved package, idempotence."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lambdas.find_champion import NO_CHAMPION, find_champion

GROUP = "livetrain-models"
IMAGE = "382416733822.dkr.ecr.us-east-1.amazonaws.com/linear-learner:1"
EVENT = {"ModelPackageGroupName": GROUP, "ChallengerModelName": "BestModel-abc123",
         "ExecutionRoleArn": "arn:aws:iam::123456789012:role/livetrain-pipeline",
         "ModelNamePrefix": "livetrain-champion"}


@pytest.fixture
def sagemaker(aws):
    return aws.client("sagemaker")


def package(sagemaker, status: str, data: str = "s3://b/model.tar.gz") -> str:
    arn = sagemaker.create_model_package(
        ModelPackageGroupName=GROUP, ModelApprovalStatus="PendingManualApproval",
        InferenceSpecification={"Containers": [{"Image": IMAGE, "ModelDataUrl": data}],
                                "SupportedContentTypes": ["text/csv"],
                                "SupportedResponseMIMETypes": ["application/json"]})["ModelPackageArn"]
    if status != "PendingManualApproval":
        sagemaker.update_model_package(ModelPackageArn=arn, ModelApprovalStatus=status)
    return arn


def test_a_group_that_does_not_exist_yet_has_no_champion(sagemaker):
    assert find_champion(EVENT, sagemaker) == {"ChampionPackageArn": NO_CHAMPION,
                                               "ChampionModelName": "BestModel-abc123"}
    assert sagemaker.list_models()["Models"] == []


def test_pending_and_rejected_packages_are_not_champions(sagemaker):
    sagemaker.create_model_package_group(ModelPackageGroupName=GROUP)
    package(sagemaker, "PendingManualApproval")
    package(sagemaker, "Rejected")
    assert find_champion(EVENT, sagemaker)["ChampionPackageArn"] == NO_CHAMPION


def test_the_latest_approved_package_is_the_champion_as_a_model_created_once(sagemaker):
    sagemaker.create_model_package_group(ModelPackageGroupName=GROUP)
    package(sagemaker, "Approved", "s3://b/v1.tar.gz")
    latest = package(sagemaker, "Approved", "s3://b/v2.tar.gz")
    package(sagemaker, "PendingManualApproval", "s3://b/v3.tar.gz")  # newer, but not approved
    first = find_champion(EVENT, sagemaker)
    assert first == {"ChampionPackageArn": latest, "ChampionModelName": "livetrain-champion-v2"}
    model = sagemaker.describe_model(ModelName="livetrain-champion-v2")
    assert model["PrimaryContainer"]["ModelPackageName"] == latest
    assert model["ExecutionRoleArn"] == EVENT["ExecutionRoleArn"]
    assert find_champion(EVENT, sagemaker) == first  # a retried step reuses the model
    assert [m["ModelName"] for m in sagemaker.list_models()["Models"]] == ["livetrain-champion-v2"]


def test_a_malformed_event_names_what_it_lacks(sagemaker):
    with pytest.raises(ValueError, match="lacks ChallengerModelName, ModelNamePrefix"):
        find_champion({"ModelPackageGroupName": GROUP, "ExecutionRoleArn": "arn"}, sagemaker)


def test_the_lambda_does_not_import_the_sagemaker_sdk():
    code = ("import sys, lambdas.find_champion\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'sagemaker'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
