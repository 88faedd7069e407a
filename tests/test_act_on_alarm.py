"""The live-lift alarm acted on, end to end over moto's HTTP server: the monitor's metric in CloudWatch, the local
alarm evaluator, the template's rule through the local dispatcher, the act-on-alarm Lambda's code against moto's
S3 and SageMaker (endpoint serving v2, v1 approved before it), then the streamer's exporter answering the export
request and the manifest rule starting the retraining run. The monitor's outputs are written directly: the claim
is about the action, not the monitor (tests/test_monitor.py covers that)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from test_local_alarms import publish
from test_streamer_store import EPIC, SETTINGS, stream

from infra.local.alarms import evaluate_alarms, state_change_event
from infra.local.dispatcher import Dispatcher, LocalRule, start_pipeline
from infra.local.services import wait_until
from infra.rules import alarm_rule_pattern, live_lift_alarm, manifest_rule_pattern
from lambdas.act_on_alarm import ActionConfig, act, action_records, compare, latest_figures
from lambdas.deploy_on_approval import DETAIL_TYPE, DeployConfig, deploy
from lambdas.epics import epic_name, export_requests_prefix
from pipelines.local.report import render_report
from processing.batch_contract import MANIFEST_FILE
from streamer.exporter import Exporter
from streamer.market import MarketSettings, MarketSimulator
from streamer.sources import frame_ticks
from streamer.store import Store

BUCKET, PREFIX = "data", "lt"
CONFIG = ActionConfig(BUCKET, PREFIX, DeployConfig("lt", "models", "arn:aws:iam::123456789012:role/model",
                                                   wait_seconds=5, poll_seconds=1))  # the template's: prefixes
ENDPOINT, GROUP = epic_name("lt", EPIC), epic_name("models", EPIC)  # the epic's, where its alarm acts
OTHER = "CS.D.ETHUSD.CFD.IP"
NOW = datetime.now(UTC).replace(microsecond=0)
DAYS = [(NOW - timedelta(days=k)).strftime("%Y-%m-%dT00:00:00+00:00") for k in (2, 1)]


@pytest.fixture
def world(aws):
    """moto with the data bucket, the live-lift alarm, and the endpoint serving v2 after v1 (both approved)."""
    s3, sagemaker, cloudwatch = aws.client("s3"), aws.client("sagemaker"), aws.client("cloudwatch")
    s3.create_bucket(Bucket=BUCKET)
    s3.put_bucket_notification_configuration(Bucket=BUCKET, NotificationConfiguration={"EventBridgeConfiguration": {}})
    serve_two_versions(sagemaker, cloudwatch, EPIC)
    return s3, sagemaker, cloudwatch, aws.client("events")


def serve_two_versions(sagemaker, cloudwatch, epic: str) -> None:
    """The epic's live-lift alarm, and its endpoint serving v2 after v1, both approved (the deploy Lambda's code)."""
    cloudwatch.put_metric_alarm(**live_lift_alarm("lt", epic))
    group = epic_name("models", epic)
    sagemaker.create_model_package_group(ModelPackageGroupName=group)
    for _ in (1, 2):
        arn = sagemaker.create_model_package(
            ModelPackageGroupName=group, ModelApprovalStatus="Approved", InferenceSpecification={
                "Containers": [{"Image": "linear-learner:1", "ModelDataUrl": "s3://data/model.tar.gz"}],
                "SupportedContentTypes": ["text/csv"], "SupportedResponseMIMETypes": ["application/json"]},
        )["ModelPackageArn"]
        deploy({"detail-type": DETAIL_TYPE, "detail": {"ModelPackageGroupName": group, "ModelApprovalStatus":
                "Approved", "ModelPackageArn": arn}}, sagemaker, CONFIG.deploy, wait_seconds=5)
    assert serving(sagemaker, epic_name("lt", epic)) == f"{epic_name('lt', epic)}-v2"


def serving(sagemaker, endpoint: str = ENDPOINT) -> str:
    return sagemaker.describe_endpoint(EndpointName=endpoint)["EndpointConfigName"]


def lift(value: float, half_width: float = 0.02) -> dict:
    return {"value": value, "lower": value - half_width, "upper": value + half_width}


def write_figures(s3, lifts: dict[str, list[float]], endpoint: str = ENDPOINT) -> None:
    """A monitoring run's live_quality.json on `endpoint`: per version, its lift in each of the two days (None: not
    measured)."""
    windows = [{"model_version": version, "start": day, "trades": 500, "status": "judged", "lift": lift(value)}
               for version, values in lifts.items() for day, value in zip(DAYS, values, strict=True)
               if value is not None]
    s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}/monitoring/{endpoint}/2026-12-04T12-00-00Z-x/live_quality.json",
                  Body=json.dumps({"windows": windows}).encode())


def wire(s3, sagemaker, events, sqs, tmp_path) -> tuple[Dispatcher, list[dict]]:
    """The template's alarm rule in moto, its target the Lambda's code (as the local stack wires it)."""
    reports = []
    dispatcher = Dispatcher(events, sqs, tmp_path)
    dispatcher.add_rule(LocalRule("live-lift-alarm", alarm_rule_pattern("lt"),
                                  lambda event: reports.append(act(event, s3, sagemaker, CONFIG, wait_seconds=5))))
    return dispatcher, reports


def export_requests(s3) -> list[str]:
    listing = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}/export-requests/")
    return [item["Key"] for item in listing.get("Contents", [])]


def streamed(mongo_db) -> Store:
    """A streamer's store after 1,000 simulated ticks: closed trades, far fewer than a batch, none exported."""
    stream(mongo_db, list(frame_ticks(MarketSimulator(MarketSettings(), 7, EPIC).ticks(1000)))).store.flush()
    return Store(mongo_db, EPIC)


