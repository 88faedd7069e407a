"""The local stack: the template's rules in moto, one run per event, a new model served only after approval."""

import json
import urllib.error
import urllib.request
from dataclasses import asdict, replace
from datetime import UTC, datetime

import pytest

from infra.local.alarms import state_change_event
from infra.local.console import background_console
from infra.local.services import wait_until
from infra.local.stack import LocalStack
from infra.rules import alarm_rule_pattern, approval_rule_pattern, live_lift_alarm, manifest_rule_pattern
from livetrain.config import Config
from pipelines.local.submissions import Submissions
from processing.batch_contract import upload_batch_dir

pytestmark = pytest.mark.slow
CONFIG = Config()
# Enough market time for a verdict. This test is about approval and serving, not the gate: how often a planted
# signal registers is bench_gate's figure (18 of 20 seeds); seed 0 is the first.
PLANTED = {"trades": 10_000, "market": "planted-signal"}


@pytest.fixture
def stack(tmp_path):
    with LocalStack(CONFIG, tmp_path / "state", log=lambda line: None) as stack:
        stack.provision()
        stack.run_in_background()
        yield stack


@pytest.fixture
def console(stack):
    """The console over the stack's SageMaker API, as `local up` serves it."""
    with background_console(CONFIG, stack.moto.url, stack.state_dir) as served:
        yield served


def finished_runs(stack, count: int, timeout: float = 300) -> list[dict]:
    wait_until(lambda: len(stack.executions) >= count, timeout, f"{count} pipeline runs")
    return [execution.result(timeout) for execution in stack.executions[:count]]


