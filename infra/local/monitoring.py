"""The live-quality monitor as the local stack runs it on a timer: processing/monitor.py over S3, metrics published.

One run downloads the endpoint's data capture (s3://<bucket>/<prefix>/datacapture/<endpoint>/) and the ground
truth (s3://<bucket>/<prefix>/groundtruth/), runs the monitor script in a subprocess as a Processing job would,
uploads its three files to s3://<bucket>/<prefix>/monitoring/<UTC time>/ and publishes its metric data with
PutMetricData (namespace livetrain/LiveQuality), where a CloudWatch alarm on LiftLowerBound can watch them.

Shadow scoring (given a SageMaker client): the previous approved package (the newest one older than the version
in service) scores the captured requests of the version in service, and its answers join the same ground truth
as model version "<previous>-shadow": its figures on the very windows of the model in service, which the
act-on-alarm Lambda compares when the previous version has none of its own there. On AWS nothing does this yet
(it would be a Batch Transform of the capture with the previous model).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from pipelines.code import PROCESSING_DIR
from pipelines.local import s3io
from pipelines.local.algorithms.linear_learner.serving import decode_request
from pipelines.local.errors import StepFailure
from processing.monitor import SHADOW_SUFFIX, read_ground_truth, records
from streamer.scoring import ground_truth_record


@dataclass(frozen=True)
class MonitorSettings:
    bucket: str
    prefix: str
    endpoint: str
    model_package_group: str = ""  # for shadow scoring: the previous approved package of this group
    window_hours: float = 24.0
    dependence_seconds: float = 1500.0  # wall-clock seconds: divide by the simulator's speed
    min_windows: float = 20.0


def publish_metrics(cloudwatch, document: dict) -> int:
    """PutMetricData for the monitor's cloudwatch_metrics.json; returns how many data points were sent."""
    data = [{**entry, "Timestamp": datetime.fromisoformat(entry["Timestamp"])} for entry in document["MetricData"]]
    for start in range(0, len(data), 500):
        cloudwatch.put_metric_data(Namespace=document["Namespace"], MetricData=data[start:start + 500])
    return len(data)


def _download(s3, uri: str, destination: Path) -> None:
    destination.mkdir(parents=True)
    with contextlib.suppress(StepFailure):  # nothing there yet: the monitor reports no windows
        s3io.download_prefix(s3, uri, destination)


def shadow_lines(capture_dir: Path, truth_dir: Path, model, current: str, previous: str) -> tuple[list, list]:
    """(capture lines, ground-truth lines) of `model` (version `previous`) scoring the captured CSV requests that
    version `current` answered; inference ids "<id>@v<previous>-shadow", version "<previous>-shadow"."""
    truth = read_ground_truth(truth_dir)
    requests = [record for record in records(capture_dir)
                if record.get("captureData", {}).get("endpointInput", {}).get("encoding") == "CSV"
                and truth.get(record.get("eventMetadata", {}).get("inferenceId"), (None, None))[1] == current]
    if not requests:
        return [], []
    features = np.vstack([decode_request(r["captureData"]["endpointInput"]["data"].encode(), "text/csv",
                                         model.feature_dim) for r in requests])
    scores, labels = model.predict(features)
    version = previous + SHADOW_SUFFIX
    capture, ground_truth = [], []
    for record, score, label in zip(requests, scores, labels, strict=True):
        inference_id = f"{record['eventMetadata']['inferenceId']}@v{version}"
        answer = json.dumps({"predictions": [{"score": float(score), "predicted_label": int(label)}]})
        capture.append({"captureData": {"endpointOutput": {"observedContentType": "application/json",
                                                           "mode": "OUTPUT", "data": answer, "encoding": "JSON"}},
                        "eventMetadata": {"inferenceId": inference_id,
                                          "inferenceTime": record["eventMetadata"]["inferenceTime"]},
                        "eventVersion": "0"})
        ground_truth.append(ground_truth_record(inference_id, truth[record["eventMetadata"]["inferenceId"]][0],
                                                version))
    return capture, ground_truth


def _shadow_score(s3, sagemaker, settings: MonitorSettings, work: Path) -> None:
    """Write the previous approved package's shadow answers next to the downloaded capture and ground truth."""
    from botocore.exceptions import ClientError

    from lambdas.act_on_alarm import in_service_version, previous_approved
    from pipelines.local.endpoint import load_model_data

    try:
        current = in_service_version(sagemaker.describe_endpoint(EndpointName=settings.endpoint))
    except ClientError:
        return  # no endpoint yet
    found = previous_approved(sagemaker, settings.model_package_group, current)
    if found is None:
        return
    previous, arn = found
    container = sagemaker.describe_model_package(ModelPackageName=arn)["InferenceSpecification"]["Containers"][0]
    capture, truth = shadow_lines(work / "capture", work / "groundtruth",
                                  load_model_data(container["ModelDataUrl"], s3), current, previous)
    for directory, lines in ((work / "capture", capture), (work / "groundtruth", truth)):
        if lines:
            (directory / "shadow").mkdir(parents=True, exist_ok=True)
            (directory / "shadow" / f"v{previous}.jsonl").write_text("\n".join(map(json.dumps, lines)) + "\n")


def run_monitor(s3, cloudwatch, settings: MonitorSettings, sagemaker=None) -> dict:
    """One monitoring run (see the module's docstring); returns live_quality.json's content. With `sagemaker`,
    the previous approved package is shadow-scored first."""
    root = f"s3://{settings.bucket}/{settings.prefix}"
    with tempfile.TemporaryDirectory(prefix="livetrain-monitor-") as work:
        work = Path(work)
        _download(s3, f"{root}/datacapture/{settings.endpoint}/", work / "capture")
        _download(s3, f"{root}/groundtruth/", work / "groundtruth")
        if sagemaker is not None and settings.model_package_group:
            _shadow_score(s3, sagemaker, settings, work)
        done = subprocess.run([sys.executable, str(PROCESSING_DIR / "monitor.py"), "--capture-dir", work / "capture",
                               "--ground-truth-dir", work / "groundtruth", "--output-dir", work / "out",
                               "--window-hours", str(settings.window_hours), "--dependence-seconds",
                               str(settings.dependence_seconds), "--min-windows", str(settings.min_windows),
                               "--endpoint", settings.endpoint], capture_output=True, text=True, cwd=work)
        if done.returncode != 0:
            raise RuntimeError(f"the live-quality monitor failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H-%M-%SZ")
        s3io.upload_directory(s3, work / "out", f"{root}/monitoring/{stamp}/")
        publish_metrics(cloudwatch, json.loads((work / "out" / "cloudwatch_metrics.json").read_text()))
        return json.loads((work / "out" / "live_quality.json").read_text())
