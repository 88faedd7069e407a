"""Act on the live-lift alarm: the Lambda behind the "live-lift alarm went into ALARM" rule.

boto3 only (the Lambda runtime's). `handler` reads its configuration from the environment the template sets
(DATA_BUCKET, PREFIX and the deploy Lambda's variables); `act` is the whole behaviour, with the clients passed in.

One live-lift alarm per epic, `<endpoint>-live-lift` on the epic's endpoint `<ENDPOINT_NAME>-<epic slug>`: the
alarm's name gives its epic, and with it the epic's endpoint, model package group and rollback alarms, named as the
deploy Lambda names them (`for_alarm`). For one alarm state change (its id: the state-change time and the alarm's
name), two actions:

- retrain: ask the streamer for a batch of the alarm's epic now, an export request
  `s3://<bucket>/<prefix>/export-requests/<epic>/<id>.json`. The streamer's exporter of that epic answers it with a
  batch of the trades closed since the last batch (streamer/exporter.py), and that batch's manifest starts the
  retraining run through the epic's manifest rule, as every batch does (one run per batch; its client token is made
  from the manifest object). The batch does not exist when the alarm fires, so this Lambda cannot name it in a
  StartPipelineExecution of its own.
- roll back: when the monitor's latest per-version figures for the endpoint (live_quality.json under
  <prefix>/monitoring/<endpoint>/) show that the previous approved package measured better than the one in service
  on the same windows (in every window where both were measured, a higher lift, and in at least one, a lift
  interval wholly above the other's), the previous package is deployed again (the deploy Lambda's code,
  blue/green) and the package in service is marked Rejected with the reason. The previous version rarely served
  in the same windows, so when it has no figures there, its shadow figures (version "<v>-shadow": the monitor's
  run scored the captured requests with it; the local stack's run does, infra/local/monitoring.py) are compared
  instead, and the reason says so; with neither, nothing is rolled back and the report says "not enough data".

Idempotent: the decision is recorded first in `s3://<bucket>/<prefix>/alarm-actions/<id>.json` ("started"), the
actions are each idempotent (an existing request is kept; a package already in service or rejected is a no-op),
and the record then says "done": the same alarm delivered twice acts once, and a retry after a failure finishes
the recorded plan instead of deciding again on a changed endpoint. The record is the action's report.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, replace

from botocore.exceptions import ClientError

try:  # in the Lambda zip, modules sit at its root
    from deploy_on_approval import DETAIL_TYPE as PACKAGE_STATE_CHANGE
    from deploy_on_approval import DeployConfig, deploy, for_group
    from epics import export_requests_prefix, slug_epic
except ImportError:
    from lambdas.deploy_on_approval import DETAIL_TYPE as PACKAGE_STATE_CHANGE
    from lambdas.deploy_on_approval import DeployConfig, deploy, for_group
    from lambdas.epics import export_requests_prefix, slug_epic

log = logging.getLogger("act_on_alarm")
log.setLevel(logging.INFO)

DETAIL_TYPE = "CloudWatch Alarm State Change"
NOT_ENOUGH = "not enough data"
SHADOW_SUFFIX = "-shadow"  # processing/monitor.py's: a version's figures from shadow scoring (not in the zip)
LIVE_LIFT_SUFFIX = "-live-lift"  # an epic's live-lift alarm is <its endpoint>-live-lift (infra/template.yaml)


@dataclass(frozen=True)
class ActionConfig:
    bucket: str
    prefix: str
    deploy: DeployConfig  # the deploy Lambda's: names' prefixes, until for_alarm picks the alarm's epic's names
    epic: str = ""  # the alarm's epic (for_alarm): its streamer lane is asked for a batch

    @classmethod
    def from_env(cls, environ=os.environ) -> ActionConfig:
        """DATA_BUCKET, PREFIX and the deploy Lambda's variables (DeployConfig.from_env)."""
        missing = [name for name in ("DATA_BUCKET", "PREFIX") if not environ.get(name)]
        if missing:
            raise RuntimeError(f"environment variables not set: {', '.join(missing)}")
        return cls(environ["DATA_BUCKET"], environ["PREFIX"], DeployConfig.from_env(environ))


def for_alarm(config: ActionConfig, alarm_name: str) -> ActionConfig | None:
    """The configuration for an epic's live-lift alarm `<endpoint>-<epic slug>-live-lift`: the epic, its endpoint,
    group and rollback alarms (the deploy Lambda's for_group: an epic of the stack's EPICS, if set); None for any
    other alarm."""
    head = f"{config.deploy.endpoint_name}-"
    if not (alarm_name.startswith(head) and alarm_name.endswith(LIVE_LIFT_SUFFIX)):
        return None
    slug = alarm_name[len(head):-len(LIVE_LIFT_SUFFIX)]
    deploy_config = for_group(config.deploy, f"{config.deploy.model_package_group}-{slug}")
    return None if deploy_config is None else replace(config, epic=slug_epic(slug), deploy=deploy_config)


