"""`livetrain pipeline …` end to end: against moto's HTTP server, and the mistakes a user can make."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.code import code_bundles

ROLE = "arn:aws:iam::123456789012:role/livetrain-pipeline"
BUCKET = "livetrain-data"


@pytest.fixture
def upserted(aws, run_cli):
    """moto with the bucket and the pipeline created by `livetrain pipeline upsert`."""
    aws.client("s3").create_bucket(Bucket=BUCKET)
    result = run_cli("pipeline", "upsert", "--role-arn", ROLE, "--bucket", BUCKET, "--endpoint-url", aws.endpoint_url)
    assert result.returncode == 0, result.stderr
    return result


def one_line_error(result) -> str:
    """The error line, after checking it is the only one (progress lines may precede it)."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    errors = [line for line in result.stderr.splitlines() if line.startswith("livetrain: error: ")]
    assert len(errors) == 1 and result.stderr.rstrip().endswith(errors[0]), result.stderr
    assert "Traceback" not in result.stderr
    return errors[0]


def test_upsert_uploads_the_code_then_creates_the_pipeline(upserted, aws, run_cli):
    assert upserted.stdout.strip() == "created pipeline arn:aws:sagemaker:us-east-1:123456789012:pipeline/livetrain"
    assert "uploaded Preprocess code" in upserted.stderr

    pipeline = aws.client("sagemaker").describe_pipeline(PipelineName="livetrain")
    assert pipeline["RoleArn"] == ROLE
    offline = run_cli("pipeline", "definition", "--role-arn", ROLE, "--bucket", BUCKET)
    assert pipeline["PipelineDefinition"] + "\n" == offline.stdout  # what `definition` prints is what was sent

    # Every code prefix the definition names holds exactly the files shipped for that step, byte for byte.
    s3 = aws.client("s3")
    steps = {step["Name"]: step for name in ("livetrain", "livetrain-monitor")  # and its monitoring pipeline's
             for step in json.loads(aws.client("sagemaker").describe_pipeline(PipelineName=name)[
                 "PipelineDefinition"])["Steps"]}
    for name, bundle in code_bundles(BUCKET, "livetrain").items():
        [code_uri] = [i["S3Input"]["S3Uri"] for i in steps[name]["Arguments"]["ProcessingInputs"]
                      if i["InputName"] == "code"]
        assert code_uri == bundle.s3_prefix
        prefix = code_uri.removeprefix(f"s3://{BUCKET}/")
        listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"]
        assert sorted(o["Key"].removeprefix(prefix) for o in listed) == sorted(bundle.files)
        for name, content in bundle.files.items():
            assert s3.get_object(Bucket=BUCKET, Key=prefix + name)["Body"].read() == content

    again = run_cli("pipeline", "upsert", "--role-arn", ROLE, "--bucket", BUCKET, "--max-jobs", "4",
                    "--endpoint-url", aws.endpoint_url)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("updated pipeline ")
    updated = json.loads(aws.client("sagemaker").describe_pipeline(PipelineName="livetrain")["PipelineDefinition"])
    tuning = updated["Steps"][1]["Arguments"]["HyperParameterTuningJobConfig"]
    assert tuning["ResourceLimits"]["MaxNumberOfTrainingJobs"] == 4


def test_start_with_parameters_wait_and_list(upserted, aws, run_cli):
    aws.client("s3").create_bucket(Bucket="in-bucket")
    aws.client("s3").put_object(Bucket="in-bucket", Key="batches/E/b1/batch.manifest", Body=b"[]")
    started = run_cli("pipeline", "start", "--manifest-key", "batches/E/b1/batch.manifest", "--bucket", "in-bucket",
                      "--param", "MinPrecision=0.6", "--parameter", "TrainingInstanceType=ml.c5.xlarge",
                      "--wait", "--poll-seconds", "1", "--endpoint-url", aws.endpoint_url)
    assert started.returncode == 0, started.stderr
    arn = started.stdout.strip()
    assert arn.startswith("arn:aws:sagemaker:us-east-1:123456789012:pipeline/livetrain/execution/")
    assert "Succeeded" in started.stderr  # moto finishes executions at once; the poll saw it

    sagemaker = aws.client("sagemaker")
    parameters = sagemaker.list_pipeline_parameters_for_execution(PipelineExecutionArn=arn)["PipelineParameters"]
    assert {p["Name"]: p["Value"] for p in parameters} == {
        "InputBucket": "in-bucket", "InputManifestKey": "batches/E/b1/batch.manifest", "MinPrecision": "0.6",
        "TrainingInstanceType": "ml.c5.xlarge", "Epic": "E"}  # the batch's epic, from its key, as its rule passes it

    listed = run_cli("pipeline", "executions", "--endpoint-url", aws.endpoint_url)
    assert listed.returncode == 0, listed.stderr
    [line] = listed.stdout.strip().splitlines()
    assert line.split()[:2] == [arn.rsplit("/", 1)[-1], "Succeeded"]


