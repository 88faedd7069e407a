"""The live-quality monitor as the local stack runs it on a timer: processing/monitor.py over S3, metrics published.

One run downloads the endpoint's data capture (s3://<bucket>/<prefix>/datacapture/<endpoint>/) and the ground
truth (s3://<bucket>/<prefix>/groundtruth/), runs the monitor script in a subprocess as a Processing job would,
uploads its three files to s3://<bucket>/<prefix>/monitoring/<UTC time>/ and publishes its metric data with
PutMetricData (namespace livetrain/LiveQuality), where a CloudWatch alarm on LiftLowerBound can watch them.
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

from pipelines.code import PROCESSING_DIR
from pipelines.local import s3io
from pipelines.local.errors import StepFailure


@dataclass(frozen=True)
class MonitorSettings:
    bucket: str
    prefix: str
    endpoint: str
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


def run_monitor(s3, cloudwatch, settings: MonitorSettings) -> dict:
    """One monitoring run (see the module's docstring); returns live_quality.json's content."""
    root = f"s3://{settings.bucket}/{settings.prefix}"
    with tempfile.TemporaryDirectory(prefix="livetrain-monitor-") as work:
        work = Path(work)
        _download(s3, f"{root}/datacapture/{settings.endpoint}/", work / "capture")
        _download(s3, f"{root}/groundtruth/", work / "groundtruth")
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
