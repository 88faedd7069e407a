"""Transform step (CreateTransformJob): local batch inference with the algorithm of the model's image.

The model's artefact is found as SageMaker finds it, through DescribeModel; each input
object's predictions are uploaded as `<S3OutputPath>/<input name>.out`.
"""

from __future__ import annotations

from pipelines.local import s3io
from pipelines.local.algorithms import algorithm_for_image
from pipelines.local.batch_transform import batch_transform
from pipelines.local.errors import StepFailure
from pipelines.local.models import model_container
from pipelines.local.steps.base import Job


def run(arguments: dict, job: Job) -> dict:
    container = model_container(job.sagemaker, arguments["ModelName"])
    algorithm = algorithm_for_image(container.get("Image", ""))
    if not container.get("ModelDataUrl"):
        raise StepFailure(f"model {arguments['ModelName']} has no ModelDataUrl")
    model_tar = s3io.download_file(job.s3, container["ModelDataUrl"], job.work_dir / "model" / "model.tar.gz")

    transform_input, transform_output = arguments["TransformInput"], arguments["TransformOutput"]
    source = transform_input["DataSource"]["S3DataSource"]
    inputs_dir, outputs_dir = job.work_dir / "input", job.work_dir / "output"
    for path in s3io.download_input(job.s3, source["S3Uri"], source.get("S3DataType"), inputs_dir,
                                    copies=job.copies):
        relative = path.relative_to(inputs_dir.resolve())
        output = outputs_dir / f"{relative}.out"
        output.parent.mkdir(parents=True, exist_ok=True)
        batch_transform(model_tar, path, output, content_type=transform_input.get("ContentType", "text/csv"),
                        accept=transform_output.get("Accept", "application/json"),
                        split_type=transform_input.get("SplitType", "None"), algorithm=algorithm)
        job.log(f"transformed {relative} → {relative}.out")
    written = s3io.upload_directory(job.s3, outputs_dir, transform_output["S3OutputPath"], job.copies)
    job.log(f"uploaded {len(written)} file(s) to {transform_output['S3OutputPath']}")
    return {**arguments, "TransformJobName": job.job_name, "TransformJobArn": job.arn("transform-job"),
            "TransformJobStatus": "Completed"}