def test_describe_shows_parameters_and_the_step_graph_and_no_executions_yet(upserted, aws, run_cli):
    described = run_cli("pipeline", "describe", "--endpoint-url", aws.endpoint_url)
    assert described.returncode == 0, described.stderr
    out = described.stdout
    assert out.startswith("livetrain  Active  arn:aws:sagemaker:us-east-1:123456789012:pipeline/livetrain")
    assert "parameter InputManifestKey (String) (required)" in out
    assert "parameter MinPrecision (Float) = 0.4" in out and "parameter MinLift (Float) = 0.05" in out
    steps = [line.strip() for line in out.splitlines() if line.strip().startswith("step ")]
    assert [s.split()[1] for s in steps] == [
        "Preprocess", "TuneLinearLearner", "FitBaseline", "BestModel", "TransformTest", "FindChampion",
        "TransformChampion", "EvaluateBestModel", "CheckChampion", "CheckLift", "CheckBaseline", "CheckPrecision",
        "RegisterBestModel", "PrecisionTooLow", "WorseThanBaseline", "NoLiftOverBaseRate", "WorseThanChampion"]
    assert "          step RegisterBestModel (RegisterModel)" in out  # nested four checks deep

    listed = run_cli("pipeline", "executions", "--endpoint-url", aws.endpoint_url)
    assert listed.returncode == 0 and listed.stdout == ""
    assert "no executions of pipeline livetrain yet" in listed.stderr


@pytest.mark.parametrize("command", [["describe"], ["executions"], ["start", "--manifest-key", "k"]])
def test_unknown_pipeline_is_one_line_naming_the_call(aws, run_cli, command):
    result = run_cli("pipeline", *command, "--pipeline-name", "nope", "--endpoint-url", aws.endpoint_url)
    line = one_line_error(result)
    call = {"describe": "DescribePipeline", "executions": "ListPipelineExecutions",
            "start": "DescribePipeline"}[command[0]]  # start checks its parameters against the definition first
    assert line.startswith(f"livetrain: error: {call}: ")
    assert "nope" in line and "livetrain pipeline upsert" in line


def test_upsert_into_a_missing_bucket(aws, run_cli):
    line = one_line_error(run_cli("pipeline", "upsert", "--role-arn", ROLE, "--bucket", "no-such-bucket",
                                  "--endpoint-url", aws.endpoint_url))
    assert "S3 PutObject s3://no-such-bucket/livetrain/code/" in line
    assert "NoSuchBucket" in line and "create the bucket or pass --bucket" in line


def test_no_credentials_is_one_line(aws):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull, AWS_EC2_METADATA_DISABLED="true")
    livetrain = Path(sys.executable).parent / "livetrain"
    result = subprocess.run([str(livetrain), "pipeline", "describe", "--endpoint-url", aws.endpoint_url],
                            capture_output=True, text=True, env=env, timeout=120)
    line = one_line_error(result)
    assert line.startswith("livetrain: error: DescribePipeline: no AWS credentials found; configure them")
    assert "a local stack at --endpoint-url needs them too, any values will do" in line


@pytest.mark.parametrize(("args", "url"), [
    (["describe"], "not-a-url"), (["describe"], "http://"), (["run-local", "--definition", "d.json"], "not-a-url")])
def test_an_endpoint_url_that_is_not_a_url_is_one_line(run_cli, args, url):
    line = one_line_error(run_cli("pipeline", *args, "--endpoint-url", url))
    assert line == f"livetrain: error: --endpoint-url {url!r} is not a URL; pass one like http://127.0.0.1:5000"


