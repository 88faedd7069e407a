"""The `livetrain` command line: help, configuration, synth-batch, one-line errors."""

import json

from livetrain.config import Config
from processing.batch_contract import read_batch


def test_help_lists_the_commands(run_cli):
    result = run_cli("--help")
    assert result.returncode == 0
    assert "synth-batch" in result.stdout


def test_config_from_environment():
    config = Config.from_env({"LIVETRAIN_BUCKET": "my-bucket", "UNRELATED": "x"})
    assert config.bucket == "my-bucket"
    assert config.epic == Config().epic


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
