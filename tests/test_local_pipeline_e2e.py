"""The product's own pipeline, run end to end on this machine by `livetrain pipeline run-local` against moto.

`livetrain pipeline upsert` builds the real definition (SDK v3), uploads the processing code
and creates the pipeline in moto; `run-local --pipeline-name` fetches it with DescribePipeline
and runs it on a synthetic batch uploaded to moto's S3 with its manifest.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.local.records import ExecutionStore
from processing.batch_contract import (
    TRANSACTIONS_FILE,
    upload_batch_dir,
)

pytestmark = pytest.mark.slow

BUCKET = "livetrain-data"
GROUP = "livetrain-models"
ROLE = "arn:aws:iam::123456789012:role/livetrain-pipeline"
TRADES = 3000  # enough for the failure paths
# The planted signal shows through the time split when the batch spans enough market time: 10,000 trades
# opened every 30 s are about 3.5 days of ticks.
PLANTED = {"trades": 10_000, "seed": 0, "market": "planted-signal"}
PREPROCESS = Path(__file__).resolve().parents[1] / "processing" / "preprocess.py"


def run_pipeline(aws, run_cli, tmp_path, batch_dir, *parameters):
    """upsert + run-local; (the run-local process, the execution's record)."""
    s3 = aws.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    manifest_key = upload_batch_dir(s3, BUCKET, batch_dir)
    upsert = run_cli("pipeline", "upsert", "--endpoint-url", aws.endpoint_url, "--role-arn", ROLE, "--bucket", BUCKET,
                     "--model-package-group", GROUP, "--max-jobs", "2", "--max-parallel-jobs", "2")
    assert upsert.returncode == 0, upsert.stderr
    state = tmp_path / "state"
    result = run_cli("pipeline", "run-local", "--pipeline-name", "livetrain", "--endpoint-url", aws.endpoint_url,
                     "--state-dir", state, "--param", f"InputManifestKey={manifest_key}", *parameters)
    (record,) = ExecutionStore(state).all()
    return result, record


def statuses(record) -> dict[str, str]:
    return {name: step["StepStatus"] for name, step in record["Steps"].items()}


def evaluation(record) -> dict:
    return record["Steps"]["EvaluateBestModel"]["Properties"]["PropertyFiles"]["EvaluationReport"]


def read_s3(s3, uri: str) -> bytes:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def test_planted_signal_batch_registers_one_model_package_and_reports(aws, run_cli, tmp_path, make_batch):
    result, record = run_pipeline(aws, run_cli, tmp_path, make_batch(**PLANTED))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1].startswith(f"Execution {record['PipelineExecutionId']} Succeeded")
    assert statuses(record) == {"Preprocess": "Succeeded", "TuneLinearLearner": "Succeeded", "BestModel": "Succeeded",
                                "TransformTest": "Succeeded", "EvaluateBestModel": "Succeeded",
                                "CheckPrecision": "Succeeded", "RegisterBestModel": "Succeeded",
                                "PrecisionTooLow": "NotExecuted"}

    sagemaker, s3 = aws.client("sagemaker"), aws.client("s3")
    packages = sagemaker.list_model_packages(ModelPackageGroupName=GROUP)["ModelPackageSummaryList"]
    assert len(packages) == 1
    package = sagemaker.describe_model_package(ModelPackageName=packages[0]["ModelPackageArn"])
    assert package["ModelApprovalStatus"] == "PendingManualApproval"
    statistics = package["ModelMetrics"]["ModelQuality"]["Statistics"]
    assert json.loads(read_s3(s3, statistics["S3Uri"])) == evaluation(record)

    tuning = record["Steps"]["TuneLinearLearner"]["Properties"]
    best = tuning["BestTrainingJob"]["TrainingJobName"]
    assert len(tuning["TrainingJobSummaries"]) == 2 and tuning["TrainingJobSummaries"][0]["TrainingJobName"] == best
    model_data = package["InferenceSpecification"]["Containers"][0]["ModelDataUrl"]
    assert model_data.endswith(f"/models/{best}/output/model.tar.gz") and read_s3(s3, model_data)
    for summary in tuning["TrainingJobSummaries"]:
        assert read_s3(s3, model_data.replace(best, summary["TrainingJobName"]))
    model = sagemaker.describe_model(ModelName=record["Steps"]["BestModel"]["Properties"]["ModelName"])
    assert model["PrimaryContainer"]["ModelDataUrl"] == model_data

    predictions = read_s3(s3, record["Steps"]["TransformTest"]["Properties"]["TransformOutput"]["S3OutputPath"]
                          + "/test_features.csv.out").decode().splitlines()
    assert len(predictions) == evaluation(record)["samples"]
    assert {"score", "predicted_label"} <= set(json.loads(predictions[0]))

    steps = run_cli("pipeline", "steps", record["PipelineExecutionId"], "--state-dir", tmp_path / "state")
    assert steps.returncode == 0 and "Outcome True" in steps.stdout and package["ModelPackageArn"] in steps.stdout

    report = run_cli("report", record["PipelineExecutionId"], "--state-dir", tmp_path / "state",
                     "--out", tmp_path / "report")
    assert report.returncode == 0, report.stderr
    page = (tmp_path / "report" / "index.html").read_text()
    for image in ("dag.png", "tuning.png", "confusion.png"):
        assert f'src="{image}"' in page
        assert (tmp_path / "report" / image).read_bytes().startswith(b"\x89PNG")
    assert package["ModelPackageArn"] in page and "auc" in page