@pytest.mark.parametrize(("args", "expected"), [
    (["--param", "MinPrecision=abc"], "parameter MinPrecision is Float; 'abc' is not a valid float"),
    (["--param", "Bogus=1"], "unknown parameter 'Bogus'; the definition declares InputBucket, InputManifestKey"),
    (["--manifest-key", "batches/none/batch.manifest"],
     "no batch manifest at s3://livetrain-data/batches/none/batch.manifest; pass the --manifest-key"),
    (["--param", "Epic=CS.D.OTHER.IP"], "Epic=CS.D.OTHER.IP but the batch batches/b1/batch.manifest is of epic b1"),
])
def test_start_checks_parameters_and_the_manifest_before_starting(upserted, aws, run_cli, args, expected):
    aws.client("s3").put_object(Bucket=BUCKET, Key="batches/b1/batch.manifest", Body=b"[]")
    result = run_cli("pipeline", "start", "--manifest-key", "batches/b1/batch.manifest", *args,
                     "--endpoint-url", aws.endpoint_url)
    assert expected in one_line_error(result)
    executions = aws.client("sagemaker").list_pipeline_executions(PipelineName="livetrain")
    assert executions["PipelineExecutionSummaries"] == []  # nothing started


def test_unreachable_endpoint_is_one_line(run_cli):
    line = one_line_error(run_cli("pipeline", "executions", "--endpoint-url", "http://127.0.0.1:9"))
    assert line.startswith("livetrain: error: ListPipelineExecutions: cannot connect to http://127.0.0.1:9")


@pytest.mark.parametrize(("args", "expected"), [
    (["upsert"], "no execution role: pass --role-arn arn:aws:iam::<account>:role/<name> or set LIVETRAIN_ROLE_ARN"),
    (["upsert", "--role-arn", "my-role"], "--role-arn 'my-role' is not an IAM role ARN"),
    (["upsert", "--role-arn", "arn:aws:iam::000000000000:role/livetrain-placeholder-pass-role-arn"],
     "the placeholder role exists in no account"),
    (["definition", "--max-jobs", "2", "--max-parallel-jobs", "3"], "--max-parallel-jobs 3 exceeds --max-jobs 2"),
    (["definition", "--output", "/nonexistent/dir/d.json"], "directory /nonexistent/dir does not exist"),
    (["run-local", "--definition", "tests"], "cannot read definition file tests (Is a directory)"),
])
def test_user_mistakes_are_one_line(run_cli, args, expected):
    line = one_line_error(run_cli("pipeline", *args))
    assert expected in line


@pytest.mark.parametrize(("args", "expected"), [
    (["definition", "--max-jobs", "0"], "--max-jobs: must be a positive whole number, not '0'"),
    (["start"], "the following arguments are required: --manifest-key"),
    (["start", "--manifest-key", "k", "--param", "MinPrecision"], "--param 'MinPrecision' must look like Name=Value"),
    ([], "the following arguments are required: SUBCOMMAND"),
])
def test_argument_errors_say_what_to_pass(run_cli, args, expected):
    result = run_cli("pipeline", *args)
    assert result.returncode == 2
    assert expected in result.stderr.strip().splitlines()[-1]


def test_role_from_the_environment_and_output_file(run_cli, tmp_path):
    target = tmp_path / "definition.json"
    result = run_cli("pipeline", "definition", "--output", target, env={"LIVETRAIN_ROLE_ARN": ROLE})
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and "placeholder" not in result.stderr
    assert json.loads(target.read_text())["Steps"][0]["Arguments"]["RoleArn"] == ROLE
    assert [p.name for p in tmp_path.iterdir()] == ["definition.json"]  # no temporary file left behind


@pytest.fixture(scope="session")
def clean_python(tmp_path_factory) -> Path:
    """A virtual environment with only numpy, pandas and scikit-learn (and what they require), this environment's
    copies linked into it: what SageMaker's scikit-learn image offers a processing script, and nothing else."""
    from importlib.metadata import distribution

    from packaging.requirements import Requirement

    venv = tmp_path_factory.mktemp("clean") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    (site_packages,) = venv.glob("lib/python*/site-packages")
    pending, linked = ["numpy", "pandas", "scikit-learn", "packaging"], set()
    while pending:
        dist = distribution(pending.pop())
        if dist.metadata["Name"].lower() in linked:
            continue
        linked.add(dist.metadata["Name"].lower())
        for top in {file.parts[0] for file in dist.files} - {"__pycache__", ".."}:
            if not (site_packages / top).exists():
                (site_packages / top).symlink_to(dist.locate_file(top))
        pending += [requirement.name for requirement in map(Requirement, dist.requires or [])
                    if requirement.marker is None or requirement.marker.evaluate({"extra": ""})]
    return venv / "bin" / "python"


