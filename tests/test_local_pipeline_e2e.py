"""The product's own pipeline, run end to end on this machine by `livetrain pipeline run-local` against moto.

`livetrain pipeline upsert` builds the real definition (SDK v3), uploads the processing code
and creates the pipeline in moto; `run-local --pipeline-name` fetches it with DescribePipeline
and runs it on a synthetic batch uploaded to moto's S3 with its manifest. Every run uses the
definition's DEFAULT gate parameters; how often each verdict holds over many seeds is
bench/bench_gate.py's figure, and these tests pin one seed each.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lambdas.epics import epic_name
from livetrain.config import Config
from pipelines.contract import GATE_STEPS
from pipelines.local.records import ExecutionStore
from processing.batch_contract import (
    TRANSACTIONS_FILE,
    upload_batch_dir,
)

pytestmark = pytest.mark.slow

BUCKET = "livetrain-data"
GROUP = epic_name("livetrain-models", Config.epic)  # the batches' epic (run-local reads it from the key)
ROLE = "arn:aws:iam::123456789012:role/livetrain-pipeline"
TRADES = 3000  # enough for the failure paths
# The planted signal shows through the time split when the batch spans enough market time: 10,000 trades
# opened every 30 s are about 3.5 days of ticks.
PLANTED = {"trades": 10_000, "seed": 0, "market": "planted-signal"}
PREPROCESS = Path(__file__).resolve().parents[1] / "processing" / "preprocess.py"


def run_pipeline(aws, run_cli, tmp_path, batch_dir, *parameters):
    """upsert + run-local; (the run-local process, the execution's record)."""
    s3 = aws.client("s3")
    if BUCKET not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
        s3.create_bucket(Bucket=BUCKET)
    manifest_key = upload_batch_dir(s3, BUCKET, batch_dir)
    upsert = run_cli("pipeline", "upsert", "--endpoint-url", aws.endpoint_url, "--role-arn", ROLE, "--bucket", BUCKET,
                     "--model-package-group", "livetrain-models", "--max-jobs", "2", "--max-parallel-jobs", "2")
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
    assert statuses(record) == {
        **{name: "Succeeded" for name in ("Preprocess", "TuneLinearLearner", "FitBaseline", "BestModel",
                                          "TransformTest", "FindChampion", "TransformChampion", "EvaluateBestModel",
                                          *GATE_STEPS, "RegisterBestModel")},
        **{fail: "NotExecuted" for fail in GATE_STEPS.values()}}

    sagemaker, s3 = aws.client("sagemaker"), aws.client("s3")
    packages = sagemaker.list_model_packages(ModelPackageGroupName=GROUP)["ModelPackageSummaryList"]
    assert len(packages) == 1
    package = sagemaker.describe_model_package(ModelPackageName=packages[0]["ModelPackageArn"])
    assert package["ModelApprovalStatus"] == "PendingManualApproval"
    statistics = package["ModelMetrics"]["ModelQuality"]["Statistics"]
    report = evaluation(record)
    assert json.loads(read_s3(s3, statistics["S3Uri"])) == report
    assert report["lift"]["lower"] > 0 and report["vs_champion"]["present"] is False
    assert report["baseline"]["description"].startswith("L2-regularised logistic regression")
    assert report["test_slice"]["independent_windows"] >= 20
    assert record["Steps"]["FindChampion"]["Properties"]["OutputParameters"]["ChampionPackageArn"] == "none"

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
                          + "/test_features-00000.csv.out").decode().splitlines()  # one shard
    assert len(predictions) == report["test_slice"]["trades"]
    assert {"score", "predicted_label"} <= set(json.loads(predictions[0]))

    steps = run_cli("pipeline", "steps", record["PipelineExecutionId"], "--state-dir", tmp_path / "state")
    assert steps.returncode == 0 and "Outcome True" in steps.stdout and package["ModelPackageArn"] in steps.stdout

    page_run = run_cli("report", record["PipelineExecutionId"], "--state-dir", tmp_path / "state",
                       "--out", tmp_path / "report")
    assert page_run.returncode == 0, page_run.stderr
    page = (tmp_path / "report" / "index.html").read_text()
    for image in ("dag.png", "tuning.png", "verdict.png", "confusion.png"):
        assert f'src="{image}"' in page
        assert (tmp_path / "report" / image).read_bytes().startswith(b"\x89PNG")
    assert package["ModelPackageArn"] in page and "base rate" in page and "baseline" in page


def assert_not_registered_at(aws, result, record, fail_step: str, packages=()) -> str:
    """The run failed at this gate's Fail step, registered nothing, and said why with every number."""
    assert result.returncode == 1
    failed = [name for name, status in statuses(record).items() if status == "Failed"]
    assert failed == [fail_step], record["FailureReason"]
    assert statuses(record)["RegisterBestModel"] == "NotExecuted"
    reason = record["FailureReason"]
    assert reason.startswith("Not registered: ") and reason.endswith(evaluation(record)["summary"])
    assert result.stdout.strip().endswith(reason)
    assert registered(aws) == list(packages)
    return reason


def registered(aws) -> list[str]:
    """The ARNs of the packages in the group (none when the group does not exist yet)."""
    sagemaker = aws.client("sagemaker")
    groups = sagemaker.list_model_package_groups()["ModelPackageGroupSummaryList"]
    if GROUP not in [g["ModelPackageGroupName"] for g in groups]:
        return []
    return [p["ModelPackageArn"] for p in
            sagemaker.list_model_packages(ModelPackageGroupName=GROUP)["ModelPackageSummaryList"]]


