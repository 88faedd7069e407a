"""The local engine on small hand-made definitions: expressions, parameters, DAG, branches, cache, retries, CLI.

Steps run for real: Processing steps run tiny scripts uploaded to moto's S3 (server mode).
The product's own definition is exercised end to end in test_local_pipeline_e2e.py.
"""

from __future__ import annotations

import json
import os
import textwrap
import threading
from pathlib import Path

import pytest

from livetrain.errors import UserError
from pipelines.local import engine, warm
from pipelines.local.engine import LocalExecution, plan_steps
from pipelines.local.errors import DefinitionError, ExpressionError, StepFailure
from pipelines.local.expressions import Resolver, parse_path, referenced_steps
from pipelines.local.records import STOP_FILE, ExecutionStore
from pipelines.local.steps import SUPPORTED_STEP_TYPES
from pipelines.local.steps.condition import evaluate
from pipelines.local.submissions import Submissions
from pipelines.parameters import resolve_parameters

BUCKET = "engine-test"
ARN = "arn:aws:sagemaker:us-east-1:123456789012:pipeline/engine-test"


# ---------------------------------------------------------------- helpers

def upload_script(aws, name: str, source: str) -> str:
    s3 = aws.client("s3")
    s3.create_bucket(Bucket=BUCKET) if BUCKET not in [b["Name"] for b in s3.list_buckets()["Buckets"]] else None
    s3.put_object(Bucket=BUCKET, Key=f"code/{name}.py", Body=textwrap.dedent(source).encode())
    return f"s3://{BUCKET}/code/{name}.py"


def processing_step(name: str, script_uri: str, *, arguments=(), inputs=(), outputs=(), environment=None,
                    **extra) -> dict:
    """A Processing step as the SDK writes it: the script is an input named `code`."""
    code = {"InputName": "code", "S3Input": {"S3Uri": script_uri, "LocalPath": "/opt/ml/processing/input/code",
                                              "S3DataType": "S3Prefix", "S3InputMode": "File"}}
    script = "/opt/ml/processing/input/code/" + script_uri.rsplit("/", 1)[-1]
    return {"Name": name, "Type": "Processing", "Arguments": {
        "AppSpecification": {"ImageUri": "local", "ContainerEntrypoint": ["python3", script],
                             "ContainerArguments": list(arguments)},
        "ProcessingResources": {"ClusterConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1,
                                                  "VolumeSizeInGB": 30}},
        "RoleArn": "arn:aws:iam::123456789012:role/x",
        "ProcessingInputs": [*inputs, code],
        "ProcessingOutputConfig": {"Outputs": list(outputs)},
        "Environment": environment or {}}, **extra}


def output(name: str, uri, local: str) -> dict:
    return {"OutputName": name, "S3Output": {"S3Uri": uri, "LocalPath": local, "S3UploadMode": "EndOfJob"}}


def s3_input(name: str, uri, local: str, data_type: str = "S3Prefix") -> dict:
    return {"InputName": name, "S3Input": {"S3Uri": uri, "LocalPath": local, "S3DataType": data_type,
                                           "S3InputMode": "File"}}


def run_definition(aws, tmp_path, definition: dict, overrides=None, progress=None) -> dict:
    parameters = resolve_parameters(definition, overrides or {})
    execution = LocalExecution(definition, parameters, s3=aws.client("s3"), sagemaker=aws.client("sagemaker"),
                               state_dir=tmp_path / "state", pipeline_name="engine-test", pipeline_arn=ARN,
                               progress=progress or (lambda line: None))
    return execution.run()


def per_execution(path: str) -> dict:
    """s3://BUCKET/runs/<execution id>/<path>."""
    return {"Std:Join": {"On": "/", "Values": [f"s3://{BUCKET}/runs", {"Get": "Execution.PipelineExecutionId"},
                                                path]}}


# ---------------------------------------------------------------- expressions

def test_property_paths_parse_names_indexes_and_quoted_keys():
    assert parse_path("ProcessingOutputConfig.Outputs['train'].S3Output.S3Uri") == [
        "ProcessingOutputConfig", "Outputs", "train", "S3Output", "S3Uri"]
    assert parse_path('TrainingJobSummaries[0].TrainingJobName') == ["TrainingJobSummaries", 0, "TrainingJobName"]
    assert parse_path("confusion_matrix.0.1") == ["confusion_matrix", "0", "1"]
    with pytest.raises(ExpressionError, match="cannot read path"):
        parse_path("a..b[")