def shipped_script(aws, step: str, destination: Path) -> Path:
    """Download what upsert uploaded for a processing step, as the container's code input; its entry script."""
    s3 = aws.client("s3")
    steps = {s["Name"]: s for s in json.loads(
        aws.client("sagemaker").describe_pipeline(PipelineName="livetrain")["PipelineDefinition"])["Steps"]}
    arguments = steps[step]["Arguments"]
    [code_uri] = [i["S3Input"]["S3Uri"] for i in arguments["ProcessingInputs"] if i["InputName"] == "code"]
    prefix = code_uri.removeprefix(f"s3://{BUCKET}/")
    for listed in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"]:
        path = destination / listed["Key"].removeprefix(prefix)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(s3.get_object(Bucket=BUCKET, Key=listed["Key"])["Body"].read())
    return destination / Path(arguments["AppSpecification"]["ContainerEntrypoint"][-1]).name


@pytest.mark.slow
def test_the_shipped_processing_code_runs_in_a_clean_environment(upserted, aws, make_batch, clean_python, tmp_path):
    """Each step's code as upsert uploaded it, run as the container would (nothing else on the path), writes
    what the repository's scripts write: Preprocess, then FitBaseline on its slices, then EvaluateBestModel
    with its shipped arch.bootstrap."""
    repository = Path(__file__).resolve().parents[1] / "processing"
    batch = make_batch(trades=3000)  # too short for a verdict (--min-test-windows 0 below): this test is about code

    def both(step: str, script: str, *arguments) -> tuple[Path, Path]:
        """Run the shipped script in the clean environment and the repository's here; their output folders."""
        shipped_out, repo_out = tmp_path / f"{step}-shipped", tmp_path / f"{step}-repo"
        for python, path, out in ((clean_python, shipped_script(aws, step, tmp_path / step), shipped_out),
                                  (sys.executable, repository / script, repo_out)):
            run = subprocess.run([str(python), "-E", "-s", str(path), *map(str, arguments), "--output-dir", str(out)],
                                 cwd=tmp_path, capture_output=True, text=True, timeout=600)
            assert run.returncode == 0, run.stderr
        return shipped_out, repo_out

    shipped, repo = both("Preprocess", "preprocess.py", "--input-dir", batch, "--min-test-windows", 0)
    expected = ["metadata/features.json", "metadata/rows.csv", "test/features/test_features-00000.csv",
                "test/test_trades.csv", "train/train-00000.csv", "validation/validation-00000.csv"]  # one shard
    assert sorted(str(p.relative_to(shipped)) for p in shipped.rglob("*") if p.is_file()) == expected
    for name in expected:
        assert (shipped / name).read_bytes() == (repo / name).read_bytes(), name
    from processing.batch_contract import feature_names

    train = (shipped / "train/train-00000.csv").read_text().splitlines()
    assert train and all(len(row.split(",")) == 1 + len(feature_names()) for row in train)
    assert {row.split(",")[0] for row in train} <= {"0", "1"}
    assert len((shipped / "test/features/test_features-00000.csv").read_text().splitlines()) + 1 == len(
        (shipped / "test/test_trades.csv").read_text().splitlines()) > 1

    slices = [f"--{name}-dir" if i == 0 else shipped / folder
              for name, folder in (("train", "train"), ("validation", "validation"), ("test", "test/features"))
              for i in (0, 1)]
    baseline_shipped, baseline_repo = both("FitBaseline", "baseline.py", *slices)
    predictions = (baseline_shipped / "test_features.csv.out").read_bytes()
    assert predictions == (baseline_repo / "test_features.csv.out").read_bytes()

    evaluated_shipped, evaluated_repo = both(
        "EvaluateBestModel", "evaluate.py", "--predictions-dir", baseline_shipped, "--test-dir", shipped / "test",
        "--metadata-dir", shipped / "metadata", "--champion-package-arn", "none")
    report = (evaluated_shipped / "evaluation.json").read_text()
    assert report == (evaluated_repo / "evaluation.json").read_text()
    assert json.loads(report)["interval"]["bootstrap"].startswith("circular block bootstrap")


def test_the_command_line_loads_without_aws_libraries():
    """`livetrain --help` and the streamer never pay for (or need) boto3 and the SageMaker SDK."""
    code = ("import sys, livetrain.cli; livetrain.cli.build_parser(); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'boto3', 'botocore', 'sagemaker'}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert result.stdout.strip() == "[]"
