"""The console's routes over moto's SageMaker API, without a browser (the browser test is in test_local_stack)."""

import json
import urllib.error
import urllib.parse
import urllib.request

import pytest
from test_local_engine import output, processing_step
from test_local_report import evaluation_with_all_three_models

from infra.local.console import background_console
from lambdas.epics import epic_name
from livetrain.config import Config

CONFIG = Config()
GROUP = epic_name(CONFIG.model_package_group, CONFIG.epic)  # the console shows the configured epic's group


@pytest.fixture
def console(aws):
    with background_console(CONFIG, aws.endpoint_url) as served:
        yield served


def post(url: str, **form) -> int:
    try:
        return urllib.request.urlopen(url, data=urllib.parse.urlencode(form).encode(), timeout=30).status
    except urllib.error.HTTPError as error:
        return error.code


def test_reject_with_a_comment_is_an_update_model_package(aws, console):
    sagemaker = aws.client("sagemaker")
    sagemaker.create_model_package_group(ModelPackageGroupName=GROUP)
    arn = sagemaker.create_model_package(
        ModelPackageGroupName=GROUP, ModelApprovalStatus="PendingManualApproval",
        InferenceSpecification={"Containers": [{"Image": "local/linear-learner"}],
                                "SupportedContentTypes": ["text/csv"],
                                "SupportedResponseMIMETypes": ["text/csv"]})["ModelPackageArn"]
    assert 'id="package-1"' in urllib.request.urlopen(console.url, timeout=30).read().decode()

    assert post(f"{console.url}/packages/decision", arn=arn, decision="Rejected", comment=" leaks the label ") == 200
    package = sagemaker.describe_model_package(ModelPackageName=arn)
    assert (package["ModelApprovalStatus"], package["ApprovalDescription"]) == ("Rejected", "leaks the label")
    assert post(f"{console.url}/packages/decision", arn=arn, decision="Maybe") == 400


def test_what_the_stack_refuses_is_one_line(aws, console):
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(f"{console.url}/executions/nope", timeout=30)
    assert answer.value.code == 502
    assert answer.value.read().decode().count("\n") == 0


def test_stop_and_retry_buttons_call_the_execution_api(tmp_path):
    """Over a moto whose executions are the engine's records (as in the local stack): the run page offers Stop
    while a run executes and Retry once it failed, and each is the SageMaker call."""
    from infra.local.services import local_client, start_moto
    from pipelines.local.submissions import Submissions

    moto = start_moto(tmp_path)
    try:
        sagemaker = local_client("sagemaker", moto.url, CONFIG.region)
        sagemaker.create_pipeline(PipelineName=CONFIG.pipeline_name, RoleArn="arn:aws:iam::123456789012:role/r",
                                  PipelineDefinition='{"Version": "2020-12-01", "Parameters": [], "Steps": []}')
        queued, failing = (sagemaker.start_pipeline_execution(PipelineName=CONFIG.pipeline_name)[
            "PipelineExecutionArn"] for _ in range(2))
        submissions = Submissions(tmp_path)  # what the stack's runner would record: the second run failed
        failing_id = failing.rsplit("/", 1)[1]
        assert submissions.claim(failing_id)
        submissions.fail(failing_id, "step Prep failed: no batch")
        submissions.done(failing_id)

        def status(arn: str) -> str:
            return sagemaker.describe_pipeline_execution(PipelineExecutionArn=arn)["PipelineExecutionStatus"]

        with background_console(CONFIG, moto.url) as console:
            for arn, button, after in ((queued, "stop", "Stopped"), (failing, "retry", "Executing")):
                run_page = f"{console.url}/executions/{arn.rsplit('/', 1)[1]}"
                assert f'action="/executions/{arn.rsplit("/", 1)[1]}/{button}"' in \
                    urllib.request.urlopen(run_page, timeout=30).read().decode()
                assert post(f"{run_page}/{button}") == 200  # the redirect back to the run's page
                assert status(arn) == after
            assert post(f"{console.url}/executions/{queued.rsplit('/', 1)[1]}/stop") == 502  # stopped already
    finally:
        moto.stop()


def test_a_steps_logs_and_the_reports_plots(tmp_path):
    """Over a moto whose executions are the engine's records: a step's logs are what its script printed or its
    Fail message, a step that never ran says so, an unknown step is 404; the run's verdict plot is a PNG drawn
    from its evaluation."""
    from infra.local.services import local_client, start_moto
    from pipelines.local.engine import LocalExecution

    evaluate = f"""
import os, sys
print("scored the test slice")
os.makedirs(sys.argv[1], exist_ok=True)
open(os.path.join(sys.argv[1], "evaluation.json"), "w").write({json.dumps(evaluation_with_all_three_models())!r})
"""
    moto = start_moto(tmp_path)
    try:
        s3, sagemaker = (local_client(service, moto.url, CONFIG.region) for service in ("s3", "sagemaker"))
        s3.create_bucket(Bucket="console-test")
        s3.put_object(Bucket="console-test", Key="code/evaluate.py", Body=evaluate.encode())
        steps = [processing_step("Evaluate", "s3://console-test/code/evaluate.py", arguments=[
                     "/opt/ml/processing/evaluation"], outputs=[output(
                     "evaluation", "s3://console-test/evaluation", "/opt/ml/processing/evaluation")]),
                 {"Name": "Register", "Type": "Fail", "DependsOn": ["Evaluate"],
                  "Arguments": {"ErrorMessage": "no model to register"}},
                 processing_step("Deploy", "s3://console-test/code/evaluate.py", DependsOn=["Register"])]
        definition = {"Version": "2020-12-01", "Parameters": [], "Steps": steps}
        arn = sagemaker.create_pipeline(PipelineName=CONFIG.pipeline_name, RoleArn="arn:aws:iam::123456789012:role/r",
                                        PipelineDefinition=json.dumps(definition))["PipelineArn"]
        execution = LocalExecution(definition, {}, s3=s3, sagemaker=sagemaker, state_dir=tmp_path,
                                   pipeline_name=CONFIG.pipeline_name, pipeline_arn=arn, progress=lambda line: None)
        record = execution.run()
        assert [step["StepStatus"] for step in record["Steps"].values()] == ["Succeeded", "Failed", "NotExecuted"]

        def get(path: str) -> tuple[int, bytes]:
            try:
                with urllib.request.urlopen(f"{console.url}/executions/{execution.id}{path}", timeout=30) as answer:
                    return answer.status, answer.read()
            except urllib.error.HTTPError as error:
                return error.code, error.read()

        with background_console(CONFIG, moto.url, tmp_path) as console:
            assert f"/executions/{execution.id}/steps/Evaluate/logs" in get("")[1].decode()  # linked from its row
            status, page = get("/steps/Evaluate/logs")
            assert status == 200 and "scored the test slice" in page.decode()
            assert "failed: no model to register" in get("/steps/Register/logs")[1].decode()  # the Fail message
            status, page = get("/steps/Deploy/logs")
            assert status == 200 and 'id="no-logs"' in page.decode() and "has not run" in page.decode()
            assert get("/steps/Nope/logs")[0] == 404
            status, image = get("/plots/verdict.png")
            assert status == 200 and image.startswith(b"\x89PNG")
            assert get("/plots/tuning.png")[0] == 404  # no tuning job in this run
    finally:
        moto.stop()