def test_resolver_reads_parameters_execution_variables_step_properties_joins_and_json_gets():
    properties = {
        "Pre": {"ProcessingOutputConfig": {"Outputs": [
            {"OutputName": "train", "S3Output": {"S3Uri": "s3://b/train"}},
            {"OutputName": "test", "S3Output": {"S3Uri": "s3://b/test"}}]}},
        "Tune": {"TrainingJobSummaries": [{"TrainingJobName": "best"}, {"TrainingJobName": "second"}],
                 "BestTrainingJob": {"FinalHyperParameterTuningJobObjectiveMetric": {"Value": 0.7}}},
        "Eval": {"PropertyFiles": {"Report": {"m": {"precision": {"value": 0.61}}, "list": [3, 4]}}},
    }

    def step_properties(name):
        if name not in properties:
            raise ExpressionError(f"step {name} has not succeeded")
        return properties[name]

    resolver = Resolver({"Bucket": "b", "MinPrecision": 0.6, "Flag": True},
                        {"PipelineExecutionId": "abc123", "PipelineName": "p"}, step_properties)
    report = {"Get": "Steps.Eval.PropertyFiles.Report"}
    value = resolver.resolve({
        "uri": {"Std:Join": {"On": "/", "Values": ["s3:/", {"Get": "Parameters.Bucket"},
                                                    {"Get": "Execution.PipelineExecutionId"}, "x"]}},
        "test": {"Get": "Steps.Pre.ProcessingOutputConfig.Outputs['test'].S3Output.S3Uri"},
        "model": {"Std:Join": {"On": "/", "Values": ["s3://b/out",
                                                      {"Get": "Steps.Tune.TrainingJobSummaries[0].TrainingJobName"},
                                                      "output/model.tar.gz"]}},
        "objective": {"Get": "Steps.Tune.BestTrainingJob.FinalHyperParameterTuningJobObjectiveMetric.Value"},
        "precision": {"Std:JsonGet": {"PropertyFile": report, "Path": "m.precision.value"}},
        "second": {"Std:JsonGet": {"PropertyFile": report, "Path": "list[1]"}},
        "message": {"Std:Join": {"On": " ", "Values": [
            "precision", {"Std:JsonGet": {"PropertyFile": report, "Path": "m.precision.value"}},
            "<", {"Get": "Parameters.MinPrecision"}, {"Get": "Parameters.Flag"}]}},
        "literal": [1, "two", {"Key": "v"}],
    })
    assert value == {"uri": "s3://b/abc123/x", "test": "s3://b/test", "model": "s3://b/out/best/output/model.tar.gz",
                     "objective": 0.7, "precision": 0.61, "second": 4, "message": "precision 0.61 < 0.6 true",
                     "literal": [1, "two", {"Key": "v"}]}
    assert resolver.resolve({"Get": "Execution.CurrentDateTime"}).endswith("Z")
    for bad, message in [({"Get": "Parameters.Nope"}, "no parameter 'Nope'"),
                         ({"Get": "Execution.Nope"}, "unknown execution variable"),
                         ({"Get": "Steps.Later.X"}, "has not succeeded"),
                         ({"Get": "Steps.Tune.TrainingJobSummaries[5].TrainingJobName"}, "nothing at 5"),
                         ({"Std:JsonGet": {"PropertyFile": report, "Path": "m.recall.value"}}, "nothing at 'recall'")]:
        with pytest.raises(ExpressionError, match=message):
            resolver.resolve(bad)


def test_referenced_steps_are_the_data_dependencies():
    arguments = {"a": {"Get": "Steps.Pre.X"}, "b": [{"Std:Join": {"On": "", "Values": [{"Get": "Steps.Tune.Y"}]}}],
                 "c": {"Std:JsonGet": {"PropertyFile": {"Get": "Steps.Eval.PropertyFiles.R"}, "Path": "p"}},
                 "d": {"Get": "Parameters.Steps"}}
    assert referenced_steps(arguments) == {"Pre", "Tune", "Eval"}


# ---------------------------------------------------------------- conditions

@pytest.mark.parametrize(("kind", "left", "right", "expected"), [
    ("GreaterThanOrEqualTo", 0.6, 0.6, True), ("GreaterThanOrEqualTo", 0.59, 0.6, False),
    ("GreaterThan", 0.6, 0.6, False), ("GreaterThan", 2, 1.5, True),
    ("LessThan", 0.1, 0.2, True), ("LessThan", 0.2, 0.2, False),
    ("LessThanOrEqualTo", 0.2, 0.2, True), ("LessThanOrEqualTo", 0.3, 0.2, False),
    ("Equals", "Approved", "Approved", True), ("Equals", 1, "1", False), ("Equals", 1, 1.0, True),
])
def test_binary_conditions(kind, left, right, expected):
    assert evaluate({"Type": kind, "LeftValue": left, "RightValue": right}, log=lambda _: None) is expected


def test_in_not_and_or_conditions():
    true = {"Type": "Equals", "LeftValue": 1, "RightValue": 1}
    false = {"Type": "Equals", "LeftValue": 1, "RightValue": 2}
    quiet = {"log": lambda _: None}
    assert evaluate({"Type": "In", "QueryValue": "b", "Values": ["a", "b"]}, **quiet) is True
    assert evaluate({"Type": "In", "QueryValue": "c", "Values": ["a", "b"]}, **quiet) is False
    assert evaluate({"Type": "Not", "Condition": false}, **quiet) is True
    assert evaluate({"Type": "Not", "Condition": true}, **quiet) is False
    assert evaluate({"Type": "Or", "Conditions": [false, true]}, **quiet) is True
    assert evaluate({"Type": "Or", "Conditions": [false, false]}, **quiet) is False
    with pytest.raises(StepFailure, match="cannot compare 'high'"):
        evaluate({"Type": "GreaterThan", "LeftValue": "high", "RightValue": 0.5}, **quiet)
    with pytest.raises(StepFailure, match="unknown condition type 'Xor'"):
        evaluate({"Type": "Xor"}, **quiet)


# ---------------------------------------------------------------- parameters and plan

