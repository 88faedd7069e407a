"""`livetrain local up | down | status`: the local stack as a background service."""

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import boto3
import numpy as np
import pytest
from botocore.exceptions import ClientError
from conftest import group_is_gone

from infra.local.services import wait_until
from lambdas.epics import epic_name
from livetrain.config import Config

pytestmark = pytest.mark.slow
PIPELINE_ROLE = "arn:aws:iam::123456789012:role/livetrain-pipeline"


def exported(stdout: str) -> dict[str, str]:
    return dict(line.removeprefix("export ").split("=", 1) for line in stdout.splitlines()
                if line.startswith("export "))


def up(run_cli, state) -> tuple[int, dict[str, str], str]:
    """The service's pid, its export lines, its console's URL; one execution at a time (the others queue)."""
    started = run_cli("local", "up", "--state-dir", state, env={"LIVETRAIN_MAX_CONCURRENT_EXECUTIONS": "1"},
                      timeout=120)
    assert started.returncode == 0, started.stderr
    # a shell can eval it: comments and exports only
    assert all(line.startswith(("# ", "export ")) for line in started.stdout.splitlines()), started.stdout
    return (int(started.stdout.split("(pid ", 1)[1].split(")", 1)[0]), exported(started.stdout),
            started.stdout.split("its console: ", 1)[1].split(";", 1)[0])


