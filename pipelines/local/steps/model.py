"""Model step (CreateModel): records the model at the records endpoint (moto locally)."""

from __future__ import annotations

from pipelines.local.steps import Job, plain, require_linear_learner


def run(arguments: dict, job: Job) -> dict:
    request = {**arguments, "ModelName": job.job_name}
    for container in [request.get("PrimaryContainer"), *request.get("Containers", [])]:
        if container:
            require_linear_learner(container.get("Image"), "Model")
    job.sagemaker.create_model(**request)
    job.log(f"created model {job.job_name}")
    return plain(job.sagemaker.describe_model(ModelName=job.job_name))