def queue_is_empty(stack, name: str) -> bool:
    sqs = stack.client("sqs")
    attributes = sqs.get_queue_attributes(QueueUrl=sqs.get_queue_url(QueueName=name)["QueueUrl"], AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return attributes["ApproximateNumberOfMessages"] == attributes["ApproximateNumberOfMessagesNotVisible"] == "0"


def test_the_local_rules_are_the_templates(stack):
    events = stack.client("events")
    rules = {rule["Name"]: json.loads(rule["EventPattern"]) for rule in events.list_rules()["Rules"]}
    alarm = live_lift_alarm(CONFIG.endpoint_name, CONFIG.epic)
    assert alarm["Dimensions"] == [{"Name": "Endpoint", "Value": stack.endpoint_name()}]
    assert rules == {f"{CONFIG.pipeline_name}-batch-landed": manifest_rule_pattern(CONFIG.bucket),
                     f"{CONFIG.pipeline_name}-package-approved": approval_rule_pattern(CONFIG.model_package_group),
                     f"{CONFIG.pipeline_name}-live-lift-alarm": alarm_rule_pattern(CONFIG.endpoint_name)}
    [provisioned] = stack.client("cloudwatch").describe_alarms()["MetricAlarms"]
    assert {key: provisioned[key] for key in alarm} == alarm
    # the alarm's rule reaches the act-on-alarm Lambda's code, configured as the template configures it
    stack.client("events").put_events(Entries=[state_change_event(provisioned, "ALARM", "test", {}, datetime.now(UTC))])
    wait_until(lambda: stack.alarm_actions, 30, "the live-lift alarm's action")
    [report] = stack.alarm_actions
    assert report["retrain"]["request"].startswith(f"{CONFIG.pipeline_name}/export-requests/{CONFIG.epic}/")
    assert report["rollback"] == {"action": "skipped", "reason": f"endpoint {stack.endpoint_name()} does not exist"}


def test_the_same_event_twice_starts_one_run(stack):
    sqs, events = stack.client("sqs"), stack.client("events")
    observer = sqs.create_queue(QueueName="observer")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=observer, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_targets(Rule=f"{CONFIG.pipeline_name}-batch-landed", Targets=[{"Id": "observer", "Arn": arn}])

    stack.client("s3").put_object(Bucket=CONFIG.bucket, Key="batches/E/missing/batch.manifest", Body=b"[]")
    (record,) = finished_runs(stack, 1)
    assert record["Parameters"]["InputManifestKey"] == "batches/E/missing/batch.manifest"
    event = sqs.receive_message(QueueUrl=observer, WaitTimeSeconds=5)["Messages"][0]["Body"]

    tap = sqs.get_queue_url(QueueName=f"{CONFIG.pipeline_name}-batch-landed-tap")["QueueUrl"]
    sqs.send_message(QueueUrl=tap, MessageBody=event)  # EventBridge delivers at least once
    wait_until(lambda: queue_is_empty(stack, f"{CONFIG.pipeline_name}-batch-landed-tap"), 30,
               "the redelivered event to be consumed")
    stack.check()
    assert len(stack.executions) == 1


def test_a_run_started_through_the_sagemaker_api_runs_in_the_engine(stack, run_cli, monkeypatch):
    """The SDK's own Pipeline object (AWS_ENDPOINT_URL exported, as `demo` suggests) starts a run (on a batch that
    is not there) and waits for it; the execution, its steps, its failed job and the failure reason answer through
    the SageMaker API and `livetrain pipeline executions`; a retry runs it again."""
    from botocore.exceptions import WaiterError

    from pipelines.definition import build_pipeline

    for name, value in stack.environment().items():
        monkeypatch.setenv(name, value)
    pipeline = build_pipeline(**asdict(stack.pipeline_settings()))
    execution = pipeline.start(parameters={"InputBucket": CONFIG.bucket,
                                           "InputManifestKey": "batches/E/none/batch.manifest"},
                               execution_display_name="by-hand")
    with pytest.raises(WaiterError, match="Failed"):
        execution.wait(delay=1, max_attempts=120)
    arn, sagemaker = execution.arn, stack.client("sagemaker")
    described = sagemaker.describe_pipeline_execution(PipelineExecutionArn=arn)
    assert described["PipelineExecutionStatus"] == "Failed"
    assert described["PipelineExecutionDisplayName"] == "by-hand"
    (failed,) = [step for step in execution.list_steps() if step["StepStatus"] == "Failed"]
    assert failed["FailureReason"] in described["FailureReason"]
    job = failed["Metadata"]["ProcessingJob"]["Arn"].rsplit("/", 1)[-1]
    assert job.endswith(arn.rsplit("/", 1)[-1])
    processing = sagemaker.describe_processing_job(ProcessingJobName=job)
    assert (processing["ProcessingJobStatus"], processing["FailureReason"]) == ("Failed", failed["FailureReason"])
    (summary,) = sagemaker.list_pipeline_executions(PipelineName=CONFIG.pipeline_name)["PipelineExecutionSummaries"]
    assert summary["PipelineExecutionArn"] == arn
    assert json.loads(sagemaker.describe_pipeline_definition_for_execution(PipelineExecutionArn=arn)[
        "PipelineDefinition"]) == json.loads(pipeline.definition())  # the definition the run started with
    result = run_cli("pipeline", "executions", "--endpoint-url", stack.moto.url, env=stack.environment())
    assert result.returncode == 0, result.stderr
    assert arn.rsplit("/", 1)[-1] in result.stdout and "Failed" in result.stdout

    sagemaker.retry_pipeline_execution(PipelineExecutionArn=arn)  # the batch is still missing: it fails again
    assert sagemaker.describe_pipeline_execution(PipelineExecutionArn=arn)["PipelineExecutionStatus"] == "Executing"
    wait_until(lambda: sagemaker.describe_pipeline_execution(PipelineExecutionArn=arn)["PipelineExecutionStatus"]
               == "Failed", 120, "the retried run to fail again")
    (again,) = [step for step in execution.list_steps() if step["StepStatus"] == "Failed"]
    assert again["StepName"] == failed["StepName"] and again["StartTime"] > failed["StartTime"]


def register_another_model_of_the_tuning_job(stack, execution_arn: str, registered_arn: str) -> str:
    """A new package in the group: the registered one's inference spec with the model of another training job
    of the run's tuning job (found through the SageMaker API, as a user would). Returns its ARN."""
    sagemaker = stack.client("sagemaker")
    (tuning,) = [step["Metadata"]["TuningJob"]["Arn"] for step in sagemaker.list_pipeline_execution_steps(
        PipelineExecutionArn=execution_arn)["PipelineExecutionSteps"] if "TuningJob" in step.get("Metadata", {})]
    registered = sagemaker.describe_model_package(ModelPackageName=registered_arn)
    container = registered["InferenceSpecification"]["Containers"][0]
    others = [job["TrainingJobName"] for job in sagemaker.list_training_jobs_for_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=tuning.rsplit("/", 1)[1])["TrainingJobSummaries"]]
    jobs = [sagemaker.describe_training_job(TrainingJobName=name) for name in others]
    artefacts = {job["ModelArtifacts"]["S3ModelArtifacts"] for job in jobs if job["TrainingJobStatus"] == "Completed"}
    artefacts -= {container["ModelDataUrl"]}
    spec = {**registered["InferenceSpecification"], "Containers": [{**container, "ModelDataUrl": min(artefacts)}]}
    return sagemaker.create_model_package(ModelPackageGroupName=stack.model_package_group(),
                                          InferenceSpecification=spec,
                                          ModelApprovalStatus="PendingManualApproval")["ModelPackageArn"]