def test_a_decaying_model_is_retrained_and_rolled_back_once(world, aws, tmp_path, mongo_db):
    s3, sagemaker, cloudwatch, events = world
    dispatcher, reports = wire(s3, sagemaker, events, aws.client("sqs"), tmp_path)
    # the pipeline and the manifest rule, its target as the local stack applies it (moto records the run)
    sagemaker.create_pipeline(PipelineName=PREFIX, RoleArn=CONFIG.deploy.execution_role_arn,
                              PipelineDefinition=json.dumps({"Version": "2020-12-01", "Steps": []}))
    dispatcher.add_rule(LocalRule("batch-landed", manifest_rule_pattern(BUCKET),
                                  lambda event: start_pipeline(sagemaker, PREFIX, event)))
    write_figures(s3, {"1": [0.10, 0.08], "2": [-0.05, -0.06]})  # the windows where both served
    publish(cloudwatch, -0.07, -0.08, now=NOW, endpoint=ENDPOINT)

    [change] = evaluate_alarms(cloudwatch, events)
    assert dispatcher.poll_once(wait_seconds=1) == 1

    [report] = reports
    assert report["state"] == "done" and report["retrain"]["action"] == "requested"
    assert export_requests(s3) == [report["retrain"]["request"]]
    assert report["rollback"]["action"] == "rolled back" and serving(sagemaker) == f"{ENDPOINT}-v1"
    versions = {p["ModelPackageVersion"]: p["ModelApprovalStatus"]
                for p in sagemaker.list_model_packages(ModelPackageGroupName=GROUP)["ModelPackageSummaryList"]}
    assert versions == {1: "Approved", 2: "Rejected"}
    assert "v1 measured better than v2 on 2 common window(s)" in report["rollback_plan"]["reason"]
    recorded = json.loads(s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}/alarm-actions/{report['id']}.json")["Body"]
                          .read())
    assert recorded == report  # the action's report, where anyone can read it

    # the same alarm delivered twice acts once: redelivered to the rule, and handed to the Lambda again
    queue = aws.client("sqs").get_queue_url(QueueName="live-lift-alarm-tap")["QueueUrl"]
    aws.client("sqs").send_message(QueueUrl=queue, MessageBody=json.dumps(
        {"id": "redelivered", "detail-type": change["DetailType"], "source": change["Source"],
         "detail": json.loads(change["Detail"])}))
    assert dispatcher.poll_once(wait_seconds=1) == 1
    assert reports[-1]["action"] == "skipped" and reports[-1]["reason"] == "already acted on this alarm state change"
    assert export_requests(s3) == [report["retrain"]["request"]] and serving(sagemaker) == f"{ENDPOINT}-v1"

    # the streamer answers the request with the trades collected since the last batch; its manifest starts the run
    store = streamed(mongo_db)

    def exporter(store=store) -> Exporter:  # a new one each time, as after a restart (it looks for requests at once)
        return Exporter(store, s3, BUCKET, 100_000, SETTINGS.as_dict(),
                        requests_prefix=export_requests_prefix(PREFIX, store.epic))

    assert export_requests(s3) == [f"{PREFIX}/export-requests/{EPIC}/{report['id']}.json"]
    assert exporter(Store(mongo_db, "CS.D.OTHER.IP"))._pending_request() is None  # another epic's lane: not its
    assert exporter()._pending_request() == report["id"]
    assert exporter()._step()
    assert not exporter()._step()  # answered (MongoDB records it): the same request never makes a second batch
    wait_until(lambda: dispatcher.poll_once(wait_seconds=1), 20, "the requested batch's manifest event")
    [run] = sagemaker.list_pipeline_executions(PipelineName=PREFIX)["PipelineExecutionSummaries"]
    parameters = sagemaker.list_pipeline_parameters_for_execution(PipelineExecutionArn=run["PipelineExecutionArn"])
    [batch] = mongo_db.batches.find()
    assert batch["request"] == report["id"] and batch["state"] == "committed"
    assert 0 < batch["trades"] == mongo_db.trades.count_documents({"open_ts": {"$lte": batch["last_open_ts"]}})
    assert {"Name": "InputManifestKey", "Value": f"batches/{EPIC}/{batch['batch_id']}/{MANIFEST_FILE}"} in \
        parameters["PipelineParameters"]

    # visible in the report: the live-quality panel and what the alarm did
    record = {"PipelineExecutionId": "e1", "PipelineName": PREFIX, "PipelineExecutionArn": run["PipelineExecutionArn"],
              "PipelineExecutionStatus": "Executing", "StartTime": "", "Parameters": {}, "Steps": {}}
    page = render_report(record, tmp_path / "report", latest_figures(s3, BUCKET, PREFIX, ENDPOINT),
                         tuple(action_records(s3, BUCKET, PREFIX))).read_text()
    assert (tmp_path / "report" / "live_lift.png").read_bytes().startswith(b"\x89PNG")
    assert "Live quality of the models in service" in page and "<td>v2</td>" in page
    assert f"requested: {report['retrain']['request']}" in page and "rolled back: " + report["rollback"]["to"] in page
    assert "v1 measured better than v2" in page


