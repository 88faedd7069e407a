"""Publish the live-quality monitor's figures as CloudWatch metrics: the monitoring pipeline's Lambda step.

boto3 only (the Lambda runtime's). The monitoring pipeline (pipelines/definition.py, `get_monitor_pipeline`)
invokes it after its MeasureLiveQuality processing step with

    {"MetricsUri": "s3://<bucket>/<prefix>/monitoring/<run>/cloudwatch_metrics.json"}

and it sends that file's entries (processing/monitor.py writes them: namespace livetrain/LiveQuality) with
PutMetricData, where the template's live-lift alarm watches LiftLowerBound. The processing script itself holds
no AWS SDK. Output parameter: DataPoints, how many were sent. Sending the same file twice sends the same values
with the same timestamps, which CloudWatch's statistics of a period take as the same figure.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime

log = logging.getLogger("publish_live_quality")
log.setLevel(logging.INFO)

BATCH = 500  # PutMetricData's most entries per call


def publish_metrics(cloudwatch, document: dict) -> int:
    """PutMetricData for a cloudwatch_metrics.json document; how many data points were sent."""
    data = [{**entry, "Timestamp": datetime.fromisoformat(entry["Timestamp"])} for entry in document["MetricData"]]
    for start in range(0, len(data), BATCH):
        cloudwatch.put_metric_data(Namespace=document["Namespace"], MetricData=data[start:start + BATCH])
    return len(data)


def publish(event: dict, s3, cloudwatch) -> dict:
    """The step's work: the metrics file named by the event → CloudWatch. ValueError for a bad event."""
    uri = event.get("MetricsUri", "")
    if not uri.startswith("s3://") or "/" not in uri.removeprefix("s3://"):
        raise ValueError(f"MetricsUri {uri!r} is not an s3://bucket/key URI")
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    sent = publish_metrics(cloudwatch, json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read()))
    log.info("published %d data points from %s", sent, uri)
    return {"DataPoints": str(sent)}


def handler(event, context):
    import boto3

    return publish(event, boto3.client("s3"), boto3.client("cloudwatch"))
