"""Find the model in service for the pipeline's champion/challenger comparison: the Lambda step FindChampion.

boto3 only (the Lambda runtime's). The pipeline invokes it after BestModel with

    {"ModelPackageGroupName": …, "ChallengerModelName": …, "ExecutionRoleArn": …, "ModelNamePrefix": …}

and reads its output parameters:

    ChampionPackageArn   the latest Approved package of the group, or "none" for a group with none yet
    ChampionModelName    a SageMaker model of that package (created once, `<prefix>-v<version>`), which a
                         Batch Transform scores the test slice with; the challenger's own model when there
                         is no champion (the pipeline's DAG is fixed: the transform runs either way, and
                         evaluate.py is told there is nothing to compare)

Only the Linear Learner container can score a Linear Learner artefact, which is why the champion is
scored by a transform job and not inside the evaluation script. Idempotent: a model of that name is reused.
"""

from __future__ import annotations

import logging

from botocore.exceptions import ClientError

log = logging.getLogger("find_champion")
log.setLevel(logging.INFO)

NO_CHAMPION = "none"  # evaluate.py's word for it too
REQUIRED = ("ModelPackageGroupName", "ChallengerModelName", "ExecutionRoleArn", "ModelNamePrefix")


def latest_approved(sagemaker, group: str) -> dict | None:
    """The newest Approved package summary of the group, or None."""
    try:
        summaries = sagemaker.list_model_packages(
            ModelPackageGroupName=group, ModelApprovalStatus="Approved", ModelPackageType="Versioned",
            SortBy="CreationTime", SortOrder="Descending", MaxResults=1)["ModelPackageSummaryList"]
    except ClientError as error:  # the group does not exist yet: its first run creates it when it registers
        if error.response.get("Error", {}).get("Code") in ("ValidationException", "ResourceNotFound"):
            return None
        raise
    return summaries[0] if summaries else None


def find_champion(event: dict, sagemaker) -> dict:
    """The step's output parameters (see the module docstring); ValueError for a malformed event."""
    missing = [name for name in REQUIRED if not event.get(name)]
    if missing:
        raise ValueError(f"the FindChampion event lacks {', '.join(missing)}")
    champion = latest_approved(sagemaker, event["ModelPackageGroupName"])
    if champion is None:
        log.info("group %s has no Approved package: no champion", event["ModelPackageGroupName"])
        return {"ChampionPackageArn": NO_CHAMPION, "ChampionModelName": event["ChallengerModelName"]}
    arn = champion["ModelPackageArn"]
    name = f"{event['ModelNamePrefix']}-v{champion['ModelPackageVersion']}"
    try:
        sagemaker.create_model(ModelName=name, ExecutionRoleArn=event["ExecutionRoleArn"],
                               PrimaryContainer={"ModelPackageName": arn})
        log.info("created model %s from the champion %s", name, arn)
    except ClientError as error:
        message = error.response.get("Error", {}).get("Message", "")
        if "already exist" not in message:
            raise
        log.info("reusing model %s of the champion %s", name, arn)
    return {"ChampionPackageArn": arn, "ChampionModelName": name}


def handler(event, context):
    """Lambda entry point."""
    import boto3

    return find_champion(event, boto3.client("sagemaker"))