def test_preprocess_on_two_instances_shares_the_shards_and_writes_the_slices_of_one(aws, run_cli, tmp_path,
                                                                                  make_batch):
    """The planted batch in four shards, ProcessingInstanceCount=2: two processes, each with two shards
    (ShardedByS3Key), whose files together are the slices preprocess.py writes of the whole batch alone; the run
    goes on to its verdict as usual."""
    import pandas as pd

    from processing import batch_contract as bc
    from processing import preprocess as pp

    whole = bc.read_batch(make_batch(**PLANTED))
    sharded = bc.write_batch_dir(bc.render_batch(
        bucket=BUCKET, epic=whole.meta["epic"], batch_id="planted-in-four-shards", prices=pd.DataFrame(whole.prices),
        trades=pd.DataFrame(whole.trades), bot_settings=whole.meta["bot"], shard_trades=2500), tmp_path / "batch")
    result, record = run_pipeline(aws, run_cli, tmp_path, sharded, "--param", "ProcessingInstanceCount=2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert statuses(record)["RegisterBestModel"] == "Succeeded"
    log = Path(record["Steps"]["Preprocess"]["LogFile"]).read_text()
    assert "algo-1: input prices: 2 file(s)" in log and "algo-2: input prices: 2 file(s)" in log

    alone = tmp_path / "alone"
    pp.preprocess(sharded, alone, min_test_windows=20.0, log=lambda m: None)  # as the pipeline passes it
    s3 = aws.client("s3")
    for output in record["Steps"]["Preprocess"]["Properties"]["ProcessingOutputConfig"]["Outputs"]:
        bucket, _, prefix = output["S3Output"]["S3Uri"].removeprefix("s3://").partition("/")
        uploaded = {item["Key"].removeprefix(prefix + "/"): read_s3(s3, f"s3://{bucket}/{item['Key']}")
                    for item in s3.list_objects_v2(Bucket=bucket, Prefix=prefix + "/")["Contents"]}
        folder = alone / output["OutputName"]
        assert uploaded == {str(f.relative_to(folder)): f.read_bytes() for f in folder.rglob("*") if f.is_file()}
    assert len(pp.slice_files(alone, pp.TRAIN_CSV)) == 3  # the train slice spans three of the four shards


def test_a_random_walk_does_not_register(aws, run_cli, tmp_path, make_batch):
    result, record = run_pipeline(aws, run_cli, tmp_path, make_batch(trades=10_000, seed=0, market="random-walk"))
    report = evaluation(record)
    reason = assert_not_registered_at(aws, result, record, "NoLiftOverBaseRate")
    assert report["lift"]["lower"] < 0 < report["lift"]["upper"]  # no skill, and the interval says so
    assert report["text"]["lift"] in reason and report["text"]["base_rate"] in reason


def test_dense_trading_over_a_short_span_is_not_enough_market_time(aws, run_cli, tmp_path, make_batch):
    # a trade on every tick: 10,000 trades cover under 3 h of one price path
    result, record = run_pipeline(aws, run_cli, tmp_path, make_batch(trades=10_000, seed=0, market="random-walk",
                                                                      open_every_s=0))
    assert result.returncode == 1
    reason = record["Steps"]["Preprocess"]["FailureReason"]
    assert reason.startswith("preprocess: error: not enough market time for a verdict: the test slice covers ")
    assert "export batches of about " in reason and reason.endswith("this batch is no evidence either way")
    assert {s for n, s in statuses(record).items() if n != "Preprocess"} == {"NotExecuted"}


def test_where_most_trades_win_flagging_them_is_no_skill(aws, run_cli, tmp_path, make_batch):
    # take-profit 20 points, stop-loss 300: about 4 trades in 5 win, so precision alone would look good
    batch = make_batch(trades=10_000, seed=0, market="random-walk", limit_distance=20.0, stop_distance=300.0)
    result, record = run_pipeline(aws, run_cli, tmp_path, batch)
    report = evaluation(record)
    assert report["base_rate"]["value"] > 0.7
    assert report["binary_classification_metrics"]["precision"]["lower"] > 0.4  # passes MinPrecision …
    assert_not_registered_at(aws, result, record, "NoLiftOverBaseRate")  # … but not the lift over the base rate
    assert report["lift"]["lower"] < 0


def test_a_challenger_worse_than_the_approved_champion_is_not_registered(aws, run_cli, tmp_path, make_batch):
    """The champion learned the planted momentum; the challenger's batch held the opposite pattern (reversal)
    until its test slice, where momentum returns: on that slice the model in service is clearly better."""
    first, record = run_pipeline(aws, run_cli, tmp_path / "first", make_batch(**PLANTED))
    assert first.returncode == 0, first.stdout + first.stderr
    sagemaker = aws.client("sagemaker")
    champion = record["Steps"]["RegisterBestModel"]["Properties"]["ModelPackageArn"]
    sagemaker.update_model_package(ModelPackageArn=champion, ModelApprovalStatus="Approved")

    # 10,000 trades a 30 s apart: the test slice starts about 74 h after the first tick
    reversal_until_the_test_slice = make_batch(trades=10_000, seed=0, signal_changes=((0.0, -0.25), (75.0, 0.5)))
    result, record = run_pipeline(aws, run_cli, tmp_path / "second", reversal_until_the_test_slice)
    report = evaluation(record)
    assert record["Steps"]["FindChampion"]["Properties"]["OutputParameters"] == {
        "ModelPackageGroupName": GROUP, "ChampionPackageArn": champion,
        "ChampionModelName": epic_name("livetrain-champion", Config.epic) + "-v1"}
    assert report["champion"]["package_arn"] == champion
    assert report["vs_champion"]["shortfall"]["lower"] > 0  # the champion's advantage is significant
    assert_not_registered_at(aws, result, record, "WorseThanChampion", packages=[champion])
    assert record["FailureReason"].startswith("Not registered: the model in service beats it")


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
