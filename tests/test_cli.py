"""The `livetrain` command line: help, configuration, synth-batch, one-line errors."""

import json
import subprocess
import sys

import pytest

from livetrain.config import Config
from livetrain.errors import UserError
from processing.batch_contract import read_batch


def test_help_lists_the_commands(run_cli):
    result = run_cli("--help")
    assert result.returncode == 0
    assert "synth-batch" in result.stdout


@pytest.mark.parametrize(("args", "expected"), [
    (["--bogus"], "livetrain: error: unrecognized arguments: --bogus"),
    (["pipeline", "--bogus"], "livetrain: error: unrecognized arguments: --bogus"),
    ([], "livetrain: error: the following arguments are required: COMMAND"),
])
def test_an_unknown_option_is_named_before_a_missing_command(run_cli, args, expected):
    result = run_cli(*args)
    assert result.returncode == 2 and result.stderr.splitlines()[-1] == expected, result.stderr


def test_python_m_livetrain_is_the_same_command_line():
    """`python -m livetrain` runs the package's __main__: the same parser, and user errors stay one line."""
    helped = subprocess.run([sys.executable, "-m", "livetrain", "--help"], capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0 and "synth-batch" in helped.stdout
    failed = subprocess.run([sys.executable, "-m", "livetrain", "pipeline", "upsert"], capture_output=True, text=True,
                            timeout=120, env={"PATH": "/usr/bin:/bin"})
    assert failed.returncode == 2, failed.stderr
    assert failed.stderr.startswith("livetrain: error: no execution role") and failed.stderr.count("\n") == 1


def test_config_from_environment():
    config = Config.from_env({"LIVETRAIN_BUCKET": "my-bucket", "LIVETRAIN_MAX_JOBS": "4", "UNRELATED": "x"})
    assert (config.bucket, config.max_jobs) == ("my-bucket", 4)
    assert config.epic == Config().epic
    with pytest.raises(UserError, match="LIVETRAIN_STOP_DISTANCE='far' is not a number"):
        Config.from_env({"LIVETRAIN_STOP_DISTANCE": "far"})


def test_synth_batch_writes_a_valid_batch(run_cli, tmp_path):
    result = run_cli("synth-batch", "--out", tmp_path / "b", "--trades", 500, "--seed", 4, "--market", "random-walk",
                     env={"LIVETRAIN_BUCKET": "env-bucket"})
    assert result.returncode == 0, result.stderr
    batch = read_batch(tmp_path / "b")
    assert len(batch.trades["trade_id"]) == 500
    assert json.loads((tmp_path / "b" / "batch.manifest").read_text())[0]["prefix"].startswith("s3://env-bucket/")


def test_synth_batch_bad_input_is_one_line(run_cli, tmp_path):
    (tmp_path / "b").mkdir()
    result = run_cli("synth-batch", "--out", tmp_path / "b", "--trades", 10)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "already exists" in result.stderr
    result = run_cli("synth-batch", "--out", tmp_path / "c", "--trades", "-3")
    assert result.returncode == 2 and "positive" in result.stderr.splitlines()[-1]
    assert not (tmp_path / "c").exists()


def test_the_console_without_a_running_stack_is_one_line(run_cli, tmp_path):
    result = run_cli("local", "console", "--state-dir", tmp_path)
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0
    assert f"no local stack runs on {tmp_path}; start one with `livetrain local up`" in result.stderr