def test_a_healthy_model_triggers_nothing(world, aws, tmp_path):
    s3, sagemaker, cloudwatch, events = world
    dispatcher, reports = wire(s3, sagemaker, events, aws.client("sqs"), tmp_path)
    write_figures(s3, {"1": [0.10, 0.08], "2": [0.12, 0.11]})
    publish(cloudwatch, 0.03, -0.01, now=NOW, endpoint=ENDPOINT)  # one window's bound below 0 is not two

    assert evaluate_alarms(cloudwatch, events) == []
    assert dispatcher.poll_once(wait_seconds=1) == 0 and reports == []
    assert export_requests(s3) == [] and serving(sagemaker) == f"{ENDPOINT}-v2"


def test_the_previous_version_is_judged_on_its_shadow_figures_and_without_any_not_rolled_back_to(world):
    s3, sagemaker, cloudwatch, _ = world
    write_figures(s3, {"1": [None, None], "2": [-0.05, -0.06]})
    event = alarm_event(cloudwatch, ENDPOINT)

    report = act(event, s3, sagemaker, CONFIG, wait_seconds=5)

    assert report["retrain"]["action"] == "requested" and serving(sagemaker) == f"{ENDPOINT}-v2"
    assert report["rollback"]["action"] == "skipped" and report["rollback"]["reason"].startswith("not enough data")

    # the next alarm, after a monitoring run that shadow-scored v1 on v2's requests (infra/local/monitoring.py)
    write_figures(s3, {"1-shadow": [0.10, 0.08], "2": [-0.05, -0.06]})
    event["detail"]["state"]["timestamp"] = "2026-12-06T12:00:00.000+0000"
    report = act(event, s3, sagemaker, CONFIG, wait_seconds=5)
    assert report["rollback"]["action"] == "rolled back" and serving(sagemaker) == f"{ENDPOINT}-v1"
    assert report["rollback_plan"]["reason"].startswith("v1-shadow measured better than v2")


def alarm_event(cloudwatch, endpoint: str, alarm_name: str | None = None) -> dict:
    """The endpoint's live-lift alarm going into ALARM, as EventBridge delivers it (`alarm_name`: named otherwise)."""
    alarm = cloudwatch.describe_alarms(AlarmNames=[f"{endpoint}-live-lift"])["MetricAlarms"][0]
    entry = state_change_event({**alarm, "AlarmName": alarm_name or alarm["AlarmName"]}, "ALARM", "test", {}, NOW)
    return {"id": "e1", "detail-type": entry["DetailType"], "source": entry["Source"],
            "detail": json.loads(entry["Detail"])}


