"""`livetrain local up | down | status`: the local stack as a background service."""

import os

import boto3
import pytest
from botocore.exceptions import ClientError

from livetrain.config import Config

pytestmark = pytest.mark.slow


def exported(stdout: str) -> dict[str, str]:
    return dict(line.removeprefix("export ").split("=", 1) for line in stdout.splitlines()
                if line.startswith("export "))


def test_up_serves_the_stack_to_a_shell_and_down_leaves_no_process(run_cli, tmp_path):
    state = tmp_path / "local"
    started = run_cli("local", "up", "--state-dir", state, timeout=120)
    assert started.returncode == 0, started.stderr
    environment = exported(started.stdout)
    pid = int(started.stdout.split("(pid ", 1)[1].split(")", 1)[0])
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
        assert [p["PipelineName"] for p in pipelines] == [Config().pipeline_name]
    finally:
        stopped = run_cli("local", "down", "--state-dir", state)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stderr
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # the service and everything it started (moto, the MongoDB server) are gone
    assert run_cli("local", "status", "--state-dir", state).returncode == 1