def test_a_new_package_replaces_the_served_model_only_after_approval(stack, make_batch, console, browser_page):
    """The run is watched finishing in the console, in a real browser, where v2 is then approved."""
    from playwright.sync_api import expect

    s3, sagemaker, runtime = stack.client("s3"), stack.client("sagemaker"), stack.client("sagemaker-runtime")

    upload_batch_dir(s3, CONFIG.bucket, make_batch(seed=0, **PLANTED))
    wait_until(lambda: stack.executions, 60, "the run to start")
    page = browser_page
    page.goto(console.url)  # watch the run finish on its page: its steps refresh while it executes
    page.locator("#executions a").first.click()
    expect(page.locator("#execution-status")).to_have_text("Succeeded", timeout=300_000)
    expect(page.locator("#steps")).to_contain_text("RegisterBestModel")
    page.reload()  # its evaluation, with intervals, from evaluation.json
    expect(page.locator("table.metrics")).to_contain_text("precision_at_target_recall")
    page.wait_for_function("document.getElementById('dag').complete")  # the run's DAG, drawn from the API
    assert page.evaluate("document.getElementById('dag').naturalWidth") > 500
    for plot in ("tuning", "verdict", "confusion"):  # the report's plots, drawn from the same API answers
        page.wait_for_function(f"document.getElementById('plot-{plot}').complete")
        assert page.evaluate(f"document.getElementById('plot-{plot}').naturalWidth") > 300, plot
    run_page = page.url
    page.locator("tr", has_text="Preprocess").locator("a.logs").click()  # what the step's script printed
    expect(page.locator("pre.log")).to_contain_text("trades: train")
    page.goto(run_page)
    page.locator("tr", has=page.locator("td", has_text="TuneLinearLearner")).locator("a.logs").click()
    (first,) = finished_runs(stack, 1)
    training_jobs = first["Steps"]["TuneLinearLearner"]["Properties"]["TrainingJobSummaries"]
    for job in training_jobs:  # the tuning step's log, then each training job's
        expect(page.locator("h3", has_text=job["TrainingJobName"])).to_have_count(1)
    assert page.locator("pre.log").count() == len(training_jobs) + 1
    not_run = urllib.request.urlopen(f"{run_page}/steps/PrecisionTooLow/logs", timeout=30).read().decode()
    assert "This step has not run: no logs." in not_run
    with pytest.raises(urllib.error.HTTPError, match="404"):
        urllib.request.urlopen(f"{run_page}/steps/NoSuchStep/logs", timeout=30)
    assert first["PipelineExecutionStatus"] == "Succeeded", first["FailureReason"]
    (v1,) = sagemaker.list_model_packages(ModelPackageGroupName=stack.model_package_group())["ModelPackageSummaryList"]
    stack.approve(v1["ModelPackageArn"])
    assert stack.wait_for_endpoint(v1["ModelPackageArn"])["EndpointConfigName"] == f"{stack.endpoint_name()}-v1"
    body = b"\n".join((",".join(["1.5"] * 605)).encode() for _ in range(3))

    def scores():
        response = runtime.invoke_endpoint(EndpointName=stack.endpoint_name(), ContentType="text/csv",
                                           Accept="application/json", Body=body)
        return [p["score"] for p in json.loads(response["Body"].read())["predictions"]]

    served_by_v1 = scores()

    # v2: another model of the same tuning job, registered as a pipeline run would (pending approval). A second
    # 10,000-trade run would prove nothing more here: how often a run registers is bench_gate's figure.
    v2 = register_another_model_of_the_tuning_job(stack, first["PipelineExecutionArn"], v1["ModelPackageArn"])
    packages = sagemaker.list_model_packages(ModelPackageGroupName=stack.model_package_group(),
                                             SortBy="CreationTime", SortOrder="Descending")["ModelPackageSummaryList"]
    assert [(p["ModelPackageArn"], p["ModelApprovalStatus"]) for p in packages] == [
        (v2, "PendingManualApproval"), (v1["ModelPackageArn"], "Approved")]
    wait_until(lambda: queue_is_empty(stack, f"{CONFIG.pipeline_name}-package-approved-tap"), 30,
               "the approval rule's tap to be drained")
    assert sagemaker.describe_endpoint(EndpointName=stack.endpoint_name())["EndpointConfigName"] == \
        f"{stack.endpoint_name()}-v1"
    assert scores() == served_by_v1
    assert [d["action"] for d in stack.deployments] == ["created"]

    page.goto(console.url)  # approve v2 in the console, as a reviewer would; see the endpoint switch to it
    expect(page.locator("#serving-version")).to_have_text("1")
    version_2 = page.locator("#package-2")
    version_2.get_by_label("comment for version 2").fill("another model of the same tuning job")
    version_2.get_by_role("button", name="Approve").click()
    expect(version_2).to_contain_text("Approved")
    expect(version_2).to_contain_text("another model of the same tuning job")
    expect(page.locator("#serving-version")).to_have_text("2", timeout=60_000)
    assert sagemaker.describe_model_package(ModelPackageName=v2)["ApprovalDescription"] == \
        "another model of the same tuning job"
    assert stack.wait_for_endpoint(v2)["EndpointConfigName"] == f"{stack.endpoint_name()}-v2"
    assert [d["action"] for d in stack.deployments] == ["created", "updated"]
    wait_until(lambda: scores() != served_by_v1, 10, "the endpoint server to load the new model")