DEFINITION_PARAMETERS = {"Version": "2020-12-01", "Steps": [], "Parameters": [
    {"Name": "Bucket", "Type": "String", "DefaultValue": "b"},
    {"Name": "MinPrecision", "Type": "Float", "DefaultValue": 0.6},
    {"Name": "MaxJobs", "Type": "Integer", "DefaultValue": 4},
    {"Name": "Strict", "Type": "Boolean", "DefaultValue": False}]}


def test_parameter_overrides_take_the_declared_type():
    assert resolve_parameters(DEFINITION_PARAMETERS, {"MinPrecision": "0.75", "MaxJobs": "2", "Strict": "TRUE"}) == {
        "Bucket": "b", "MinPrecision": 0.75, "MaxJobs": 2, "Strict": True}


@pytest.mark.parametrize(("overrides", "message"), [
    ({"MinPrecison": "0.7"}, "unknown parameter 'MinPrecison'; the definition declares Bucket, MinPrecision"),
    ({"MinPrecision": "high"}, "parameter MinPrecision is Float; 'high' is not a valid float"),
    ({"MaxJobs": "2.5"}, "parameter MaxJobs is Integer"),
    ({"Strict": "yes"}, "parameter Strict is Boolean"),
])
def test_bad_parameter_overrides_are_one_line_errors(overrides, message):
    with pytest.raises(UserError, match=message) as caught:
        resolve_parameters(DEFINITION_PARAMETERS, overrides)
    assert "\n" not in str(caught.value)


def test_plan_flattens_branches_and_rejects_what_it_cannot_run():
    definition = {"Steps": [
        {"Name": "A", "Type": "Processing", "Arguments": {}},
        {"Name": "B", "Type": "Processing", "Arguments": {"x": {"Get": "Steps.A.Y"}}, "DependsOn": []},
        {"Name": "C", "Type": "Condition", "Arguments": {
            "Conditions": [{"Type": "Equals", "LeftValue": {"Get": "Steps.B.Z"}, "RightValue": 1}],
            "IfSteps": [{"Name": "D", "Type": "Fail", "Arguments": {}}],
            "ElseSteps": [{"Name": "E", "Type": "RegisterModel", "Arguments": {"m": {"Get": "Steps.A.M"}}}]}}]}
    plans = plan_steps(definition)
    assert {n: (sorted(p.upstream), p.branch) for n, p in plans.items()} == {
        "A": ([], None), "B": (["A"], None), "C": (["B"], None), "D": (["C"], ("C", True)),
        "E": (["A", "C"], ("C", False))}

    with pytest.raises(DefinitionError, match="lacks"):
        plan_steps({"Steps": [{"Name": "A", "Type": "Fail", "DependsOn": ["Ghost"]}]})
    with pytest.raises(DefinitionError, match="cycle"):
        plan_steps({"Steps": [{"Name": "A", "Type": "Fail", "DependsOn": ["B"]},
                              {"Name": "B", "Type": "Fail", "DependsOn": ["A"]}]})


def test_job_names_are_valid_and_unique_per_execution():
    assert engine.job_name("TuneLinearLearner", "abcdefghijkl", "Tuning") == "TuneLinearLearner-abcdefghijkl"
    assert engine.job_name("TuneTheLinearLearner", "abcdefghijkl", "Tuning") == "TuneTheLinearLearne-abcdefghijkl"
    assert len(engine.job_name("X" * 80, "abcdefghijkl", "Model")) == 63
    assert engine.job_name("Evaluate_Best.Model", "abc", "Processing") == "Evaluate-Best-Model-abc"


def test_retry_delay_follows_the_policy():
    policies = [{"ExceptionType": ["SageMaker.JOB_INTERNAL_ERROR"], "IntervalSeconds": 2, "BackoffRate": 3.0,
                 "MaxAttempts": 2}]
    assert engine.retry_delay(policies, "SageMaker.JOB_INTERNAL_ERROR", 1, 0.0) == 2
    assert engine.retry_delay(policies, "SageMaker.JOB_INTERNAL_ERROR", 2, 0.0) == 6
    assert engine.retry_delay(policies, "SageMaker.JOB_INTERNAL_ERROR", 3, 0.0) is None
    assert engine.retry_delay(policies, "Step.THROTTLING", 1, 0.0) is None
    assert engine.retry_delay(policies, None, 1, 0.0) is None
    expiring = [{"ExceptionType": ["Step.SERVICE_FAULT"], "ExpireAfterMin": 1}]
    assert engine.retry_delay(expiring, "Step.SERVICE_FAULT", 7, 59.0) == 64
    assert engine.retry_delay(expiring, "Step.SERVICE_FAULT", 7, 61.0) is None


# ---------------------------------------------------------------- executions against moto

WRITE_SCRIPT = """
    import pathlib, sys
    out = pathlib.Path(sys.argv[sys.argv.index("--out") + 1])
    (out / "result.json").write_text('{"value": %s}' % sys.argv[sys.argv.index("--value") + 1])
"""


def test_unsupported_step_type_fails_the_execution_at_once(aws, tmp_path):
    definition = {"Steps": [{"Name": "Train", "Type": "Training", "Arguments": {}},
                            {"Name": "Stop", "Type": "Fail", "Arguments": {"ErrorMessage": "x"}}]}
    record = run_definition(aws, tmp_path, definition)
    assert record["PipelineExecutionStatus"] == "Failed"
    assert record["FailureReason"] == (f"local mode cannot run step Train (Training); it runs "
                                       f"{', '.join(SUPPORTED_STEP_TYPES)}")
    assert record["Steps"] == {}


