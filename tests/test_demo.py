"""`livetrain demo` end to end: the whole loop on one machine, as a newcomer runs it.

A verdict needs a test slice of 20 independent windows of market time: the default 10,000 trades 30 s apart.
Smaller batches end at Preprocess with "not enough market time", which is what the other two demos use.
The three demos run at the same time, each with its own stack and state directory: they spend much of their
time waiting for their own subprocesses (streamer, MongoDB-wire server, training jobs).
"""

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import LIVETRAIN, ROOT, group_is_gone

from infra.local.service import down, status
from infra.local.services import local_client, wait_until
from livetrain.config import Config
from pipelines.local.records import ExecutionStore

pytestmark = pytest.mark.slow
DEMOS = {
    # Two batches: the second streams paced while the first model serves, its trades scored live (the monitor).
    "whole loop": ("--continuous", "--batches", 2, "--max-jobs", 4),
    # The gate itself on a random walk is test_local_pipeline_e2e's; this is the demo's handling of a stopped run.
    "too short": ("--market", "random-walk", "--batch-size", 1000, "--max-jobs", 2),
    "continuous": ("--continuous", "--batches", 2, "--no-approve", "--batch-size", 1000, "--max-jobs", 2,
                   "--keep-running"),
}


@pytest.fixture(scope="module")
def demos(tmp_path_factory) -> Iterator[dict[str, tuple[subprocess.CompletedProcess, Path]]]:
    """Each demo's finished process (stdout, stderr as text) and its state directory."""
    started = {}
    for name, args in DEMOS.items():
        state = tmp_path_factory.mktemp(name.replace(" ", "-"))
        out, err = (state.parent / f"{state.name}.{stream}" for stream in ("out", "err"))
        command = [str(LIVETRAIN), "demo", *map(str, args), "--state-dir", str(state)]
        with out.open("w") as stdout, err.open("w") as stderr:
            started[name] = (subprocess.Popen(command, stdout=stdout, stderr=stderr, cwd=ROOT, env=dict(os.environ)),
                             state, out, err)
    finished = {}
    try:
        for name, (process, state, out, err) in started.items():
            process.wait(timeout=900)
            finished[name] = (subprocess.CompletedProcess(process.args, process.returncode, out.read_text(),
                                                          err.read_text()), state)
    finally:
        for process, *_ in started.values():
            if process.poll() is None:
                process.kill()
    yield finished
    for _, state in finished.values():
        down(state)  # what --keep-running left up


def training_runs(state: Path) -> list[dict]:
    """The records of the product pipeline's runs (not the monitoring pipeline's), oldest first."""
    return sorted((r for r in ExecutionStore(state).all() if r["PipelineName"] == Config().pipeline_name),
                  key=lambda record: record["StartTime"])


def test_demo_runs_the_whole_loop(demos):
    result, tmp_path = demos["whole loop"]
    assert result.returncode in (0, 1) and "Traceback" not in result.stderr, result.stderr[-3000:]
    record, _ = training_runs(tmp_path)
    assert record["PipelineExecutionStatus"] == "Succeeded"
    assert record["Steps"]["RegisterBestModel"]["StepStatus"] == "Succeeded"
    assert "deployed to endpoint config livetrain-CS-D-BITCOIN-CFD-IP-v1; 5 predictions served" in result.stdout
    deployments = result.stdout.count("predictions served")
    assert result.stderr.count("predicted_label") == 5 * deployments  # answered through boto3's invoke_endpoint
    assert result.stderr.count("(the model's threshold 0.") == 5 * deployments
    assert "lift 0." in result.stdout and "base rate 0." in result.stdout and "no champion yet" in result.stdout
    report = tmp_path / "reports" / record["PipelineExecutionId"]
    assert (report / "index.html").is_file() and (report / "verdict.png").read_bytes().startswith(b"\x89PNG")
    for phase in ("stream the planted-signal market", "run the pipeline", "approve the package", "predict"):
        assert phase in result.stdout  # the summary times every phase


