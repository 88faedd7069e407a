"""`livetrain demo` end to end: the whole loop on one machine, as a newcomer runs it.

A verdict needs a test slice of 20 independent windows of market time: the default 10,000 trades 30 s apart.
Smaller batches end at Preprocess with "not enough market time", which is what the other tests use.
"""

import re

import pytest

from pipelines.local.records import ExecutionStore

pytestmark = pytest.mark.slow


def test_demo_runs_the_whole_loop(run_cli, tmp_path):
    result = run_cli("demo", "--max-jobs", 4, "--state-dir", tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (record,) = ExecutionStore(tmp_path).all()
    assert record["PipelineExecutionStatus"] == "Succeeded"
    assert record["Steps"]["RegisterBestModel"]["StepStatus"] == "Succeeded"
    assert "deployed to endpoint config livetrain-v1; 5 predictions served" in result.stdout
    assert result.stderr.count("predicted_label") == 5  # answered through boto3's invoke_endpoint
    assert result.stderr.count("(the model's threshold 0.") == 5
    assert "lift 0." in result.stdout and "base rate 0." in result.stdout and "no champion yet" in result.stdout
    report = tmp_path / "reports" / record["PipelineExecutionId"]
    assert (report / "index.html").is_file() and (report / "verdict.png").read_bytes().startswith(b"\x89PNG")
    for phase in ("stream the planted-signal market", "run the pipeline", "approve the package", "predict"):
        assert phase in result.stdout  # the summary times every phase


def test_a_batch_too_short_for_a_verdict_deploys_nothing_and_says_what_would_do(run_cli, tmp_path):
    result = run_cli("demo", "--market", "random-walk", "--batch-size", 2000, "--max-jobs", 4,
                     "--state-dir", tmp_path, timeout=600)
    assert result.returncode == 1, result.stderr[-3000:]
    (record,) = ExecutionStore(tmp_path).all()
    assert record["Steps"]["Preprocess"]["StepStatus"] == "Failed"
    assert record["Steps"]["RegisterBestModel"]["StepStatus"] == "NotExecuted"
    assert "not enough market time for a verdict" in record["FailureReason"]
    assert "export batches of about " in record["FailureReason"]
    assert record["FailureReason"] in result.stdout
    assert "nothing is deployed" in result.stderr and "deployed to endpoint" not in result.stdout


def test_continuous_mode_retrains_on_every_batch(run_cli, tmp_path):
    result = run_cli("demo", "--continuous", "--batches", 2, "--no-approve", "--batch-size", 1000, "--max-jobs", 2,
                     "--state-dir", tmp_path, timeout=600)
    assert result.returncode == 1, result.stderr[-3000:]  # 1,000 trades are not enough market time for a verdict
    assert "Traceback" not in result.stderr
    records = sorted(ExecutionStore(tmp_path).all(), key=lambda record: record["StartTime"])
    keys = [record["Parameters"]["InputManifestKey"] for record in records]
    assert len(keys) == 2 and keys == sorted(set(keys))  # one run per batch, in batch order (ids sort by time)
    assert len(re.findall(r"^  execution \w+: ", result.stdout, flags=re.M)) == 2
    assert "deployed to endpoint" not in result.stdout  # --no-approve: packages wait for a reviewer
