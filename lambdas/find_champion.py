"""Find the model in service for the pipeline's champion/challenger comparison: the Lambda step FindChampion.

boto3 only (the Lambda runtime's). The pipeline invokes it after BestModel with

    {"ModelPackageGroupPrefix": …, "Epic": …, "ChallengerModelName": …, "ExecutionRoleArn": …,
     "ModelNamePrefix": …}

and reads its output parameters:

    ModelPackageGroupName  the epic's model package group, `<prefix>-<epic slug>` (lambdas/epics.py), created
                           here when it does not exist yet: RegisterBestModel registers into it
    ChampionPackageArn     the latest Approved package of that group, or "none" for a group with none yet
    ChampionModelName      a SageMaker model of that package (created once, `<model prefix>-<epic slug>-v<version>`),
                           which a Batch Transform scores the test slice with; the challenger's own model when
                           there is no champion (the pipeline's DAG is fixed: the transform runs either way, and
                           evaluate.py is told there is nothing to compare)

Only the Linear Learner container can score a Linear Learner artefact, which is why the champion is
scored by a transform job and not inside the evaluation script. Idempotent: a group or model of that name is reused.
"""

from __future__ import annotations

import logging

from botocore.exceptions import ClientError

try:  # in the Lambda zip, modules sit at its root
    from epics import epic_name
except ImportError:
    from lambdas.epics import epic_name

log = logging.getLogger("find_champion")
log.setLevel(logging.INFO)

NO_CHAMPION = "none"  # evaluate.py's word for it too
REQUIRED = ("ModelPackageGroupPrefix", "Epic", "ChallengerModelName", "ExecutionRoleArn", "ModelNamePrefix")


def latest_approved(sagemaker, group: str) -> dict | None:
    """The newest Approved package summary of the group, or None."""
    summaries = sagemaker.list_model_packages(
        ModelPackageGroupName=group, ModelApprovalStatus="Approved", ModelPackageType="Versioned",
        SortBy="CreationTime", SortOrder="Descending", MaxResults=1)["ModelPackageSummaryList"]
    return summaries[0] if summaries else None


def ensure_group(sagemaker, group: str) -> None:
    """Create the model package group unless it exists (also when a concurrent run created it first)."""
    try:
        sagemaker.describe_model_package_group(ModelPackageGroupName=group)
        return
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") not in ("ValidationException", "ResourceNotFound"):
            raise
    try:
        sagemaker.create_model_package_group(ModelPackageGroupName=group,
                                             ModelPackageGroupDescription="livetrain models of one epic")
        log.info("created model package group %s", group)
    except ClientError as error:
        if "already exist" not in error.response.get("Error", {}).get("Message", ""):
            raise


def find_champion(event: dict, sagemaker) -> dict:
    """The step's output parameters (see the module docstring); ValueError for a malformed event."""
    missing = [name for name in REQUIRED if not event.get(name)]
    if missing:
        raise ValueError(f"the FindChampion event lacks {', '.join(missing)}")
    group = epic_name(event["ModelPackageGroupPrefix"], event["Epic"])
    ensure_group(sagemaker, group)
    champion = latest_approved(sagemaker, group)
    if champion is None:
        log.info("group %s has no Approved package: no champion", group)
        return {"ModelPackageGroupName": group, "ChampionPackageArn": NO_CHAMPION,
                "ChampionModelName": event["ChallengerModelName"]}
    arn = champion["ModelPackageArn"]
    name = f"{epic_name(event['ModelNamePrefix'], event['Epic'])}-v{champion['ModelPackageVersion']}"
    try:
        sagemaker.create_model(ModelName=name, ExecutionRoleArn=event["ExecutionRoleArn"],
                               PrimaryContainer={"ModelPackageName": arn})
        log.info("created model %s from the champion %s", name, arn)
    except ClientError as error:
        message = error.response.get("Error", {}).get("Message", "")
        if "already exist" not in message:
            raise
        log.info("reusing model %s of the champion %s", name, arn)
    return {"ModelPackageGroupName": group, "ChampionPackageArn": arn, "ChampionModelName": name}


def handler(event, context):
    """Lambda entry point."""
    import boto3

    return find_champion(event, boto3.client("sagemaker"))
