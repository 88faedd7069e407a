"""The live-quality monitor (processing/monitor.py) on capture and ground truth in the layouts that the local
endpoint and the streamer write: healthy, declining and too-little-data windows, per model version."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipelines.local.capture import capture_record
from processing.monitor import NOT_ENOUGH, in_service, monitor, read_captures, read_ground_truth
from streamer.scoring import ground_truth_record

ROOT = Path(__file__).resolve().parents[1]
CAPTURE = {"EnableCapture": True, "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
           "CaptureContentTypeHeader": {"CsvContentTypes": ["text/csv"], "JsonContentTypes": ["application/json"]}}
START = 1_767_571_200.0  # 2026-01-05T00:00:00Z


def write_traffic(directory: Path, version: str, skill: float, trades: int, seed: int, start: float = START,
                  every_s: float = 30.0) -> None:
    """Captured answers and ground truth for `trades` trades: the model flags a winner with probability 0.5 + skill
    and a loser with 0.5 − skill (skill < 0: it has learned the opposite)."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(trades) < 0.4).astype(int)
    flagged = rng.random(trades) < np.where(labels == 1, 0.5 + skill, 0.5 - skill)
    capture, truth = [], []
    for i in range(trades):
        trade_id = f"v{version}-{seed}-{i}"
        score = 0.25 + 0.5 * flagged[i] + 0.01 * rng.random()
        response = json.dumps({"predictions": [{"score": score, "predicted_label": int(flagged[i])}]}).encode()
        capture.append(capture_record(CAPTURE, (b"1,2,3", "text/csv"), (response, "application/json"), trade_id,
                                      start + every_s * i))
        truth.append(ground_truth_record(trade_id, int(labels[i]), version))
    for sub, lines in (("capture/livetrain/AllTraffic/2026/01/05/00", capture), ("groundtruth/2026/01/05/00", truth)):
        (directory / sub).mkdir(parents=True, exist_ok=True)
        (directory / sub / f"{version}-{seed}.jsonl").write_text("\n".join(map(json.dumps, lines)) + "\n")


def test_a_decayed_model_is_declining_a_good_one_healthy_and_a_short_window_not_judged(tmp_path):
    write_traffic(tmp_path, "1", skill=0.2, trades=2000, seed=0)  # ~16.7 h, 40 dependence spans
    write_traffic(tmp_path, "2", skill=-0.2, trades=2000, seed=1)
    write_traffic(tmp_path, "3", skill=0.2, trades=200, seed=2)  # 1.7 h: 4 spans

    report = monitor(read_captures(tmp_path / "capture"), read_ground_truth(tmp_path / "groundtruth"),
                     window_hours=24, dependence_seconds=1500, min_windows=20)

    by_version = {w["model_version"]: w for w in report["windows"]}
    assert report["merged"] == 4200 and len(report["windows"]) == 3
    good, bad, short = by_version["1"], by_version["2"], by_version["3"]
    assert good["status"] == "healthy" and good["lift"]["lower"] > 0
    assert bad["status"] == "declining" and bad["lift"]["upper"] < 0
    assert short["status"] == NOT_ENOUGH and "lift" not in short
    for window in (good, bad):
        assert set(window["base_rate"]) == {"value", "lower", "upper"}
        assert window["lift"]["value"] == window["precision"]["value"] - window["base_rate"]["value"]
    [violation] = report["constraint_violations.json"]["violations"]
    assert violation["metric_name"] == "lift" and "model version 2" in violation["description"]
    metrics = report["cloudwatch_metrics.json"]["MetricData"]
    lower = {m["Dimensions"][1]["Value"]: m["Value"] for m in metrics
             if m["MetricName"] == "LiftLowerBound" and len(m["Dimensions"]) == 2}
    assert lower == {"1": good["lift"]["lower"], "2": bad["lift"]["lower"]}
    # what the alarm watches: one point per window, the model in service's (a tie goes to the first version)
    [served] = [m for m in metrics if m["Dimensions"] == [{"Name": "Endpoint", "Value": "livetrain"}]]
    assert served["Value"] == good["lift"]["lower"] and served["Timestamp"] == good["last_inference"]


def test_the_model_in_service_is_the_version_with_the_most_trades_in_each_window():
    windows = [{"start": "d1", "trades": 10, "model_version": "1"}, {"start": "d1", "trades": 90, "model_version": "2"},
               {"start": "d2", "trades": 50, "model_version": "2"}]
    assert [(w["start"], w["model_version"]) for w in in_service(windows)] == [("d1", "2"), ("d2", "2")]


