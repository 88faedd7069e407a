"""Tuning step (CreateHyperParameterTuningJob): the local Bayesian tuner over the local Linear Learner.

Channels are downloaded once and shared by every training job; each job's artefact is
uploaded to `<S3OutputPath>/<training-job-name>/output/model.tar.gz`, where SageMaker
puts it. Properties are DescribeHyperParameterTuningJob's, plus `TrainingJobSummaries`
best first (what the SDK's TuningStep properties read).
"""

from __future__ import annotations

from pipelines.local import s3io
from pipelines.local.steps import Job, StepFailure, plain


def run(arguments: dict, job: Job) -> dict:
    from pipelines.local.tuner import run_tuning_job

    definition = arguments.get("TrainingJobDefinition")
    if definition is None:
        raise StepFailure("local tuning needs exactly one TrainingJobDefinition")

    channels = {}
    for channel in definition.get("InputDataConfig", []):
        name, source = channel["ChannelName"], channel["DataSource"]["S3DataSource"]
        destination = job.work_dir / "input" / "data" / name
        files = s3io.download_input(job.s3, source["S3Uri"], source.get("S3DataType"), destination)
        job.log(f"channel {name}: {len(files)} file(s) from {source['S3Uri']}")
        channels[name] = destination

    request = {**arguments, "HyperParameterTuningJobName": job.job_name}
    result = plain(run_tuning_job(request, channels, job.work_dir / "jobs", log=job.log))

    output_path = definition["OutputDataConfig"]["S3OutputPath"].rstrip("/")
    for summary in result["TrainingJobSummaries"]:
        name = summary["TrainingJobName"]
        artefact = job.work_dir / "jobs" / name / "output" / "model.tar.gz"
        if artefact.exists():
            s3io.upload_file(job.s3, artefact, f"{output_path}/{name}/output/model.tar.gz")
    job.log(f"uploaded the artefacts of {len(result['TrainingJobSummaries'])} training job(s) to {output_path}/")
    return {**request, **result}