def test_the_monitoring_pipeline_runs_on_the_stacks_timer_for_each_epic_and_publishes_to_cloudwatch(tmp_path):
    """The timer starts `<pipeline>-monitor` through the SageMaker API on each configured epic's endpoint, as the
    template's schedule rules do on AWS: its processing step measures the captured traffic, its Lambda step
    publishes the figures, and the endpoint's live-lift alarm watches them. Two epics, traffic on the second's."""
    from test_monitor import write_traffic

    from lambdas.act_on_alarm import latest_figures
    from pipelines.contract import monitor_pipeline_name

    config = replace(CONFIG, epic=f"{CONFIG.epic},CS.D.ETHUSD.CFD.IP")
    with LocalStack(config, tmp_path / "state", log=lambda line: None, monitor_every_s=0.5) as stack:
        stack.provision()
        endpoint = stack.endpoint_name("CS.D.ETHUSD.CFD.IP")
        write_traffic(tmp_path / "traffic", "1", skill=-0.2, trades=2000, seed=5)
        s3 = stack.client("s3")
        for path in (tmp_path / "traffic").rglob("*.jsonl"):
            relative = path.relative_to(tmp_path / "traffic").as_posix().replace(
                "capture/livetrain/", f"datacapture/{endpoint}/", 1)
            s3.put_object(Bucket=CONFIG.bucket, Key=f"{CONFIG.pipeline_name}/{relative}", Body=path.read_bytes())
        wait_until(lambda: stack.live_quality and stack.live_quality[-1]["windows"], 60, "a monitoring run")
        cloudwatch, sagemaker = stack.client("cloudwatch"), stack.client("sagemaker")
        metrics = cloudwatch.list_metrics(Namespace="livetrain/LiveQuality")["Metrics"]
        alarms = {alarm["AlarmName"]: alarm["Dimensions"] for alarm in cloudwatch.describe_alarms()["MetricAlarms"]}
        run = sagemaker.list_pipeline_executions(PipelineName=monitor_pipeline_name(CONFIG.pipeline_name))[
            "PipelineExecutionSummaries"][-1]["PipelineExecutionArn"]
        steps = sagemaker.list_pipeline_execution_steps(PipelineExecutionArn=run)["PipelineExecutionSteps"]
        figures = {name: latest_figures(s3, CONFIG.bucket, CONFIG.pipeline_name, name)
                   for name in (stack.endpoint_name(), endpoint)}
    assert stack.live_quality[-1]["windows"][0]["status"] == "declining"
    assert [{"Name": "Endpoint", "Value": endpoint}] in [
        metric["Dimensions"] for metric in metrics if metric["MetricName"] == "LiftLowerBound"]
    assert alarms == {f"{name}-live-lift": [{"Name": "Endpoint", "Value": name}]
                      for name in (stack.endpoint_name(), endpoint)}  # one per epic, on its endpoint
    assert figures[stack.endpoint_name()] is None and figures[endpoint] == stack.live_quality[-1]  # its own folder
    assert [(step["StepName"], step["StepStatus"]) for step in steps] == [
        ("PublishLiveQuality", "Succeeded"), ("MeasureLiveQuality", "Succeeded")]  # newest first