def action_id(detail: dict) -> str:
    """The alarm state change's id: its time (compact, so ids sort in time order) and the alarm's name."""
    stamp = re.sub(r"[^0-9]", "", detail["state"]["timestamp"])[:17]
    return f"{stamp[:8]}T{stamp[8:]}-{detail['alarmName']}"


def _get_json(s3, bucket: str, key: str) -> dict | None:
    try:
        return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise


def _put_json(s3, bucket: str, key: str, content: dict) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(content, indent=1).encode(),
                  ContentType="application/json")


def request_export(s3, config: ActionConfig, request: str, detail: dict) -> dict:
    """The export request for this alarm, unless it exists."""
    key = f"{export_requests_prefix(config.prefix, config.epic)}{request}.json"
    if _get_json(s3, config.bucket, key) is not None:
        log.info("no-op: export request s3://%s/%s exists", config.bucket, key)
        return {"action": "skipped", "reason": "export already requested", "request": key}
    _put_json(s3, config.bucket, key, {"request": request, "alarm": detail["alarmName"],
                                       "reason": detail["state"].get("reason", "")})
    log.info("asked the streamer for a batch now: s3://%s/%s", config.bucket, key)
    return {"action": "requested", "request": key}


def _keys(s3, bucket: str, prefix: str) -> list[str]:
    return [item["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for item in page.get("Contents", [])]


def latest_figures(s3, bucket: str, prefix: str, endpoint: str) -> dict | None:
    """The newest live_quality.json the monitor wrote for `endpoint` (its runs sit under
    <prefix>/monitoring/<endpoint>/<UTC time>-<execution id>/)."""
    keys = [key for key in _keys(s3, bucket, f"{prefix}/monitoring/{endpoint}/") if key.endswith("/live_quality.json")]
    return _get_json(s3, bucket, max(keys)) if keys else None


def action_records(s3, bucket: str, prefix: str) -> list[dict]:
    """Every alarm state change acted on, oldest first (their records under <prefix>/alarm-actions/)."""
    return [_get_json(s3, bucket, key) for key in sorted(_keys(s3, bucket, f"{prefix}/alarm-actions/"))]


def _interval(entry: dict) -> str:
    return f"{entry['value']:+.3f} [{entry['lower']:+.3f}, {entry['upper']:+.3f}]"


def compare(figures: dict, current: str, previous: str) -> tuple[bool, str]:
    """(the previous version measured better, why): on the windows where both versions were judged."""
    judged = {}
    for window in figures.get("windows", []):
        if "lift" in window and window["model_version"] in (current, previous):
            judged.setdefault(window["start"], {})[window["model_version"]] = window["lift"]
    common = {start: lifts for start, lifts in judged.items() if len(lifts) == 2}
    if not common:
        return False, f"{NOT_ENOUGH}: no monitoring window with figures for both v{current} and v{previous}"
    higher = all(lifts[previous]["value"] > lifts[current]["value"] for lifts in common.values())
    apart = any(lifts[previous]["lower"] > lifts[current]["upper"] for lifts in common.values())
    lifts = "; ".join(f"{start}: v{previous} {_interval(v[previous])} vs v{current} {_interval(v[current])}"
                      for start, v in sorted(common.items()))
    verdict = "measured better" if higher and apart else "did not measure better"
    return higher and apart, f"v{previous} {verdict} than v{current} on {len(common)} common window(s): {lifts}"


def plan_rollback(s3, sagemaker, config: ActionConfig) -> dict:
    """Whether to roll back, and from which package to which."""
    deploy_config = config.deploy
    try:
        endpoint = sagemaker.describe_endpoint(EndpointName=deploy_config.endpoint_name)
    except ClientError:
        return {"roll_back": False, "reason": f"endpoint {deploy_config.endpoint_name} does not exist"}
    current = in_service_version(endpoint)
    current_arn = sagemaker.describe_model(ModelName=endpoint["EndpointConfigName"])["PrimaryContainer"][
        "ModelPackageName"]
    found = previous_approved(sagemaker, deploy_config.model_package_group, current)
    if found is None:
        return {"roll_back": False, "reason": f"no approved package older than v{current} in service"}
    previous, previous_arn = found
    figures = latest_figures(s3, config.bucket, config.prefix, deploy_config.endpoint_name)
    if figures is None:
        return {"roll_back": False, "reason": "no monitoring output yet"}
    better, reason = compare(figures, current, previous)
    if reason.startswith(NOT_ENOUGH):  # not measured in service on these windows: shadow-scored, if the monitor did
        better, reason = compare(figures, current, previous + SHADOW_SUFFIX)
    return {"roll_back": better, "reason": reason, "from": current_arn, "to": previous_arn}


def in_service_version(endpoint: dict) -> str:
    """The package version an endpoint serves (the deploy Lambda names its configs <endpoint>-v<version>)."""
    return endpoint["EndpointConfigName"].rsplit("-v", 1)[-1]


def previous_approved(sagemaker, group: str, current: str) -> tuple[str, str] | None:
    """(version, ARN) of the newest approved package of `group` older than version `current`, or None."""
    approved = {}
    for page in sagemaker.get_paginator("list_model_packages").paginate(ModelPackageGroupName=group,
                                                                       ModelApprovalStatus="Approved"):
        for package in page["ModelPackageSummaryList"]:
            approved[package["ModelPackageVersion"]] = package["ModelPackageArn"]
    older = [version for version in approved if current.isdigit() and version < int(current)]
    return (str(max(older)), approved[max(older)]) if older else None


def roll_back(sagemaker, config: ActionConfig, plan: dict, wait_seconds: float | None) -> dict:
    """Deploy the plan's previous package again and reject the one it replaces; each step a no-op when done."""
    event = {"detail-type": PACKAGE_STATE_CHANGE, "resources": [plan["to"]],
             "detail": {"ModelPackageGroupName": config.deploy.model_package_group, "ModelApprovalStatus": "Approved",
                        "ModelPackageArn": plan["to"]}}
    deployed = deploy(event, sagemaker, config.deploy, wait_seconds=wait_seconds)
    if sagemaker.describe_model_package(ModelPackageName=plan["from"])["ModelApprovalStatus"] != "Rejected":
        reason = f"rolled back on the live-lift alarm: {plan['reason']}"
        sagemaker.update_model_package(ModelPackageArn=plan["from"], ModelApprovalStatus="Rejected",
                                       ApprovalDescription=reason[:1000])
        log.info("rejected %s: %s", plan["from"], plan["reason"])
    log.info("rolled back endpoint %s to %s (%s)", config.deploy.endpoint_name, plan["to"], deployed.get("action"))
    return {"action": "rolled back", "deploy": deployed, "from": plan["from"], "to": plan["to"]}


def act(event: dict, s3, sagemaker, config: ActionConfig, wait_seconds: float | None = None) -> dict:
    """Both actions for an ALARM state change, once per state change; returns the action record."""
    detail = event.get("detail") or {}
    if event.get("detail-type") != DETAIL_TYPE or (detail.get("state") or {}).get("value") != "ALARM":
        log.info("no-op: not an alarm going into ALARM: %r", event.get("detail-type"))
        return {"action": "skipped", "reason": "not an alarm going into ALARM"}
    config = for_alarm(config, detail.get("alarmName", ""))
    if config is None:
        log.info("no-op: %r is not an epic's live-lift alarm", detail.get("alarmName"))
        return {"action": "skipped", "reason": "not an epic's live-lift alarm"}
    request = action_id(detail)
    key = f"{config.prefix}/alarm-actions/{request}.json"
    record = _get_json(s3, config.bucket, key)
    if record is not None and record["state"] == "done":
        log.info("no-op: alarm state change %s was acted on already (s3://%s/%s)", request, config.bucket, key)
        return {**record, "action": "skipped", "reason": "already acted on this alarm state change"}
    if record is None:
        record = {"id": request, "alarm": detail["alarmName"], "reason": detail["state"].get("reason", ""),
                  "state": "started", "rollback_plan": plan_rollback(s3, sagemaker, config)}
        _put_json(s3, config.bucket, key, record)
    record["retrain"] = request_export(s3, config, request, detail)
    plan = record["rollback_plan"]
    record["rollback"] = (roll_back(sagemaker, config, plan, wait_seconds) if plan["roll_back"]
                          else {"action": "skipped", "reason": plan["reason"]})
    if not plan["roll_back"]:
        log.info("no rollback: %s", plan["reason"])
    record["state"] = "done"
    _put_json(s3, config.bucket, key, record)
    log.info("report: %s", json.dumps(record))
    return record


def handler(event, context):
    """Lambda entry point: configuration from the environment, waiting at most until 30 s before the timeout."""
    import boto3

    config = ActionConfig.from_env()
    wait_seconds = config.deploy.wait_seconds
    if context is not None:
        wait_seconds = min(wait_seconds, context.get_remaining_time_in_millis() / 1000 - 30)
    return act(event, boto3.client("s3"), boto3.client("sagemaker"), config, wait_seconds=wait_seconds)
