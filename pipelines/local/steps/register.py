"""RegisterModel step (CreateModelPackage) against the records endpoint (moto locally).

As SageMaker Pipelines does, the model package group is created when it does not exist yet.
"""

from __future__ import annotations

from pipelines.local.steps.base import Job, plain


def run(arguments: dict, job: Job) -> dict:
    group = arguments.get("ModelPackageGroupName")
    if group and not _group_exists(job.sagemaker, group):
        job.sagemaker.create_model_package_group(ModelPackageGroupName=group)
        job.log(f"created model package group {group}")
    arn = job.sagemaker.create_model_package(**arguments)["ModelPackageArn"]
    job.log(f"registered {arn}")
    return plain(job.sagemaker.describe_model_package(ModelPackageName=arn))


def _group_exists(sagemaker, group: str) -> bool:
    groups = sagemaker.list_model_package_groups(NameContains=group)["ModelPackageGroupSummaryList"]
    return any(g["ModelPackageGroupName"] == group for g in groups)
