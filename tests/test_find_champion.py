"""lambdas/find_champion.py against moto's SageMaker records: the epic's group, no champion, the latest Approved
package, idempotence."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lambdas.epics import epic_name
from lambdas.find_champion import NO_CHAMPION, find_champion

EPIC = "CS.D.BITCOIN.CFD.IP"
GROUP = "livetrain-models-CS-D-BITCOIN-CFD-IP"
IMAGE = "382416733822.dkr.ecr.us-east-1.amazonaws.com/linear-learner:1"
EVENT = {"ModelPackageGroupPrefix": "livetrain-models", "Epic": EPIC, "ChallengerModelName": "BestModel-abc123",
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


def test_the_epics_group_is_created_on_its_first_run_with_no_champion(sagemaker):
    assert find_champion(EVENT, sagemaker) == {"ModelPackageGroupName": GROUP, "ChampionPackageArn": NO_CHAMPION,
                                               "ChampionModelName": "BestModel-abc123"}
    assert sagemaker.describe_model_package_group(ModelPackageGroupName=GROUP)["ModelPackageGroupName"] == GROUP
    assert find_champion(EVENT, sagemaker)["ModelPackageGroupName"] == GROUP  # the group exists now: reused
    assert sagemaker.list_models()["Models"] == []


def test_each_epic_has_its_own_group_and_champion(sagemaker):
    sagemaker.create_model_package_group(ModelPackageGroupName=GROUP)
    package(sagemaker, "Approved")
    other = find_champion({**EVENT, "Epic": "CS.D.ETHUSD.CFD.IP"}, sagemaker)
    assert other["ModelPackageGroupName"] == "livetrain-models-CS-D-ETHUSD-CFD-IP"
    assert other["ChampionPackageArn"] == NO_CHAMPION  # the bitcoin champion is not the ether one's
    assert find_champion(EVENT, sagemaker)["ChampionModelName"] == "livetrain-champion-CS-D-BITCOIN-CFD-IP-v1"


@pytest.mark.parametrize(("epic", "problem"), [("CS.D.BTC_USD.IP", "not letters and digits"),
                                               ("CS..D", "not letters and digits"), ("X" * 60, "over SageMaker's 63")])
def test_an_epic_no_sagemaker_name_can_be_made_of_is_refused_in_one_line(sagemaker, epic, problem):
    with pytest.raises(ValueError, match=problem):
        find_champion({**EVENT, "Epic": epic}, sagemaker)
    assert epic_name("livetrain", "IX.D.FTSE.DAILY.IP") == "livetrain-IX-D-FTSE-DAILY-IP"


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
    name = "livetrain-champion-CS-D-BITCOIN-CFD-IP-v2"
    assert first == {"ModelPackageGroupName": GROUP, "ChampionPackageArn": latest, "ChampionModelName": name}
    model = sagemaker.describe_model(ModelName=name)
    assert model["PrimaryContainer"]["ModelPackageName"] == latest
    assert model["ExecutionRoleArn"] == EVENT["ExecutionRoleArn"]
    assert find_champion(EVENT, sagemaker) == first  # a retried step reuses the model
    assert [m["ModelName"] for m in sagemaker.list_models()["Models"]] == [name]


def test_a_malformed_event_names_what_it_lacks(sagemaker):
    with pytest.raises(ValueError, match="lacks Epic, ChallengerModelName, ModelNamePrefix"):
        find_champion({"ModelPackageGroupPrefix": "livetrain-models", "ExecutionRoleArn": "arn"}, sagemaker)


def test_the_lambda_does_not_import_the_sagemaker_sdk():
    code = ("import sys, lambdas.find_champion\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'sagemaker'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