def test_processing_json_get_condition_and_fail_step(aws, tmp_path):
    """A PropertyFile is read from S3; the untaken branch does not run; the Fail message is the reason."""
    script = upload_script(aws, "write", WRITE_SCRIPT)
    report = {"Get": "Steps.Measure.PropertyFiles.Result"}
    value = {"Std:JsonGet": {"PropertyFile": report, "Path": "value"}}
    definition = {
        "Parameters": [{"Name": "Threshold", "Type": "Float", "DefaultValue": 0.5}],
        "Steps": [
            processing_step("Measure", script, arguments=["--out", "/opt/ml/processing/result", "--value", "0.41"],
                            outputs=[output("result", per_execution("result"), "/opt/ml/processing/result")],
                            PropertyFiles=[{"PropertyFileName": "Result", "OutputName": "result",
                                            "FilePath": "result.json"}]),
            {"Name": "Check", "Type": "Condition", "Arguments": {
                "Conditions": [{"Type": "GreaterThanOrEqualTo", "LeftValue": value,
                                "RightValue": {"Get": "Parameters.Threshold"}}],
                "IfSteps": [processing_step("Celebrate", script, arguments=["--out", "/opt/ml/processing/o",
                                                                           "--value", "1"],
                                            outputs=[output("o", per_execution("o"), "/opt/ml/processing/o")])],
                "ElseSteps": [{"Name": "TooLow", "Type": "Fail", "Arguments": {"ErrorMessage": {"Std:Join": {
                    "On": " ", "Values": ["value", value, "<", {"Get": "Parameters.Threshold"}]}}}}]}}]}
    lines = []
    record = run_definition(aws, tmp_path, definition, progress=lines.append)
    steps = record["Steps"]
    assert record["PipelineExecutionStatus"] == "Failed"
    assert record["FailureReason"] == "value 0.41 < 0.5"
    assert steps["Measure"]["StepStatus"] == "Succeeded"
    assert steps["Measure"]["Properties"]["PropertyFiles"] == {"Result": {"value": 0.41}}
    assert steps["Check"]["Properties"] == {"Outcome": False}
    assert steps["Celebrate"]["StepStatus"] == "NotExecuted"
    assert steps["TooLow"]["StepStatus"] == "Failed"
    key = f"runs/{record['PipelineExecutionId']}/result/result.json"
    assert json.loads(aws.client("s3").get_object(Bucket=BUCKET, Key=key)["Body"].read()) == {"value": 0.41}
    assert ExecutionStore(tmp_path / "state").load(record["PipelineExecutionArn"]) == record
    assert any("Measure: Succeeded" in line for line in lines)

    passed = run_definition(aws, tmp_path, definition, {"Threshold": "0.4"})
    assert passed["PipelineExecutionStatus"] == "Succeeded", passed["FailureReason"]
    assert passed["Steps"]["Celebrate"]["StepStatus"] == "Succeeded"
    assert passed["Steps"]["TooLow"]["StepStatus"] == "NotExecuted"


def test_manifest_input_and_script_failure_reason(aws, tmp_path):
    s3 = aws.client("s3")
    script = upload_script(aws, "check", """
        import pathlib, sys
        root = pathlib.Path(sys.argv[1])
        names = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
        print("found", names)
        if names != ["a.csv", "sub/b.csv"]:
            sys.exit(f"unexpected files {names}")
        print("about to fail", file=sys.stderr)
        sys.exit("check.py: error: batch is broken: transactions.csv has no rows")
    """)
    for key in ("data/a.csv", "data/sub/b.csv", "data/ignored.csv"):
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"1\n")
    s3.put_object(Bucket=BUCKET, Key="data/in.manifest",
                  Body=json.dumps([{"prefix": f"s3://{BUCKET}/data/"}, "a.csv", "sub/b.csv"]).encode())
    definition = {"Steps": [processing_step(
        "Check", script, arguments=["/opt/ml/processing/input/batch"],
        inputs=[s3_input("batch", f"s3://{BUCKET}/data/in.manifest", "/opt/ml/processing/input/batch",
                         "ManifestFile")])]}
    record = run_definition(aws, tmp_path, definition)
    step = record["Steps"]["Check"]
    assert step["FailureReason"] == "check.py: error: batch is broken: transactions.csv has no rows"
    assert record["FailureReason"] == f"step Check failed: {step['FailureReason']}"
    log = Path(step["LogFile"]).read_text()
    assert "found ['a.csv', 'sub/b.csv']" in log and "about to fail" in log