PIPELINE_ARN = f"arn:aws:sagemaker:{CONFIG.region}:123456789012:pipeline/{CONFIG.pipeline_name}"
DONE = {"Name": "Done", "Type": "Condition", "Arguments": {
    "Conditions": [{"Type": "Equals", "LeftValue": 1, "RightValue": 1}], "IfSteps": [], "ElseSteps": []}}
# Check is false if it runs again: the crashed run recorded it Succeeded with Outcome True, and a resume reuses it.
RESUMABLE = {"Version": "2020-12-01", "Parameters": [], "Steps": [
    {"Name": "Check", "Type": "Condition", "Arguments": {
        "Conditions": [{"Type": "Equals", "LeftValue": 1, "RightValue": 2}], "IfSteps": [DONE],
        "ElseSteps": [{"Name": "Explain", "Type": "Fail", "Arguments": {"ErrorMessage": "Check ran again"}}]}}]}


def test_a_stack_starting_after_a_crash_resumes_what_the_killed_one_left_executing(tmp_path):
    """The records a killed stack leaves: a run in its second step (claimed), a stopping one, one queued behind,
    a start cut short before its queue entry, and a run that finished just before its entry was removed."""
    submissions = Submissions(tmp_path / "state")

    def submitted(definition: dict, *, claimed: bool = True) -> str:
        execution_id = submissions.submit(pipeline_name=CONFIG.pipeline_name, pipeline_arn=PIPELINE_ARN,
                                          definition=definition, parameters={})["PipelineExecutionId"]
        assert not claimed or submissions.claim(execution_id)
        return execution_id

    running = submitted(RESUMABLE)
    record = submissions.store.load(running)
    record["Steps"] = {
        "Check": {"StepName": "Check", "StepType": "Condition", "StepStatus": "Succeeded", "Properties": {
            "Outcome": True}, "StartTime": "2026-12-04T10:00:00.000Z", "EndTime": "2026-12-04T10:00:01.000Z"},
        "Done": {"StepName": "Done", "StepType": "Condition", "StepStatus": "Executing",
                 "StartTime": "2026-12-04T10:00:02.000Z"}}
    submissions.store.save(record)
    stopping = submitted(RESUMABLE)
    submissions.store.request_stop(stopping)
    finished = submitted(RESUMABLE)
    submissions.fail(finished, "step Check failed")
    queued = submitted({**RESUMABLE, "Steps": [DONE]}, claimed=False)
    cut_short = submitted(RESUMABLE, claimed=False)
    (entry,) = submissions.queue_dir.glob(f"*-{cut_short}.json")
    entry.unlink()

    lines = []  # one execution at a time, so that the order of the resumed runs shows in their times
    with LocalStack(CONFIG, tmp_path / "state", log=lines.append, max_concurrent_executions=1) as stack:
        sagemaker = stack.client("sagemaker")

        def describe(execution_id: str) -> dict:
            arn = f"{PIPELINE_ARN}/execution/{execution_id}"
            return sagemaker.describe_pipeline_execution(PipelineExecutionArn=arn)

        assert (describe(cut_short)["PipelineExecutionStatus"], describe(cut_short)["FailureReason"]) == (
            "Failed", "the local stack stopped while this run was executing; retry it with RetryPipelineExecution")
        assert any(running in line and stopping in line and queued in line and finished not in line
                   for line in lines if line.startswith("resuming 3"))
        runs = stack.run_queued()  # what run_in_background's loop does each tick
        assert sorted(runs) == sorted([running, stopping, queued, finished])
        for run in runs.values():
            run.result(timeout=60)
        assert submissions.pending() == []
        assert [describe(e)["PipelineExecutionStatus"] for e in (running, stopping, queued, finished)] == [
            "Succeeded", "Stopped", "Succeeded", "Failed"]
        steps = sagemaker.list_pipeline_execution_steps(
            PipelineExecutionArn=f"{PIPELINE_ARN}/execution/{running}")["PipelineExecutionSteps"]
        assert {s["StepName"]: s["StepStatus"] for s in steps} == {"Check": "Succeeded", "Done": "Succeeded"}
        check = next(s for s in steps if s["StepName"] == "Check")
        assert check["Metadata"] == {"Condition": {"Outcome": "true"}}
        assert check["EndTime"].isoformat().startswith("2026-12-04T10:00:01")  # reused, not run again
    records = {e: submissions.store.load(e) for e in (running, stopping, queued)}
    assert records[queued]["StartTime"] >= max(records[running]["EndTime"], records[stopping]["EndTime"])  # in order


