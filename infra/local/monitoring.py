"""The live-quality monitor as the local stack runs it: the monitoring pipeline, started on a timer.

On AWS each epic's schedule rule in the template starts the monitoring pipeline `<pipeline>-monitor`
(pipelines/definition.py, `get_monitor_pipeline`) on the epic's endpoint: MeasureLiveQuality runs
processing/monitor.py over the endpoint's data capture (s3://<bucket>/<prefix>/datacapture/<endpoint>/) and the
ground truth (s3://<bucket>/<prefix>/groundtruth/), writes its three files to
s3://<bucket>/<prefix>/monitoring/<endpoint>/<start time>-<execution id>/, and PublishLiveQuality sends the metric
data with PutMetricData (namespace livetrain/LiveQuality), where the endpoint's live-lift alarm watches
LiftLowerBound. The local stack starts the same pipeline with StartPipelineExecution on its timer for each epic's
endpoint (infra/local/stack.py); its engine runs the same script and the same Lambda code.

Shadow scoring, local only (given a SageMaker client, before each run): the previous approved package (the newest
one older than the version in service) scores the captured requests of the version in service, and its answers
join the same ground truth as model version "<previous>-shadow", written beside them in S3 (`shadow/` below the
capture and ground-truth prefixes): its figures on the very windows of the model in service, which the
act-on-alarm Lambda compares when the previous version has none of its own there. On AWS nothing does this yet
(it would be a Batch Transform of the capture with the previous model).
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.local import s3io
from pipelines.local.algorithms.linear_learner.serving import decode_request
from pipelines.local.errors import StepFailure
from processing.monitor import DEPENDENCE_SECONDS, MIN_WINDOWS, SHADOW_SUFFIX, WINDOW_HOURS, read_ground_truth, records
from streamer.scoring import ground_truth_record


@dataclass(frozen=True)
class MonitorSettings:
    bucket: str
    prefix: str
    endpoint: str
    model_package_group: str = ""  # for shadow scoring: the previous approved package of this group
    window_hours: float = WINDOW_HOURS
    dependence_seconds: float = DEPENDENCE_SECONDS  # wall-clock seconds: divide by the simulator's speed
    min_windows: float = MIN_WINDOWS

    def capture_uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}/datacapture/{self.endpoint}/"

    def ground_truth_uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}/groundtruth/"

    def pipeline_parameters(self) -> list[dict]:
        """The monitoring pipeline's parameters (pipelines.contract.MONITOR_PARAMETER_NAMES) for a run."""
        return [{"Name": name, "Value": str(value)} for name, value in (
            ("EndpointName", self.endpoint), ("WindowHours", self.window_hours),
            ("DependenceSeconds", self.dependence_seconds), ("MinWindows", self.min_windows))]


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


def upload_shadow_scores(s3, sagemaker, settings: MonitorSettings) -> int:
    """Shadow-score the captured requests of the version in service with the previous approved package and put its
    capture and ground-truth lines under the `shadow/` prefixes; how many requests it scored (0: no endpoint, no
    previous package, or nothing captured yet)."""
    from botocore.exceptions import ClientError

    from lambdas.act_on_alarm import in_service_version, previous_approved
    from pipelines.local.endpoint import load_model_data

    try:
        current = in_service_version(sagemaker.describe_endpoint(EndpointName=settings.endpoint))
    except ClientError:
        return 0  # no endpoint yet
    found = previous_approved(sagemaker, settings.model_package_group, current)
    if found is None:
        return 0
    previous, arn = found
    container = sagemaker.describe_model_package(ModelPackageName=arn)["InferenceSpecification"]["Containers"][0]
    with tempfile.TemporaryDirectory(prefix="livetrain-shadow-") as work:
        work = Path(work)
        _download(s3, settings.capture_uri(), work / "capture")
        _download(s3, settings.ground_truth_uri(), work / "groundtruth")
        capture, truth = shadow_lines(work / "capture", work / "groundtruth",
                                      load_model_data(container["ModelDataUrl"], s3), current, previous)
    for uri, lines in ((settings.capture_uri(), capture), (settings.ground_truth_uri(), truth)):
        if lines:
            bucket, key = s3io.split_s3_uri(f"{uri}shadow/v{previous}.jsonl")
            s3.put_object(Bucket=bucket, Key=key, Body=("\n".join(map(json.dumps, lines)) + "\n").encode())
    return len(capture)