def test_a_job_of_several_instances_runs_each_on_its_share_of_a_sharded_input(aws, tmp_path):
    s3 = aws.client("s3")
    script = upload_script(aws, "share", """
        import os, pathlib, sys
        shards = sorted(p.name for p in pathlib.Path(sys.argv[1]).iterdir())
        common = sorted(p.name for p in pathlib.Path(sys.argv[2]).iterdir())
        out = pathlib.Path(sys.argv[3])
        for name in shards:  # one output per shard: the instances' outputs land side by side
            (out / f"{name}.seen").write_text(f"pid {os.getpid()} with {common}\\n")
        (out / "same.txt").write_text("every instance writes this\\n")
        print(f"shards {shards}", file=sys.stderr)
    """)
    for number in range(5):
        s3.put_object(Bucket=BUCKET, Key=f"shards/part-{number}.csv", Body=b"1\n")
    s3.put_object(Bucket=BUCKET, Key="common/all.json", Body=b"{}")
    s3.put_object(Bucket=BUCKET, Key="shards.manifest", Body=json.dumps(
        [{"prefix": f"s3://{BUCKET}/shards/"}, *(f"part-{number}.csv" for number in range(5))]).encode())
    sharded = s3_input("shards", f"s3://{BUCKET}/shards.manifest", "/opt/ml/processing/input/shards", "ManifestFile")
    sharded["S3Input"]["S3DataDistributionType"] = "ShardedByS3Key"
    step = processing_step(
        "Share", script, arguments=["/opt/ml/processing/input/shards", "/opt/ml/processing/input/common",
                                    "/opt/ml/processing/output"],
        inputs=[sharded, s3_input("common", f"s3://{BUCKET}/common/", "/opt/ml/processing/input/common")],
        outputs=[output("seen", per_execution("seen"), "/opt/ml/processing/output")])
    step["Arguments"]["ProcessingResources"]["ClusterConfig"]["InstanceCount"] = {"Get": "Parameters.Instances"}
    definition = {"Parameters": [{"Name": "Instances", "Type": "Integer", "DefaultValue": 2}], "Steps": [step]}
    record = run_definition(aws, tmp_path, definition, {"Instances": "3"})
    assert record["PipelineExecutionStatus"] == "Succeeded", record.get("FailureReason")
    prefix = f"runs/{record['PipelineExecutionId']}/seen/"
    objects = {item["Key"].removeprefix(prefix): s3.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read().decode()
               for item in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"]}
    assert sorted(objects) == [*(f"part-{number}.csv.seen" for number in range(5)), "same.txt"]  # each shard once
    pids = {text.split()[1] for name, text in objects.items() if name.endswith(".seen")}
    assert len(pids) == 3 and all("with ['all.json']" in text for text in objects.values() if "pid" in text)
    log = Path(record["Steps"]["Share"]["LogFile"]).read_text()
    for host, shards in (("algo-1", "['part-0.csv', 'part-3.csv']"), ("algo-2", "['part-1.csv', 'part-4.csv']"),
                         ("algo-3", "['part-2.csv']")):
        assert f"{host}: shards {shards}" in log


def test_a_jobs_log_keeps_its_last_bytes_once_it_ends(aws, tmp_path, monkeypatch):
    monkeypatch.setattr(engine, "LOG_KEEP_BYTES", 2000)
    script = upload_script(aws, "chatty", """
        for i in range(1000):
            print(f"line {i}")
    """)
    record = run_definition(aws, tmp_path, {"Steps": [processing_step("Chat", script)]})
    log = Path(record["Steps"]["Chat"]["LogFile"]).read_bytes()
    assert log.startswith(b"... (earlier lines left out)\n") and log.endswith(b"line 999\n")
    assert b"line 0\n" not in log and len(log) < 2100


@pytest.mark.parametrize("served", [True, False], ids=["fork server serving", "before it serves"])
def test_a_processing_script_sees_what_python_script_would_show_it_warm_or_not(aws, tmp_path, monkeypatch, served):
    """Processing scripts run in children of the engine's fork server (pipelines/local/warm.py) once it serves,
    the image's libraries imported already; before, as subprocesses. Either way the script sees its command,
    directory, environment and temporary folder as `python3 script args` shows them, none of the engine's, and
    each job is a process of its own."""
    warm.start()
    if served:
        assert warm.ready.wait(60)
    else:
        monkeypatch.setattr(warm, "ready", threading.Event())  # not serving yet
    probe = upload_script(aws, "probe", """
        import json, multiprocessing, os, pathlib, sys, tempfile
        import xml.dom.minidom  # imported here, not preloaded: the next job must not see it
        child = multiprocessing.Process(target=os.getpid)  # the script may start processes of its own
        child.start()
        child.join()
        print("to stdout")
        print("to stderr", file=sys.stderr)
        (pathlib.Path(sys.argv[1]) / "probe.json").write_text(json.dumps({
            "argv": sys.argv, "path": sys.path[0], "cwd": os.getcwd(), "environment": dict(os.environ),
            "tmp": tempfile.gettempdir(), "name": __name__, "pid": os.getpid(), "child": child.exitcode,
            "warm": all(name in sys.modules for name in ("pandas", "scipy.stats", "sklearn.linear_model"))}))
    """)
    after = upload_script(aws, "after", """
        import sys
        sys.exit("the first job's import is here" if "xml.dom.minidom" in sys.modules else 0)
    """)
    out = "/opt/ml/processing/out"
    definition = {"Steps": [
        processing_step("Probe", probe, arguments=[out], environment={"MINE": "1"},
                        outputs=[output("out", per_execution("out"), out)]),
        {**processing_step("After", after), "DependsOn": ["Probe"]}]}
    record = run_definition(aws, tmp_path, definition)
    assert record["PipelineExecutionStatus"] == "Succeeded", record["FailureReason"]
    found = json.loads(aws.client("s3").get_object(
        Bucket=BUCKET, Key=f"runs/{record['PipelineExecutionId']}/out/probe.json")["Body"].read())
    sandbox = Path(found["cwd"]) / "opt/ml/processing"
    assert found["argv"] == [str(sandbox / "input/code/probe.py"), str(sandbox / "out")]
    assert found["path"] == str(sandbox / "input/code") and found["name"] == "__main__"
    assert found["environment"] == {"PATH": os.environ["PATH"], "HOME": found["cwd"], "TMPDIR": found["tmp"],
                                    "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1", "MINE": "1"}
    assert found["tmp"] == str(Path(found["cwd"]) / "tmp")
    log = Path(record["Steps"]["Probe"]["LogFile"]).read_text()
    assert found["warm"] == served and found["child"] == 0 and found["pid"] != os.getpid(), log
    assert "to stdout" in log and "to stderr" in log


@pytest.mark.parametrize("served", [True, False], ids=["fork server serving", "before it serves"])
def test_a_processing_scripts_exit_handlers_run_and_its_exit_code_stands(aws, tmp_path, monkeypatch, served):
    """As when Python ends: the script's atexit handlers run, then its exit code is the job's (the fork server's
    own quick exit, pipelines/local/forkserver_exit.py, is not inherited by its children)."""
    warm.start()
    if served:
        assert warm.ready.wait(60)
    else:
        monkeypatch.setattr(warm, "ready", threading.Event())
    script = upload_script(aws, "leaving", """
        import atexit, sys
        atexit.register(print, "exit handler ran")
        sys.exit(3)
    """)
    record = run_definition(aws, tmp_path, {"Steps": [processing_step("Leave", script)]})
    assert record["PipelineExecutionStatus"] == "Failed"
    assert "exited with code 3" in record["FailureReason"], record["FailureReason"]
    assert "exit handler ran" in Path(record["Steps"]["Leave"]["LogFile"]).read_text()


PARALLEL_SCRIPT = """
    import os, pathlib, sys, time
    me, other = sys.argv[1], sys.argv[2]
    shared = pathlib.Path(os.environ["SHARED_DIR"])
    (shared / f"{me}.started").touch()
    deadline = time.monotonic() + 30
    while not (shared / f"{other}.started").exists():
        if time.monotonic() > deadline:
            sys.exit(f"{other} never started while {me} ran: steps ran one after the other")
        time.sleep(0.05)
    (pathlib.Path(sys.argv[3]) / "who.txt").write_text(me)
"""


def test_independent_steps_run_in_parallel_and_dependents_wait(aws, tmp_path):
    """A and B each wait for the other to start (so they must overlap); C reads both outputs."""
    script = upload_script(aws, "parallel", PARALLEL_SCRIPT)
    shared = tmp_path / "shared"
    shared.mkdir()
    both = [processing_step(name, script, arguments=[name, other, "/opt/ml/processing/out"],
                            environment={"SHARED_DIR": str(shared)},
                            outputs=[output("out", per_execution(name), "/opt/ml/processing/out")])
            for name, other in (("A", "B"), ("B", "A"))]
    join = upload_script(aws, "join", """
        import pathlib, sys
        root = pathlib.Path(sys.argv[1])
        assert (root / "a" / "who.txt").read_text() == "A" and (root / "b" / "who.txt").read_text() == "B"
    """)
    reads = [s3_input(n.lower(), {"Get": f"Steps.{n}.ProcessingOutputConfig.Outputs['out'].S3Output.S3Uri"},
                      f"/opt/ml/processing/input/{n.lower()}") for n in ("A", "B")]
    definition = {"Steps": [processing_step("C", join, arguments=["/opt/ml/processing/input"], inputs=reads), *both]}
    record = run_definition(aws, tmp_path, definition)
    assert record["PipelineExecutionStatus"] == "Succeeded", record["FailureReason"]
    steps = record["Steps"]
    assert steps["C"]["StartTime"] >= max(steps["A"]["EndTime"], steps["B"]["EndTime"])
    assert steps["C"]["Upstream"] == ["A", "B"]


COUNTING_SCRIPT = """
    import os, pathlib, signal, sys
    counter = pathlib.Path(os.environ["COUNTER"])
    runs = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(runs))
    if runs <= int(os.environ.get("CRASHES", "0")):
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get("EXIT"):
        sys.exit(os.environ["EXIT"])
    (pathlib.Path(sys.argv[1]) / "runs.txt").write_text(str(runs))
"""


def counting_definition(aws, tmp_path, *, environment=None, **extra) -> dict:
    script = upload_script(aws, "counting", COUNTING_SCRIPT)
    return {"Steps": [processing_step(
        "Count", script, arguments=["/opt/ml/processing/out"],
        environment={"COUNTER": str(tmp_path / "counter"), **(environment or {})},
        outputs=[output("out", f"s3://{BUCKET}/count", "/opt/ml/processing/out")], **extra)]}


def runs(tmp_path) -> int:
    return int((tmp_path / "counter").read_text())


def test_cache_hit_reuses_a_successful_step_until_it_expires(aws, tmp_path):
    definition = counting_definition(aws, tmp_path, CacheConfig={"Enabled": True, "ExpireAfter": "P30D"})
    first = run_definition(aws, tmp_path, definition)
    second = run_definition(aws, tmp_path, definition)
    assert first["PipelineExecutionStatus"] == second["PipelineExecutionStatus"] == "Succeeded"
    assert runs(tmp_path) == 1
    assert "CacheHitResult" not in first["Steps"]["Count"]
    assert second["Steps"]["Count"]["CacheHitResult"]["SourcePipelineExecutionArn"] == first["PipelineExecutionArn"]
    assert second["Steps"]["Count"]["Properties"] == first["Steps"]["Count"]["Properties"]

    changed = counting_definition(aws, tmp_path, environment={"OTHER": "1"},
                                  CacheConfig={"Enabled": True, "ExpireAfter": "P30D"})
    run_definition(aws, tmp_path, changed)
    assert runs(tmp_path) == 2  # other arguments, other key
    expired = counting_definition(aws, tmp_path, CacheConfig={"Enabled": True, "ExpireAfter": "PT0S"})
    run_definition(aws, tmp_path, expired)
    assert runs(tmp_path) == 3
    disabled = counting_definition(aws, tmp_path, CacheConfig={"Enabled": False})
    run_definition(aws, tmp_path, disabled)
    assert runs(tmp_path) == 4
    bad = counting_definition(aws, tmp_path, CacheConfig={"Enabled": True, "ExpireAfter": "thirty days"})
    assert "not an ISO-8601 duration" in run_definition(aws, tmp_path, bad)["FailureReason"]


RETRY_INTERNAL = [{"ExceptionType": ["SageMaker.JOB_INTERNAL_ERROR"], "IntervalSeconds": 0, "BackoffRate": 1.0,
                   "MaxAttempts": 2}]


def test_retry_policy_retries_a_job_internal_error(aws, tmp_path):
    definition = counting_definition(aws, tmp_path, environment={"CRASHES": "2"}, RetryPolicies=RETRY_INTERNAL)
    lines = []
    record = run_definition(aws, tmp_path, definition, progress=lines.append)
    assert record["PipelineExecutionStatus"] == "Succeeded", record["FailureReason"]
    assert record["Steps"]["Count"]["AttemptCount"] == 3
    assert sum("retrying" in line for line in lines) == 2
    body = aws.client("s3").get_object(Bucket=BUCKET, Key="count/runs.txt")["Body"].read()
    assert body == b"3"


def test_retries_stop_at_max_attempts_and_skip_other_failures(aws, tmp_path):
    crashing = counting_definition(aws, tmp_path, environment={"CRASHES": "9"}, RetryPolicies=RETRY_INTERNAL)
    record = run_definition(aws, tmp_path, crashing)
    assert record["Steps"]["Count"]["AttemptCount"] == 3
    assert record["Steps"]["Count"]["FailureReason"] == "the job's process was killed by SIGKILL"

    (tmp_path / "counter").unlink()
    no_policy = counting_definition(aws, tmp_path, environment={"CRASHES": "1"})
    assert run_definition(aws, tmp_path, no_policy)["Steps"]["Count"]["AttemptCount"] == 1

    script_error = counting_definition(aws, tmp_path, environment={"EXIT": "bad input"}, RetryPolicies=RETRY_INTERNAL)
    record = run_definition(aws, tmp_path, script_error)
    assert record["Steps"]["Count"]["AttemptCount"] == 1
    assert record["Steps"]["Count"]["FailureReason"] == "bad input"


STOP_SCRIPT = """
    import pathlib, sys
    pathlib.Path(sys.argv[1]).touch()  # StopPipelineExecution while this step runs (what the API writes)
"""


def test_a_stop_lets_the_running_step_finish_and_starts_nothing_after_it(aws, tmp_path):
    stop_file = {"Std:Join": {"On": "/", "Values": [str(tmp_path / "state" / "executions"),
                                                    {"Get": "Execution.PipelineExecutionId"}, STOP_FILE]}}
    definition = {"Steps": [processing_step("Hold", upload_script(aws, "stop", STOP_SCRIPT), arguments=[stop_file]),
                            {"Name": "After", "Type": "Fail", "Arguments": {"ErrorMessage": "ran"},
                             "DependsOn": ["Hold"]}]}
    record = run_definition(aws, tmp_path, definition)
    assert (record["PipelineExecutionStatus"], record["FailureReason"]) == ("Stopped", None)
    assert record["Steps"]["Hold"]["StepStatus"] == "Succeeded"
    assert (record["Steps"]["After"]["StepStatus"], record["Steps"]["After"]["Reason"]) == \
        ("NotExecuted", "the execution was stopped")


def test_a_retried_execution_runs_again_from_the_failed_step(aws, tmp_path):
    """RetryPipelineExecution: the succeeded step is reused (it does not run again), the failed one runs."""
    check = upload_script(aws, "check-ready", """
        import os, pathlib, sys
        if not pathlib.Path(os.environ["READY"]).exists():
            sys.exit("not ready")
    """)
    definition = counting_definition(aws, tmp_path)
    definition["Steps"].append(processing_step("Check", check, environment={"READY": str(tmp_path / "ready")},
                                               DependsOn=["Count"]))
    failed = run_definition(aws, tmp_path, definition)
    assert (failed["PipelineExecutionStatus"], failed["FailureReason"]) == ("Failed", "step Check failed: not ready")

    (tmp_path / "ready").touch()
    Submissions(tmp_path / "state").retry(failed["PipelineExecutionId"])
    retried = LocalExecution(definition, resolve_parameters(definition, {}), s3=aws.client("s3"),
                             sagemaker=aws.client("sagemaker"), state_dir=tmp_path / "state",
                             pipeline_name="engine-test", pipeline_arn=ARN, progress=lambda line: None,
                             execution_id=failed["PipelineExecutionId"]).run()
    assert retried["PipelineExecutionStatus"] == "Succeeded", retried["FailureReason"]
    assert runs(tmp_path) == 1
    assert retried["Steps"]["Count"] == failed["Steps"]["Count"]
    assert retried["Steps"]["Check"]["StepStatus"] == "Succeeded"


# ---------------------------------------------------------------- CLI

def test_cli_exit_codes_and_listing(aws, tmp_path, run_cli):
    script = upload_script(aws, "write", WRITE_SCRIPT)
    definition = {"Parameters": [{"Name": "Value", "Type": "Float", "DefaultValue": 1.0}], "Steps": [
        processing_step("Write", script, arguments=["--out", "/opt/ml/processing/o",
                                                    "--value", {"Get": "Parameters.Value"}],
                        outputs=[output("o", per_execution("o"), "/opt/ml/processing/o")]),
        {"Name": "Check", "Type": "Condition", "Arguments": {
            "Conditions": [{"Type": "GreaterThan", "LeftValue": {"Get": "Parameters.Value"}, "RightValue": 0}],
            "IfSteps": [], "ElseSteps": [{"Name": "Negative", "Type": "Fail",
                                          "Arguments": {"ErrorMessage": "value is not positive"}}]}}]}
    path = tmp_path / "definition.json"
    path.write_text(json.dumps(definition))
    common = ["--definition", path, "--endpoint-url", aws.endpoint_url, "--state-dir", tmp_path / "state"]

    ok = run_cli("pipeline", "run-local", *common)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip().splitlines()[-1].startswith("Execution ")
    assert " Succeeded in " in ok.stdout
    assert "Write: started (Processing)" in ok.stderr and "Check: Succeeded" in ok.stderr

    failed = run_cli("pipeline", "run-local", *common, "--param", "Value=-1")
    assert failed.returncode == 1
    assert " Failed in " in failed.stdout and failed.stdout.strip().endswith(": value is not positive")

    for bad_args, message in [(["--param", "Valu=1"], "unknown parameter 'Valu'"),
                              (["--param", "Value=abc"], "parameter Value is Float"),
                              (["--param", "Value"], "must look like Name=Value")]:
        bad = run_cli("pipeline", "run-local", *common, *bad_args)
        assert bad.returncode == 2 and message in bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1

    missing = run_cli("pipeline", "run-local", "--definition", tmp_path / "nope.json", "--state-dir", tmp_path)
    assert missing.returncode == 2 and "does not exist" in missing.stderr

    listing = run_cli("pipeline", "executions", "--local", "--state-dir", tmp_path / "state")
    assert listing.returncode == 0
    assert listing.stdout.count("Succeeded") == 1 and listing.stdout.count("Failed") == 1

    execution_id = ok.stdout.strip().splitlines()[-1].split()[1]
    steps = run_cli("pipeline", "steps", execution_id, "--state-dir", tmp_path / "state")
    assert steps.returncode == 0
    assert "Outcome True" in steps.stdout and "NotExecuted" in steps.stdout
    unknown = run_cli("pipeline", "steps", "nosuchid", "--state-dir", tmp_path / "state")
    assert unknown.returncode == 2 and "no local execution 'nosuchid'" in unknown.stderr


def test_cli_fetches_the_definition_with_describe_pipeline(aws, tmp_path, run_cli):
    definition = {"Steps": [{"Name": "Stop", "Type": "Fail", "Arguments": {"ErrorMessage": "stopped on purpose"}}]}
    aws.client("sagemaker").create_pipeline(PipelineName="from-moto", PipelineDefinition=json.dumps(definition),
                                            RoleArn="arn:aws:iam::123456789012:role/x")
    result = run_cli("pipeline", "run-local", "--pipeline-name", "from-moto", "--endpoint-url", aws.endpoint_url,
                     "--state-dir", tmp_path)
    assert result.returncode == 1
    assert result.stdout.strip().endswith(": stopped on purpose")
    record = ExecutionStore(tmp_path).all()[0]
    assert record["PipelineExecutionArn"].startswith(
        "arn:aws:sagemaker:us-east-1:123456789012:pipeline/from-moto/execution/")


def test_failures_map_to_retry_exception_types():
    from botocore.exceptions import ClientError, EndpointConnectionError

    def client_error(code: str, status: int) -> ClientError:
        return ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
                           "CreateModel")

    assert engine.exception_type(client_error("ThrottlingException", 400)) == "Step.THROTTLING"
    assert engine.exception_type(client_error("InternalFailure", 500)) == "Step.SERVICE_FAULT"
    assert engine.exception_type(EndpointConnectionError(endpoint_url="http://127.0.0.1:1")) == "Step.SERVICE_FAULT"
    assert engine.exception_type(client_error("ValidationException", 400)) is None
    internal = "SageMaker.JOB_INTERNAL_ERROR"
    assert engine.exception_type(StepFailure("killed", internal)) == internal
    assert engine.exception_type(StepFailure("bad input")) is None
    assert engine.exception_type(KeyError("x")) is None


def test_failure_reasons_are_one_line():
    assert engine.failure_reason(StepFailure("bad input")) == "bad input"
    assert engine.failure_reason(RuntimeError("\n  An attempt was made\n  see the docs\n")) == \
        "RuntimeError: An attempt was made"
    assert engine.failure_reason(KeyError()) == "KeyError"
