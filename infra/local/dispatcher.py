"""Delivers EventBridge rule matches to their real targets, on one machine.

moto stores EventBridge rules and matches events against them, but delivers
only to targets such as SQS (shared/reference/moto.md). So every local rule
gets an SQS "tap" as its only moto target, and the dispatcher reads the taps and
applies the rule's real target: start a pipeline run with parameters taken from
the event, or call a Lambda handler in-process.

Delivery is at least once, as on AWS: an event whose id was already handled is
acknowledged and skipped, so the same event twice starts one run. The ids are
kept in the state directory, so this holds across restarts. An event is
acknowledged only once its target has run (for a batch: its execution is
recorded). A batch's run is started with a client token made from the manifest
object itself (`batch_token`), so a batch whose event was lost with moto's
memory, found again by the stack's catch-up scan, and its event, if that still
comes, start one run between them.

moto emits no "SageMaker Model Package State Change" events either:
`moto_gaps.py` makes its CreateModelPackage and UpdateModelPackage put them on
the bus, one per call, as SageMaker does.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MAX_RECEIVES = 3  # a target that fails this many times gives up on the event (AWS retries, then drops or DLQs)


def json_path(event: dict, path: str):
    """The value at a simple EventBridge JSON path such as `$.detail.object.key`."""
    if not path.startswith("$."):
        raise ValueError(f"unsupported JSON path {path!r}: expected $.a.b.c")
    value = event
    for key in path[2:].split("."):
        value = value[key]
    return value


def batch_token(bucket: str, key: str, etag: str) -> str:
    """The client token of a batch's run: one manifest object (bucket, key, content), one execution."""
    return hashlib.sha256(f"s3://{bucket}/{key}@{etag.strip(chr(34))}".encode()).hexdigest()


def manifest_event(bucket: str, key: str, etag: str) -> dict:
    """The parts of S3's "Object Created" event that the manifest rule's target reads."""
    return {"id": f"catch-up:{batch_token(bucket, key, etag)}", "source": "aws.s3", "detail-type": "Object Created",
            "detail": {"bucket": {"name": bucket}, "object": {"key": key, "etag": etag.strip('"')}}}


def rule_parameters(event: dict) -> dict[str, str]:
    """The pipeline parameters that the manifest rule of the batch's epic (the template has one per epic, each
    matching `batches/<epic>/`) passes for an S3 event: its JSON paths read from the event, the epic as a constant."""
    from infra.rules import pipeline_parameter_mapping
    from pipelines.contract import manifest_epic

    key = event["detail"]["object"]["key"]
    epic = manifest_epic(key)
    if epic is None:
        raise ValueError(f"{key} is not under batches/<epic>/: no epic's rule matches it")
    return {name: str(json_path(event, value)) if value.startswith("$.") else value
            for name, value in pipeline_parameter_mapping(epic).items()}


def start_pipeline(sagemaker, pipeline_name: str, event: dict) -> tuple[str, dict[str, str]]:
    """EventBridge's pipeline target for the manifest rule of the batch's epic: StartPipelineExecution with the
    parameters it passes (rule_parameters) and the batch's token as the client token (a redelivered event, or the
    same manifest found by the catch-up scan, finds its execution instead of starting another); (the execution's
    ARN, the parameters)."""
    parameters = rule_parameters(event)
    manifest = event["detail"]["object"]
    etag = manifest.get("etag") or manifest.get("eTag", "")  # moto 5.2.5 spells it eTag; AWS's events: etag
    token = batch_token(event["detail"]["bucket"]["name"], manifest["key"], etag)
    arn = sagemaker.start_pipeline_execution(
        PipelineName=pipeline_name, ClientRequestToken=token,
        PipelineParameters=[{"Name": name, "Value": value} for name, value in parameters.items()],
    )["PipelineExecutionArn"]
    return arn, parameters


@dataclass
class LocalRule:
    """A rule as provisioned in moto, plus the real target the dispatcher applies."""

    name: str
    pattern: dict
    target: Callable[[dict], None]
    event_bus: str = "default"


class Dispatcher:
    """Reads each rule's SQS tap and applies its target once per event id."""

    def __init__(self, events, sqs, state_dir: Path):
        self.events, self.sqs = events, sqs
        self._taps: dict[str, tuple[LocalRule, str]] = {}
        self._handled_path = Path(state_dir) / "dispatched-events.jsonl"
        self._handled = self._load_handled()
        self._lock = threading.Lock()

    def _load_handled(self) -> set[str]:
        if not self._handled_path.exists():
            return set()
        return {json.loads(line)["id"] for line in self._handled_path.read_text().splitlines() if line.strip()}

    def add_rule(self, rule: LocalRule) -> None:
        """Create the rule in moto with its tap queue as its target."""
        self.events.put_rule(Name=rule.name, EventPattern=json.dumps(rule.pattern), State="ENABLED",
                             EventBusName=rule.event_bus)
        queue_url = self.sqs.create_queue(QueueName=f"{rule.name}-tap")["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self.events.put_targets(Rule=rule.name, EventBusName=rule.event_bus,
                                Targets=[{"Id": "local-tap", "Arn": arn}])
        self._taps[rule.name] = (rule, queue_url)

    def poll_once(self, wait_seconds: int = 0) -> int:
        """Receive from every tap once and dispatch; returns how many events were applied."""
        applied = 0
        for rule, queue_url in list(self._taps.values()):
            messages = self.sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10,
                                                WaitTimeSeconds=wait_seconds,
                                                AttributeNames=["ApproximateReceiveCount"]).get("Messages", [])
            for message in messages:
                applied += self._dispatch(rule, queue_url, message)
        return applied

    def _dispatch(self, rule: LocalRule, queue_url: str, message: dict) -> int:
        event = json.loads(message["Body"])
        key = f"{rule.name}/{event['id']}"
        with self._lock:
            duplicate = key in self._handled
        if not duplicate:
            try:
                rule.target(event)
            except Exception as exc:  # a failed target is retried by redelivery, like an async Lambda
                receives = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
                log.error("rule %s: target failed on event %s (attempt %d/%d): %s",
                          rule.name, event["id"], receives, MAX_RECEIVES, exc)
                if receives < MAX_RECEIVES:
                    self.sqs.change_message_visibility(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"],
                                                       VisibilityTimeout=1)
                    return 0
            self._remember(key)
        else:
            log.info("rule %s: event %s already handled; skipped", rule.name, event["id"])
        self.sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        return 0 if duplicate else 1

    def _remember(self, key: str) -> None:
        with self._lock:
            self._handled.add(key)
            self._handled_path.parent.mkdir(parents=True, exist_ok=True)
            with self._handled_path.open("a") as out:
                out.write(json.dumps({"id": key}) + "\n")