def test_a_restarted_stack_still_has_the_objects_the_packages_and_the_pipeline(tmp_path):
    """moto's state survives stop() and a new stack on the same directory; its replay starts no run again, and a
    batch whose event was lost gets its one run from the catch-up scan."""
    with LocalStack(CONFIG, tmp_path / "state", log=lambda line: None) as stack:
        stack.provision()
        s3, sagemaker = stack.client("s3"), stack.client("sagemaker")
        s3.put_object(Bucket=CONFIG.bucket, Key="batches/kept/batch.manifest", Body=b'["kept"]')
        sagemaker.create_model_package_group(ModelPackageGroupName=stack.model_package_group())  # as a run does
        container = {"Image": "local/linear-learner", "ModelDataUrl": f"s3://{CONFIG.bucket}/models/model.tar.gz"}
        specification = {"Containers": [container], "SupportedContentTypes": ["text/csv"],
                         "SupportedResponseMIMETypes": ["text/csv"]}
        arns = [sagemaker.create_model_package(
            ModelPackageGroupName=stack.model_package_group(), InferenceSpecification=specification,
            ModelApprovalStatus="PendingManualApproval")["ModelPackageArn"] for _ in range(2)]
        stack.approve(arns[0])
        pipeline = sagemaker.describe_pipeline(PipelineName=CONFIG.pipeline_name)

    with LocalStack(CONFIG, tmp_path / "state", log=lambda line: None) as stack:
        s3, sagemaker = stack.client("s3"), stack.client("sagemaker")
        assert s3.get_object(Bucket=CONFIG.bucket, Key="batches/kept/batch.manifest")["Body"].read() == b'["kept"]'
        packages = sagemaker.list_model_packages(ModelPackageGroupName=stack.model_package_group(),
                                                 SortOrder="Ascending")["ModelPackageSummaryList"]
        assert [(p["ModelPackageArn"], p["ModelApprovalStatus"]) for p in packages] == [
            (arns[0], "Approved"), (arns[1], "PendingManualApproval")]
        kept = sagemaker.describe_pipeline(PipelineName=CONFIG.pipeline_name)
        assert (kept["PipelineArn"], kept["PipelineDefinition"]) == (
            pipeline["PipelineArn"], pipeline["PipelineDefinition"])
        stack.provision()  # again, as `livetrain local up` does on every start: nothing to create twice
        assert stack.dispatcher.poll_once() == 0  # the replayed put and approval reached no rule: no run, no deploy
        assert sagemaker.list_pipeline_executions(PipelineName=CONFIG.pipeline_name)["PipelineExecutionSummaries"] == []

        # The kept manifest's event was never dispatched (the first stack had no dispatcher running; SQS is not
        # journalled): the catch-up scan starts its run. A batch landing now is found by the scan AND delivered
        # by its rule: one run each, however often either happens.
        s3.put_object(Bucket=CONFIG.bucket, Key="batches/new/batch.manifest", Body=b'["new"]')
        started = stack.start_missed_batches()
        assert stack.start_missed_batches() == []
        assert stack.dispatcher.poll_once() == 1  # the new manifest's event: its target finds the scan's run
        runs = sagemaker.list_pipeline_executions(PipelineName=CONFIG.pipeline_name)["PipelineExecutionSummaries"]
        assert sorted(started) == sorted(run["PipelineExecutionArn"].rsplit("/", 1)[1] for run in runs)
        manifests = [Submissions(tmp_path / "state").store.load(e)["Parameters"]["InputManifestKey"] for e in started]
        assert sorted(manifests) == ["batches/kept/batch.manifest", "batches/new/batch.manifest"]
        assert len(stack.executions) == 2


