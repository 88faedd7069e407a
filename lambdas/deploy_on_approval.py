"""Deploy an approved model package to its epic's endpoint: the Lambda behind the "package approved" rule.

boto3 only (the Lambda runtime's). `handler` reads its configuration from the environment the template sets
(ENDPOINT_NAME, MODEL_PACKAGE_GROUP, EXECUTION_ROLE_ARN, ALARM_NAMES, INSTANCE_TYPE, DATA_CAPTURE_URI, ...);
`deploy` is the whole behaviour, with the SageMaker client passed in.

One endpoint per epic: a package of an epic's group `<MODEL_PACKAGE_GROUP>-<epic slug>` (where the pipeline
registers, lambdas/epics.py) goes to the epic's endpoint `<ENDPOINT_NAME>-<epic slug>`, watched by the epic's alarms
(each of ALARM_NAMES named `<ENDPOINT_NAME>-…` becomes `<ENDPOINT_NAME>-<epic slug>-…`); a package of the group
MODEL_PACKAGE_GROUP itself goes to ENDPOINT_NAME. With EPICS (the stack's, comma-separated) only those epics' groups
are its own: another stack's names may begin with these prefixes. For an Approved package: a model named
`<endpoint>-v<version>` from the package, an endpoint config of the same name, then the endpoint is created, or
updated blue/green with automatic rollback on the alarms. With DATA_CAPTURE_URI the endpoint config captures every
request and response there (SageMaker's data capture: JSON Lines under <uri>/<endpoint>/<variant>/yyyy/mm/dd/hh/),
for the live-quality monitor to merge with ground truth. It then waits, within a bounded time, for InService and
reports; past that time SageMaker carries on and the report says so. Idempotent: a package already in service or
being deployed is a logged no-op, and an existing model or config of that name is reused; so are events for other
groups or other statuses.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, replace

from botocore.exceptions import ClientError

try:  # in the Lambda zip, modules sit at its root
    from epics import EpicError, slug_epic
except ImportError:
    from lambdas.epics import EpicError, slug_epic

log = logging.getLogger("deploy_on_approval")
log.setLevel(logging.INFO)

DETAIL_TYPE = "SageMaker Model Package State Change"
BUSY = ("Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting")
SETTLED = ("InService", "Failed", "OutOfService", "UpdateRollbackFailed")


@dataclass(frozen=True)
class DeployConfig:
    endpoint_name: str
    model_package_group: str
    execution_role_arn: str
    alarm_names: tuple[str, ...] = ()
    instance_type: str = "ml.m5.large"
    instance_count: int = 1
    variant_name: str = "AllTraffic"
    bake_seconds: int = 300
    wait_seconds: int = 840
    poll_seconds: int = 15
    data_capture_uri: str = ""  # s3://<bucket>/<prefix>/datacapture; "" = no capture
    epics: tuple[str, ...] = ()  # the stack's epics: a group of any other is not its own; () = any epic's

    @classmethod
    def from_env(cls, environ=os.environ) -> DeployConfig:
        """ENDPOINT_NAME, MODEL_PACKAGE_GROUP, EXECUTION_ROLE_ARN (required); ALARM_NAMES and EPICS
        (comma-separated), INSTANCE_TYPE, INSTANCE_COUNT, VARIANT_NAME, DATA_CAPTURE_URI, BAKE_SECONDS, WAIT_SECONDS,
        POLL_SECONDS (optional)."""
        required = ("ENDPOINT_NAME", "MODEL_PACKAGE_GROUP", "EXECUTION_ROLE_ARN")
        missing = [name for name in required if not environ.get(name)]
        if missing:
            raise RuntimeError(f"environment variables not set: {', '.join(missing)}")
        optional = {"instance_type": "INSTANCE_TYPE", "variant_name": "VARIANT_NAME",
                    "data_capture_uri": "DATA_CAPTURE_URI"}
        numbers = {"instance_count": "INSTANCE_COUNT", "bake_seconds": "BAKE_SECONDS",
                   "wait_seconds": "WAIT_SECONDS", "poll_seconds": "POLL_SECONDS"}
        return cls(
            endpoint_name=environ["ENDPOINT_NAME"],
            model_package_group=environ["MODEL_PACKAGE_GROUP"],
            execution_role_arn=environ["EXECUTION_ROLE_ARN"],
            alarm_names=tuple(name for name in environ.get("ALARM_NAMES", "").split(",") if name),
            epics=tuple(epic for epic in environ.get("EPICS", "").split(",") if epic),
            **{field: environ[name] for field, name in optional.items() if environ.get(name)},
            **{field: int(environ[name]) for field, name in numbers.items() if environ.get(name)},
        )


# The rest of livetrain classifies AWS errors in livetrain/aws_errors.py; this Lambda ships with lambdas/ and only
# the runtime's boto3, so it keeps the two checks it needs here.
def _not_found(error) -> bool:
    message = error.response.get("Error", {}).get("Message", "")
    return error.response.get("Error", {}).get("Code") == "ValidationException" and "Could not find" in message


def _already_exists(error) -> bool:
    message = error.response.get("Error", {}).get("Message", "")
    return error.response.get("Error", {}).get("Code") == "ValidationException" and "already exist" in message


def _describe(call, **kwargs) -> dict | None:
    """The description, or None when the resource does not exist."""
    try:
        return call(**kwargs)
    except ClientError as error:
        if _not_found(error):
            return None
        raise


def _create_once(describe, create, **kwargs) -> bool:
    """Create unless it exists (also when a concurrent invocation created it first); True if this call created it."""
    if describe() is not None:
        return False
    try:
        create(**kwargs)
    except ClientError as error:
        if _already_exists(error):
            return False
        raise
    return True


def _skipped(reason: str, **report) -> dict:
    log.info("no-op: %s", reason)
    return {"action": "skipped", "reason": reason, **report}


def deployment_config(config: DeployConfig) -> dict:
    """Blue/green, all traffic at once after the new fleet is up, baked for `bake_seconds` while the alarms
    are watched; any alarm rolls back to the old fleet. With no alarms (the API refuses an empty list) there is
    nothing to roll back on, and the rollback configuration is left out."""
    policy = {
        "BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": config.bake_seconds},
            "TerminationWaitInSeconds": 0,
            "MaximumExecutionTimeoutInSeconds": max(600, config.bake_seconds + 1800),
        },
    }
    if config.alarm_names:
        policy["AutoRollbackConfiguration"] = {"Alarms": [{"AlarmName": name} for name in config.alarm_names]}
    return policy


def data_capture_config(config: DeployConfig) -> dict:
    """Every request and response captured (100 %), CSV requests and JSON responses, to DATA_CAPTURE_URI."""
    return {"EnableCapture": True, "InitialSamplingPercentage": 100,
            "DestinationS3Uri": config.data_capture_uri.rstrip("/"),
            "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
            "CaptureContentTypeHeader": {"CsvContentTypes": ["text/csv"],
                                         "JsonContentTypes": ["application/json", "application/jsonlines"]}}


def _wait(sagemaker, config: DeployConfig, wait_seconds: float) -> dict:
    """Poll the endpoint until it settles or the time is up; the last description."""
    deadline = time.monotonic() + max(0.0, wait_seconds)
    while True:
        endpoint = sagemaker.describe_endpoint(EndpointName=config.endpoint_name)
        remaining = deadline - time.monotonic()
        if endpoint["EndpointStatus"] in SETTLED or remaining <= 0:
            return endpoint
        log.info("endpoint %s is %s; %.0f s left to wait", config.endpoint_name, endpoint["EndpointStatus"], remaining)
        time.sleep(min(config.poll_seconds, remaining))


def for_group(config: DeployConfig, group: str | None) -> DeployConfig | None:
    """The configuration for a package of `group`: the configured group → the configured endpoint; an epic's group
    `<group>-<slug>` → the epic's endpoint `<endpoint>-<slug>` and alarms; None for any other group, among them
    another stack's whose name begins with this one's (`<group>-dev-<slug>`: its epic is not one of `epics`)."""
    if group == config.model_package_group:
        return config
    prefix = f"{config.model_package_group}-"
    if not group or not group.startswith(prefix):
        return None
    try:
        epic = slug_epic(group[len(prefix):])
    except EpicError:
        return None
    if config.epics and epic not in config.epics:
        return None
    endpoint = f"{config.endpoint_name}-{group[len(prefix):]}"
    alarms = tuple(endpoint + name[len(config.endpoint_name):] if name.startswith(f"{config.endpoint_name}-") else name
                   for name in config.alarm_names)
    return replace(config, model_package_group=group, endpoint_name=endpoint, alarm_names=alarms)


def deploy(event: dict, sagemaker, config: DeployConfig, wait_seconds: float | None = None) -> dict:
    """Deploy the package an Approved event names to its epic's endpoint (for_group); returns a report (action,
    endpoint, config, status)."""
    detail = event.get("detail") or {}
    group, status = detail.get("ModelPackageGroupName"), detail.get("ModelApprovalStatus")
    if event.get("detail-type") != DETAIL_TYPE:
        return _skipped(f"not a {DETAIL_TYPE} event: {event.get('detail-type')!r}")
    epic_config = for_group(config, group)
    if epic_config is None:
        return _skipped(f"package of group {group!r}, not {config.model_package_group!r} or an epic's group of it")
    config = epic_config
    if status != "Approved":
        return _skipped(f"package {detail.get('ModelPackageArn')} is {status}, not Approved")

    package_arn = detail.get("ModelPackageArn") or next(iter(event.get("resources") or []), None)
    if not package_arn:
        return _skipped("the event names no model package")
    package = sagemaker.describe_model_package(ModelPackageName=package_arn)
    if package["ModelApprovalStatus"] != "Approved":
        return _skipped(f"package {package_arn} is now {package['ModelApprovalStatus']} (stale event)")
    name = f"{config.endpoint_name}-v{package['ModelPackageVersion']}"
    report = {"endpoint": config.endpoint_name, "endpoint_config": name, "model_package": package_arn}

    endpoint = _describe(sagemaker.describe_endpoint, EndpointName=config.endpoint_name)
    if endpoint is not None:
        pending = (endpoint.get("PendingDeploymentSummary") or {}).get("EndpointConfigName")
        if name in (endpoint.get("EndpointConfigName"), pending):
            return _skipped(f"{name} is already {'being deployed' if pending == name else 'in service'}",
                            status=endpoint["EndpointStatus"], **report)
        if endpoint["EndpointStatus"] in BUSY:
            raise RuntimeError(f"endpoint {config.endpoint_name} is {endpoint['EndpointStatus']}; retry later")
        if endpoint["EndpointStatus"] != "InService":
            raise RuntimeError(f"endpoint {config.endpoint_name} is {endpoint['EndpointStatus']} "
                               f"({endpoint.get('FailureReason', 'no reason given')}): delete it, then approve again")

    if _create_once(lambda: _describe(sagemaker.describe_model, ModelName=name), sagemaker.create_model,
                    ModelName=name, ExecutionRoleArn=config.execution_role_arn,
                    PrimaryContainer={"ModelPackageName": package_arn}):
        log.info("created model %s from %s", name, package_arn)
    capture = {"DataCaptureConfig": data_capture_config(config)} if config.data_capture_uri else {}
    if _create_once(lambda: _describe(sagemaker.describe_endpoint_config, EndpointConfigName=name),
                    sagemaker.create_endpoint_config, EndpointConfigName=name, ProductionVariants=[{
                        "VariantName": config.variant_name, "ModelName": name,
                        "InitialInstanceCount": config.instance_count, "InstanceType": config.instance_type,
                        "InitialVariantWeight": 1.0}], **capture):
        log.info("created endpoint config %s", name)

    if endpoint is None:
        sagemaker.create_endpoint(EndpointName=config.endpoint_name, EndpointConfigName=name)
        action = "created"
    else:
        sagemaker.update_endpoint(EndpointName=config.endpoint_name, EndpointConfigName=name,
                                  DeploymentConfig=deployment_config(config))
        action = "updated"
    log.info("%s endpoint %s with %s", action, config.endpoint_name, name)

    final = _wait(sagemaker, config, config.wait_seconds if wait_seconds is None else wait_seconds)
    report.update(action=action, status=final["EndpointStatus"])
    if final["EndpointStatus"] == "Failed":
        raise RuntimeError(f"endpoint {config.endpoint_name} failed: {final.get('FailureReason', 'no reason given')}")
    if final["EndpointStatus"] not in SETTLED:
        log.info("handing off: endpoint %s is still %s; SageMaker carries on", config.endpoint_name,
                 final["EndpointStatus"])
    elif final.get("EndpointConfigName") != name:
        report["status"] = "RolledBack"
        log.error("endpoint %s rolled back to %s: an alarm fired during the deployment of %s",
                  config.endpoint_name, final.get("EndpointConfigName"), name)
    log.info("report: %s", report)
    return report


def handler(event, context):
    """Lambda entry point: configuration from the environment, waiting at most until 30 s before the timeout."""
    import boto3

    config = DeployConfig.from_env()
    wait_seconds = config.wait_seconds
    if context is not None:
        wait_seconds = min(wait_seconds, context.get_remaining_time_in_millis() / 1000 - 30)
    return deploy(event, boto3.client("sagemaker"), config, wait_seconds=wait_seconds)