def test_once_a_model_serves_the_demo_shows_its_live_precision_with_intervals(demos):
    """After the first deployment the market streams paced, the endpoint scores each trade, the service's timer
    runs the monitoring pipeline, and the demo shows the serving version's latest window as it changes."""
    result, tmp_path = demos["whole loop"]
    live = [line for line in result.stderr.splitlines() if line.startswith("    live | v1 in service, live on ")]
    judged = [line for line in live if "precision" in line]
    assert judged, result.stderr[-3000:]
    assert re.search(r"precision \d\.\d\d \[\d\.\d\d, \d\.\d\d\], base rate .* lift -?\d\.\d\d \[-?\d\.\d\d, "
                     r"-?\d\.\d\d\] \((healthy|declining); 95% intervals\)$", judged[0]), judged[0]
    assert "    live quality: v1 in service" in result.stdout
    scored = re.findall(r"live scoring: scored ([\d,]+)", result.stderr)
    assert scored and int(scored[-1].replace(",", "")) > 1000
    monitoring = [r for r in ExecutionStore(tmp_path).all() if r["PipelineName"] == f"{Config().pipeline_name}-monitor"]
    assert monitoring and all(r["PipelineExecutionStatus"] == "Succeeded" for r in monitoring)


def test_a_batch_too_short_for_a_verdict_deploys_nothing_and_says_what_would_do(demos):
    result, tmp_path = demos["too short"]
    assert result.returncode == 1, result.stderr[-3000:]
    (record,) = ExecutionStore(tmp_path).all()
    assert record["Steps"]["Preprocess"]["StepStatus"] == "Failed"
    assert record["Steps"]["RegisterBestModel"]["StepStatus"] == "NotExecuted"
    assert "not enough market time for a verdict" in record["FailureReason"]
    assert "export batches of about " in record["FailureReason"]
    assert record["FailureReason"] in result.stdout
    assert "nothing is deployed" in result.stderr and "deployed to endpoint" not in result.stdout
    assert "--lookback-seconds" not in result.stdout + result.stderr  # an option neither the demo nor pipeline has


def test_continuous_mode_retrains_on_every_batch(demos):
    result, tmp_path = demos["continuous"]
    assert result.returncode == 1, result.stderr[-3000:]  # 1,000 trades are not enough market time for a verdict
    assert "Traceback" not in result.stderr
    keys = [record["Parameters"]["InputManifestKey"] for record in training_runs(tmp_path)]
    assert len(keys) == 2 and keys == sorted(set(keys))  # one run per batch, in batch order (ids sort by time)
    assert len(re.findall(r"^  execution \w+: ", result.stdout, flags=re.M)) == 2
    assert "deployed to endpoint" not in result.stdout  # --no-approve: packages wait for a reviewer


def test_the_demo_runs_on_the_local_up_service_and_keep_running_leaves_it_to_the_user(demos, run_cli):
    """--keep-running: the service stays up with the demo's runs behind its SageMaker API, as `local up` leaves it;
    `local down` ends it. Without it, the demo's own service is gone when the demo ends."""
    result, state = demos["continuous"]
    service = status(state)
    assert service is not None, result.stderr[-3000:]
    assert f"export AWS_ENDPOINT_URL={service['environment']['AWS_ENDPOINT_URL']}" in result.stdout
    assert f"livetrain local down --state-dir {state}" in result.stdout
    sagemaker = local_client("sagemaker", service["environment"]["AWS_ENDPOINT_URL"], Config().region)
    executions = sagemaker.list_pipeline_executions(PipelineName=Config().pipeline_name)["PipelineExecutionSummaries"]
    assert {e["PipelineExecutionArn"].rsplit("/", 1)[-1] for e in executions} == {
        record["PipelineExecutionId"] for record in ExecutionStore(state).all()}
    assert len(executions) == 2
    assert run_cli("local", "down", "--state-dir", state).returncode == 0
    assert status(state) is None
    wait_until(lambda: group_is_gone(service["pid"]), 10, "the service's processes to end")  # all it started
    for name in ("whole loop", "too short"):
        assert status(demos[name][1]) is None and not (demos[name][1] / "service.json").exists()


def test_a_demo_uses_the_service_already_running_on_its_state_directory_and_leaves_it_running(tmp_path, run_cli):
    started = run_cli("local", "up", "--state-dir", tmp_path, timeout=120)
    assert started.returncode == 0, started.stderr
    try:
        pid = status(tmp_path)["pid"]
        result = run_cli("demo", "--state-dir", tmp_path, "--market", "random-walk", "--batch-size", 1000,
                         "--max-jobs", 2)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]  # too short
        assert f"using the local stack already running on {tmp_path} (pid {pid})" in result.stderr
        assert status(tmp_path)["pid"] == pid  # not the demo's to stop
        (record,) = ExecutionStore(tmp_path).all()
        assert record["PipelineExecutionId"] in result.stdout
    finally:
        down(tmp_path)