def most_running_at_once(records: list[dict]) -> int:
    """The most executions that ran at one time, from their records: each ran from its first step's start to its
    end (a queued execution has no step yet)."""
    changes = sorted([(min(step["StartTime"] for step in record["Steps"].values() if step.get("StartTime")), 1)
                      for record in records]
                     + [(record["EndTime"], -1) for record in records])  # at one instant an end sorts first
    running = most = 0
    for _, change in changes:
        running += change
        most = max(most, running)
    return most


def test_each_epic_runs_into_its_own_group_and_endpoint_at_most_two_runs_at_once(tmp_path, make_batch):
    """Two epics' batches and two batches that cannot run (of a third epic) land at once: every one gets its run,
    with its epic; no more than max_concurrent_executions run at a time (the others wait, queued); each epic's
    model is registered in the epic's group and, approved, served by the epic's endpoint."""
    epics = ("CS.D.BITCOIN.CFD.IP", "CS.D.ETHUSD.CFD.IP")
    with LocalStack(CONFIG, tmp_path / "state", log=lambda line: None, max_jobs=4,
                    max_concurrent_executions=2) as stack:
        stack.provision()
        stack.run_in_background()
        s3, sagemaker = stack.client("s3"), stack.client("sagemaker")
        for epic in epics:
            upload_batch_dir(s3, CONFIG.bucket, make_batch(seed=0, epic=epic, **PLANTED))
        for batch in ("empty-1", "empty-2"):
            s3.put_object(Bucket=CONFIG.bucket, Key=f"batches/CS.D.EMPTY.IP/{batch}/batch.manifest", Body=b"[]")
        records = finished_runs(stack, 4)

        assert most_running_at_once(records) == 2
        by_epic = {}
        for record in records:
            by_epic.setdefault(record["Parameters"]["Epic"], []).append(record)
            assert record["Parameters"]["InputManifestKey"].startswith(f"batches/{record['Parameters']['Epic']}/")
        assert sorted(by_epic) == sorted([*epics, "CS.D.EMPTY.IP"])
        assert [r["PipelineExecutionStatus"] for r in by_epic["CS.D.EMPTY.IP"]] == ["Failed", "Failed"]
        packages = {}
        for epic in epics:
            ((record,),) = [by_epic[epic]]
            assert record["PipelineExecutionStatus"] == "Succeeded", record["FailureReason"]
            (packages[epic],) = sagemaker.list_model_packages(
                ModelPackageGroupName=stack.model_package_group(epic))["ModelPackageSummaryList"]
        assert stack.model_package_group(epics[1]) == "livetrain-models-CS-D-ETHUSD-CFD-IP"

        stack.approve(packages[epics[1]]["ModelPackageArn"])
        endpoint = stack.wait_for_endpoint(packages[epics[1]]["ModelPackageArn"], epic=epics[1])
        assert endpoint["EndpointName"] == "livetrain-CS-D-ETHUSD-CFD-IP"
        with pytest.raises(sagemaker.exceptions.ClientError, match="Could not find"):
            sagemaker.describe_endpoint(EndpointName=stack.endpoint_name(epics[0]))  # nothing approved there