def test_each_epics_alarm_acts_on_that_epic_alone(world):
    """Two epics, each endpoint serving v2 after v1, each with its monitor's figures: v1 measured better on the
    first's, not on the other's. Each alarm asks its own epic's lane for a batch and judges its own endpoint."""
    s3, sagemaker, cloudwatch, _ = world
    serve_two_versions(sagemaker, cloudwatch, OTHER)
    other = epic_name("lt", OTHER)
    write_figures(s3, {"1": [0.10, 0.08], "2": [-0.05, -0.06]})
    write_figures(s3, {"1": [0.01, 0.00], "2": [0.02, 0.03]}, endpoint=other)

    report = act(alarm_event(cloudwatch, other), s3, sagemaker, CONFIG, wait_seconds=5)
    assert report["retrain"]["request"] == f"{PREFIX}/export-requests/{OTHER}/{report['id']}.json"
    assert report["rollback"]["action"] == "skipped" and "v1 did not measure better" in report["rollback"]["reason"]
    assert serving(sagemaker) == f"{ENDPOINT}-v2" and serving(sagemaker, other) == f"{other}-v2"

    report = act(alarm_event(cloudwatch, ENDPOINT), s3, sagemaker, CONFIG, wait_seconds=5)
    assert report["retrain"]["request"] == f"{PREFIX}/export-requests/{EPIC}/{report['id']}.json"
    assert report["rollback"]["action"] == "rolled back"
    assert serving(sagemaker) == f"{ENDPOINT}-v1" and serving(sagemaker, other) == f"{other}-v2"
    rejected = [group for group in (GROUP, epic_name("models", OTHER))
                for p in sagemaker.list_model_packages(ModelPackageGroupName=group)["ModelPackageSummaryList"]
                if p["ModelApprovalStatus"] == "Rejected"]
    assert rejected == [GROUP]

    # not an epic's live-lift alarm of this stack: another alarm, names no epic makes, another stack's (lt-dev-…:
    # its names begin with this stack's; the stack's epics, EPICS, leave it out)
    stack = replace(CONFIG, deploy=replace(CONFIG.deploy, epics=(EPIC, OTHER)))
    for name in (f"{ENDPOINT}-invocation-5xx", "lt-x--y-live-lift", "other-CS-D-ETHUSD-CFD-IP-live-lift",
                 "lt-dev-CS-D-ETHUSD-CFD-IP-live-lift"):
        assert act(alarm_event(cloudwatch, ENDPOINT, name), s3, sagemaker, stack) == {
            "action": "skipped", "reason": "not an epic's live-lift alarm"}, name


def test_the_previous_version_must_measure_better_in_every_common_window_and_clearly_in_one():
    figures = {"windows": [{"model_version": v, "start": day, "lift": lift(value)}
                           for v, values in {"1": [0.05, 0.03], "2": [0.04, 0.01]}.items()
                           for day, value in zip(DAYS, values, strict=True)]}
    assert compare(figures, current="2", previous="1")[0] is False  # higher, but within each other's intervals
    figures["windows"][1]["lift"] = lift(0.09)
    assert compare(figures, current="2", previous="1")[0] is True
    figures["windows"][0]["lift"] = lift(0.03)
    assert compare(figures, current="2", previous="1")[0] is False  # lower in one window


def test_the_local_monitoring_run_shadow_scores_the_previous_approved_package(world, tmp_path):
    """Before each monitoring run the local stack puts the previous approved package's answers to the requests the
    version in service answered beside the capture and the ground truth, as version "1-shadow"."""
    from test_monitor import write_traffic

    from infra.local.monitoring import MonitorSettings, upload_shadow_scores
    from pipelines.local.algorithms.linear_learner.model import LinearLearnerModel, save_model
    from processing.monitor import monitor, read_captures, read_ground_truth

    s3, sagemaker, _, _ = world
    save_model(LinearLearnerModel(weights=np.ones(3), bias=-6.0, mean=np.zeros(3), scale=np.ones(3), threshold=0.5,
                                  hyperparameters={}), tmp_path / "model.tar.gz")
    s3.upload_file(str(tmp_path / "model.tar.gz"), BUCKET, "model.tar.gz")  # both packages' ModelDataUrl
    write_traffic(tmp_path / "traffic", "2", skill=-0.2, trades=1500, seed=6)  # v2's requests and their outcomes
    for path in (tmp_path / "traffic").rglob("*.jsonl"):
        key = path.relative_to(tmp_path / "traffic").as_posix()
        key = key.replace("capture/livetrain/", f"datacapture/{ENDPOINT}/")
        s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}/{key}", Body=path.read_bytes())
    settings = MonitorSettings(BUCKET, PREFIX, ENDPOINT, GROUP, min_windows=10)

    assert upload_shadow_scores(s3, sagemaker, settings) == 1500
    for uri, local in ((settings.capture_uri(), "capture"), (settings.ground_truth_uri(), "groundtruth")):
        bucket, prefix = uri.removeprefix("s3://").split("/", 1)
        for entry in s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]:  # what the monitor's job reads
            path = tmp_path / "inputs" / local / entry["Key"][len(prefix):]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(s3.get_object(Bucket=bucket, Key=entry["Key"])["Body"].read())
    quality = monitor(read_captures(tmp_path / "inputs" / "capture"),
                      read_ground_truth(tmp_path / "inputs" / "groundtruth"), window_hours=24,
                      dependence_seconds=1500, min_windows=10)

    by_version = {w["model_version"]: w for w in quality["windows"]}
    assert set(by_version) == {"2", "1-shadow"} and by_version["1-shadow"]["start"] == by_version["2"]["start"]
    assert by_version["1-shadow"]["trades"] == by_version["2"]["trades"] == 1500