def test_random_walk_batch_fails_the_quality_gate_with_its_numbers(aws, run_cli, tmp_path, make_batch):
    # A random walk has no skill to find: a precision 0.3 above the base rate is out of reach.
    batch = make_batch(trades=TRADES, seed=0, market="random-walk")
    labels = [line.rsplit(",", 1)[-1] for line in (batch / TRANSACTIONS_FILE).read_text().splitlines()[1:]]
    base_rate = labels.count("1") / len(labels)
    min_precision = round(base_rate + 0.3, 2)
    result, record = run_pipeline(aws, run_cli, tmp_path, batch, "--param", f"MinPrecision={min_precision}")

    assert result.returncode == 1
    assert statuses(record)["CheckPrecision"] == "Succeeded"
    assert record["Steps"]["CheckPrecision"]["Properties"] == {"Outcome": False}
    assert statuses(record)["RegisterBestModel"] == "NotExecuted"
    assert statuses(record)["PrecisionTooLow"] == "Failed"
    metrics = evaluation(record)["binary_classification_metrics"]
    reason = record["FailureReason"]
    assert f"precision {metrics['precision']['value']} (minimum {min_precision})" in reason
    assert f"recall {metrics['recall']['value']}" in reason
    assert result.stdout.strip().endswith(reason)
    assert aws.client("sagemaker").list_model_packages()["ModelPackageSummaryList"] == []


def test_broken_batch_fails_at_preprocess_with_the_scripts_reason(aws, run_cli, tmp_path, batch_copy):
    batch = batch_copy(trades=TRADES)
    transactions = (batch / TRANSACTIONS_FILE).read_text().splitlines()
    (batch / TRANSACTIONS_FILE).write_text("\n".join(transactions[:1] + transactions[2:]) + "\n")
    direct = subprocess.run([sys.executable, str(PREPROCESS), "--input-dir", str(batch),
                             "--output-dir", str(tmp_path / "direct")], capture_output=True, text=True)
    assert direct.returncode != 0
    expected = direct.stderr.strip().splitlines()[-1].replace(str(batch), "/opt/ml/processing/input/batch")
    assert "/opt/ml/processing/input/batch/" in expected

    result, record = run_pipeline(aws, run_cli, tmp_path, batch)
    assert result.returncode == 1
    assert record["Steps"]["Preprocess"]["FailureReason"] == expected
    assert record["FailureReason"] == f"step Preprocess failed: {expected}"
    assert {s for n, s in statuses(record).items() if n != "Preprocess"} == {"NotExecuted"}
    assert result.stdout.strip().endswith(expected)