def test_the_monitor_runs_as_a_processing_script_and_writes_its_three_files(tmp_path):
    write_traffic(tmp_path, "1", skill=-0.2, trades=1500, seed=3)
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, str(ROOT / "processing" / "monitor.py"), "--capture-dir",
                           tmp_path / "capture", "--ground-truth-dir", tmp_path / "groundtruth", "--output-dir", out,
                           "--min-windows", "10"], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "1 violations" in done.stdout
    assert json.loads((out / "live_quality.json").read_text())["windows"][0]["status"] == "declining"
    assert len(json.loads((out / "constraint_violations.json").read_text())["violations"]) == 1
    assert json.loads((out / "cloudwatch_metrics.json").read_text())["Namespace"] == "livetrain/LiveQuality"
    (tmp_path / "capture" / "bad.jsonl").write_text("{not json\n")
    broken = subprocess.run([sys.executable, str(ROOT / "processing" / "monitor.py"), "--capture-dir",
                             tmp_path / "capture", "--ground-truth-dir", tmp_path / "groundtruth", "--output-dir",
                             tmp_path / "out2"], capture_output=True, text=True, cwd=tmp_path)
    assert broken.returncode == 1 and broken.stderr.startswith("monitor: error:") and "not JSON" in broken.stderr
    assert not (tmp_path / "out2").exists()


def test_the_publishing_step_sends_the_monitors_metrics_to_cloudwatch(aws, tmp_path):
    """The monitoring pipeline's Lambda step (lambdas/publish_live_quality.py) over moto's S3 and CloudWatch."""
    from lambdas.publish_live_quality import publish

    write_traffic(tmp_path, "4", skill=-0.2, trades=2000, seed=4)
    document = monitor(read_captures(tmp_path / "capture"), read_ground_truth(tmp_path / "groundtruth"),
                       window_hours=24, dependence_seconds=1500, min_windows=20)["cloudwatch_metrics.json"]
    s3, cloudwatch = aws.client("s3"), aws.client("cloudwatch")
    s3.create_bucket(Bucket="publish")
    s3.put_object(Bucket="publish", Key="m/cloudwatch_metrics.json", Body=json.dumps(document).encode())
    sent = document["MetricData"]

    assert publish({"MetricsUri": "s3://publish/m/cloudwatch_metrics.json"}, s3, cloudwatch) == {
        "DataPoints": str(len(sent))}
    metrics = cloudwatch.list_metrics(Namespace="livetrain/LiveQuality")["Metrics"]
    assert {m["MetricName"] for m in metrics} == {"LiftLowerBound", "Lift", "Precision"}
    assert {"Name": "ModelVersion", "Value": "4"} in [d for m in metrics for d in m["Dimensions"]]
    with pytest.raises(ValueError, match="not an s3://bucket/key URI"):
        publish({"MetricsUri": "publish/m"}, s3, cloudwatch)


def test_the_previous_version_shadow_scores_the_requests_the_one_in_service_answered(tmp_path):
    from infra.local.monitoring import shadow_lines
    from lambdas.act_on_alarm import compare
    from pipelines.local.algorithms.linear_learner.model import LinearLearnerModel

    rng = np.random.default_rng(4)
    labels = (rng.random(2000) < 0.4).astype(int)
    features = np.column_stack([labels + rng.normal(0, 0.8, 2000), rng.normal(size=(2000, 2))]).round(3)
    capture, truth = [], []
    for i, (row, label) in enumerate(zip(features, labels, strict=True)):  # v2 in service has learned the opposite
        flagged = int(row[0] < 0.5)
        response = json.dumps({"predictions": [{"score": 0.3 + 0.4 * flagged, "predicted_label": flagged}]}).encode()
        capture.append(capture_record(CAPTURE, (",".join(map(str, row)).encode(), "text/csv"),
                                      (response, "application/json"), f"t{i}", START + 30 * i))
        truth.append(ground_truth_record(f"t{i}", int(label), "2"))
    previous = LinearLearnerModel(weights=np.array([4.0, 0.0, 0.0]), bias=-2.0, mean=np.zeros(3), scale=np.ones(3),
                                  threshold=0.5, hyperparameters={})
    for name, lines in (("capture", capture), ("groundtruth", truth)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "v2.jsonl").write_text("\n".join(map(json.dumps, lines)) + "\n")

    shadow_capture, shadow_truth = shadow_lines(tmp_path / "capture", tmp_path / "groundtruth", previous, "2", "1")
    for name, lines in (("capture", shadow_capture), ("groundtruth", shadow_truth)):
        (tmp_path / name / "shadow-v1.jsonl").write_text("\n".join(map(json.dumps, lines)) + "\n")
    report = monitor(read_captures(tmp_path / "capture"), read_ground_truth(tmp_path / "groundtruth"),
                     window_hours=24, dependence_seconds=1500, min_windows=20)

    by_version = {w["model_version"]: w for w in report["windows"]}
    assert set(by_version) == {"2", "1-shadow"} and by_version["1-shadow"]["trades"] == by_version["2"]["trades"]
    assert by_version["1-shadow"]["lift"]["lower"] > 0 > by_version["2"]["lift"]["upper"]
    [served] = [m for m in report["cloudwatch_metrics.json"]["MetricData"] if len(m["Dimensions"]) == 1]
    assert served["Value"] == by_version["2"]["lift"]["lower"]  # the alarm watches the model in service, not a shadow
    assert compare(report, "2", "1")[1].startswith(NOT_ENOUGH) and compare(report, "2", "1-shadow")[0]
