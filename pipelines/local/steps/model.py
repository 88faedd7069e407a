"""Model step (CreateModel): records the model at the records endpoint (moto locally)."""

from __future__ import annotations

from pipelines.local.steps.base import Job, plain


def run(arguments: dict, job: Job) -> dict:
    request = {**arguments, "ModelName": job.job_name}
    job.sagemaker.create_model(**request)
    job.log(f"created model {job.job_name}")
    return plain(job.sagemaker.describe_model(ModelName=job.job_name))