def local(environment: dict[str, str], service: str):
    """A boto3 client for the service's exported AWS endpoint."""
    return boto3.client(service, endpoint_url=environment["AWS_ENDPOINT_URL"],
                        region_name=environment["AWS_DEFAULT_REGION"],
                        aws_access_key_id=environment["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=environment["AWS_SECRET_ACCESS_KEY"])


def lines(path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def crashable(s3, steps) -> dict:
    """Two Processing steps, First then Second; each appends a line to `steps/<its name>`, Second then waits
    for the file `steps/release`."""
    script = (f"import pathlib, sys, time\nsteps = pathlib.Path({str(steps)!r})\n"
              "with (steps / sys.argv[1]).open('a') as out:\n    out.write('ran\\n')\n"
              "while sys.argv[1] == 'Second' and not (steps / 'release').exists():\n    time.sleep(0.05)\n")
    s3.put_object(Bucket=Config().bucket, Key="code/crashable.py", Body=script.encode())
    code = {"InputName": "code", "S3Input": {"S3Uri": f"s3://{Config().bucket}/code/crashable.py",
                                              "LocalPath": "/opt/ml/processing/input/code", "S3DataType": "S3Prefix",
                                              "S3InputMode": "File"}}

    def step(name: str, *after: str) -> dict:
        return {"Name": name, "Type": "Processing", "DependsOn": list(after), "Arguments": {
            "AppSpecification": {"ImageUri": "local", "ContainerArguments": [name], "ContainerEntrypoint": [
                "python3", "/opt/ml/processing/input/code/crashable.py"]},
            "ProcessingResources": {"ClusterConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1,
                                                      "VolumeSizeInGB": 30}},
            "RoleArn": PIPELINE_ROLE, "ProcessingInputs": [code], "ProcessingOutputConfig": {"Outputs": []}}}

    return {"Version": "2020-12-01", "Parameters": [], "Steps": [step("First"), step("Second", "First")]}


def test_up_serves_the_stack_to_a_shell_and_down_leaves_no_process(run_cli, tmp_path):
    """Also: a kill -9 of the service takes its daemons and the running step with it, and `up` again resumes the
    run it left from its last completed step, then runs the one queued behind it."""
    state = tmp_path / "local"
    pid, environment, _ = up(run_cli, state)
    config = Config()
    local(environment, "s3").put_object(Bucket=config.bucket, Key="capture/kept.jsonl", Body=b"kept")
    group = epic_name(config.model_package_group, config.epic)  # the console shows the configured epic's group
    local(environment, "sagemaker").create_model_package_group(ModelPackageGroupName=group)
    package = local(environment, "sagemaker").create_model_package(  # rejected: no deployment starts
        ModelPackageGroupName=group, ModelApprovalStatus="Rejected", InferenceSpecification={
            "Containers": [{"Image": "local/linear-learner"}], "SupportedContentTypes": ["text/csv"],
            "SupportedResponseMIMETypes": ["text/csv"]})["ModelPackageArn"]
    # Two runs of a two-step pipeline, the second queued behind the first; kill -9 while the first one's Second
    # step runs. Each step appends a line to its own file; Second then waits for `release` (the job's own pace).
    steps = tmp_path / "steps"
    steps.mkdir()
    sagemaker = local(environment, "sagemaker")
    sagemaker.create_pipeline(PipelineName="crashable", RoleArn=PIPELINE_ROLE,
                              PipelineDefinition=json.dumps(crashable(local(environment, "s3"), steps)))
    first_run, queued_run = (sagemaker.start_pipeline_execution(PipelineName="crashable")["PipelineExecutionArn"]
                             for _ in range(2))
    wait_until(lambda: lines(steps / "Second") == 1, 60, "the first run's second step to start")
    os.kill(pid, signal.SIGKILL)  # the service alone: moto, the MongoDB server and the step must not outlive it
    wait_until(lambda: group_is_gone(pid), 30, "the killed service's daemons to end", interval=0.1)
    assert run_cli("local", "status", "--state-dir", state).returncode == 1

    pid, environment, console = up(run_cli, state)
    try:
        again = run_cli("local", "up", "--state-dir", state)
        assert again.returncode == 2 and f"already runs on {state} (pid {pid})" in again.stderr
        assert exported(run_cli("local", "status", "--state-dir", state).stdout) == environment

        session = boto3.Session(aws_access_key_id=environment["AWS_ACCESS_KEY_ID"],
                                aws_secret_access_key=environment["AWS_SECRET_ACCESS_KEY"],
                                region_name=environment["AWS_DEFAULT_REGION"])
        os.environ.update({k: environment[k] for k in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME")})
        try:  # what the exported lines do for a shell's boto3
            pipelines = session.client("sagemaker").list_pipelines()["PipelineSummaries"]
            with pytest.raises(ClientError, match="Endpoint nowhere not found"):  # the endpoint server, not moto
                session.client("sagemaker-runtime").invoke_endpoint(EndpointName="nowhere", Body=b"1")
        finally:
            for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME"):
                os.environ.pop(name)
        assert sorted(p["PipelineName"] for p in pipelines) == ["crashable", Config().pipeline_name,
                                                                f"{Config().pipeline_name}-monitor"]
        sagemaker = local(environment, "sagemaker")  # what moto had before the kill -9 is there again
        assert local(environment, "s3").get_object(Bucket=config.bucket, Key="capture/kept.jsonl")[
            "Body"].read() == b"kept"
        assert sagemaker.describe_model_package(ModelPackageName=package)["ModelApprovalStatus"] == "Rejected"
        wait_until(lambda: lines(steps / "Second") == 2, 60, "the first run's second step to run again")
        (steps / "release").touch()
        for run in (first_run, queued_run):
            wait_until(lambda run=run: sagemaker.describe_pipeline_execution(PipelineExecutionArn=run)[
                "PipelineExecutionStatus"] == "Succeeded", 60, "the runs to finish")
        assert (lines(steps / "First"), lines(steps / "Second")) == (2, 3)  # First once per run: resumed after it
        first, queued = (sagemaker.describe_pipeline_execution(PipelineExecutionArn=run) for run in (first_run,
                                                                                                     queued_run))
        assert queued["CreationTime"] < first["LastModifiedTime"] <= queued["LastModifiedTime"]
        aws = subprocess.run([str(Path(sys.executable).with_name("aws")), "sagemaker", "list-pipeline-executions",
                              "--pipeline-name", "crashable", "--output", "json"], capture_output=True, text=True,
                             env={**os.environ, **environment}, timeout=60)  # the AWS CLI, with the exported lines
        assert aws.returncode == 0, aws.stderr
        assert [(e["PipelineExecutionArn"], e["PipelineExecutionStatus"]) for e in json.loads(aws.stdout)[
            "PipelineExecutionSummaries"]] == [(queued_run, "Succeeded"), (first_run, "Succeeded")]  # newest first
        page = urllib.request.urlopen(console, timeout=30).read().decode()  # the console `up` serves
        assert f'id="package-{package.rsplit("/", 1)[1]}"' in page
    finally:
        stopped = run_cli("local", "down", "--state-dir", state)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stderr
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # the service and everything it started (moto, the MongoDB server) are gone
    assert run_cli("local", "status", "--state-dir", state).returncode == 1


def test_down_ends_what_a_killed_service_left_in_its_process_group(tmp_path):
    """A process the service's daemons did not take with them (a job's own child, say) is ended by `down`."""
    from infra.local.service import down

    leader = subprocess.Popen(["sh", "-c", "sleep 60 & wait"], start_new_session=True)
    wait_until(lambda: subprocess.run(["pgrep", "-g", str(leader.pid), "sleep"], capture_output=True).returncode
               == 0, 10, "the group's second process")
    (tmp_path / "service.json").write_text(json.dumps({"pid": leader.pid, "environment": {}}))
    leader.kill()  # the service, killed: its group's other process stays
    leader.wait()
    assert not group_is_gone(leader.pid)
    assert down(tmp_path)
    assert group_is_gone(leader.pid) and not (tmp_path / "service.json").exists()


def test_a_run_killed_during_tuning_resumes_and_registers_what_an_uninterrupted_run_registers(tmp_path, make_batch):
    """The product's pipeline on a 10,000-trade planted batch: kill -9 of the service while the Tuning step runs,
    `up` again: the run resumes after its completed steps (Preprocess does not run again) and registers the package
    an uninterrupted run of the same batch registers: the same hyperparameters, weights, threshold and verdict."""
    from infra.local.service import down
    from infra.local.service import up as start
    from pipelines.local.endpoint import load_model_data
    from pipelines.local.records import ExecutionStore
    from processing.batch_contract import upload_batch_dir

    state, config = tmp_path / "state", Config()
    settings = {"LIVETRAIN_MAX_JOBS": "2", "LIVETRAIN_MAX_PARALLEL_JOBS": "2"}
    store = ExecutionStore(state)
    service = start(state, environment=settings)
    try:
        batch = make_batch(trades=10_000, seed=0)  # the planted batch of test_local_pipeline_e2e
        manifest = upload_batch_dir(local(service["environment"], "s3"), config.bucket, batch)
        wait_until(lambda: [r["Steps"].get("TuneLinearLearner", {}).get("StepStatus") for r in store.all()]
                   == ["Executing"], 120, "the batch's run to reach its Tuning step", interval=0.1)
        (before,) = store.all()
        os.kill(service["pid"], signal.SIGKILL)
        wait_until(lambda: group_is_gone(service["pid"]), 30, "the killed service's processes to end", interval=0.1)

        service = start(state, environment=settings)
        sagemaker, s3 = local(service["environment"], "sagemaker"), local(service["environment"], "s3")

        def finished(arn: str) -> dict:
            wait_until(lambda: sagemaker.describe_pipeline_execution(PipelineExecutionArn=arn)[
                "PipelineExecutionStatus"] != "Executing", 300, f"{arn} to finish", interval=0.2)
            return store.load(arn.rsplit("/", 1)[-1])

        resumed = finished(before["PipelineExecutionArn"])
        uninterrupted = finished(sagemaker.start_pipeline_execution(
            PipelineName=config.pipeline_name, ClientRequestToken="uninterrupted-run-of-the-same-batch",
            PipelineParameters=[{"Name": "InputBucket", "Value": config.bucket},
                                {"Name": "InputManifestKey", "Value": manifest}])["PipelineExecutionArn"])
        models = []
        for record in (resumed, uninterrupted):
            assert record["PipelineExecutionStatus"] == "Succeeded", record["FailureReason"]
            package = record["Steps"]["RegisterBestModel"]["Properties"]["ModelPackageArn"]
            container = sagemaker.describe_model_package(ModelPackageName=package)["InferenceSpecification"][
                "Containers"][0]
            models.append(load_model_data(container["ModelDataUrl"], s3))
    finally:
        down(state)
    assert resumed["Steps"]["Preprocess"] == before["Steps"]["Preprocess"]  # kept, not run again
    assert resumed["Steps"]["TuneLinearLearner"]["StartTime"] > before["Steps"]["TuneLinearLearner"]["StartTime"]
    first, second = models
    assert first.hyperparameters == second.hyperparameters and first.threshold == second.threshold
    assert np.array_equal(first.weights, second.weights) and first.bias == second.bias
    verdicts = [record["Steps"]["EvaluateBestModel"]["Properties"]["PropertyFiles"]["EvaluationReport"]["summary"]
                for record in (resumed, uninterrupted)]
    assert verdicts[0] == verdicts[1]
