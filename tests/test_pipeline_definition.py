"""The pipeline definition: offline and reproducible, its DAG and references, and each step's request shape.

The step Arguments are checked against botocore's bundled SageMaker service model, the same
description of CreateProcessingJob & co. that the service validates requests against.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from livetrain.config import Config
from pipelines.contract import EVALUATION_REPORT, GATE_STEPS, PARAMETER_NAMES, STEP_NAMES
from processing.batch_contract import feature_names

ROOT = Path(__file__).resolve().parents[1]
ARGS = dict(region="eu-west-1", role_arn="arn:aws:iam::123456789012:role/livetrain-pipeline", bucket="data-bucket",
            pipeline_name="lt", model_package_group="lt-models", prefix="runs/lt")
STEP_TYPES = {"Preprocess": "Processing", "TuneLinearLearner": "Tuning", "FitBaseline": "Processing",
              "BestModel": "Model", "TransformTest": "Transform", "FindChampion": "Lambda",
              "TransformChampion": "Transform", "EvaluateBestModel": "Processing",
              **{check: "Condition" for check in GATE_STEPS}, "RegisterBestModel": "RegisterModel",
              **{fail: "Fail" for fail in GATE_STEPS.values()}}
# Step type → (the API call its Arguments are a request of, the name the pipeline service fills in).
REQUESTS = {"Processing": ("CreateProcessingJob", "ProcessingJobName"),
            "Tuning": ("CreateHyperParameterTuningJob", "HyperParameterTuningJobName"),
            "Model": ("CreateModel", "ModelName"),
            "Transform": ("CreateTransformJob", "TransformJobName"),
            "RegisterModel": ("CreateModelPackage", None)}
# Step type → the response shapes its properties (`Steps.<name>.…`) are read from.
PROPERTY_SHAPES = {"Processing": ["DescribeProcessingJobResponse"],
                   "Tuning": ["DescribeHyperParameterTuningJobResponse",
                              "ListTrainingJobsForHyperParameterTuningJobResponse"],
                   "Model": ["DescribeModelOutput"], "Transform": ["DescribeTransformJobResponse"],
                   "RegisterModel": ["DescribeModelPackageOutput"]}
EXECUTION_VARIABLES = {"PipelineExecutionId", "PipelineExecutionArn", "PipelineName", "PipelineArn",
                       "StartDateTime", "CurrentDateTime", "PipelineExecutionDisplayName"}
EXPRESSIONS = ("Get", "Std:Join", "Std:JsonGet")


def build(**overrides) -> str:
    from pipelines.definition import build_definition

    return build_definition(**{**ARGS, **overrides})


@pytest.fixture(scope="module")
def text() -> str:
    return build()


@pytest.fixture(scope="module")
def definition(text) -> dict:
    return json.loads(text)


@pytest.fixture(scope="module")
def steps(definition) -> dict[str, dict]:
    """Every step by name, the Condition's branches included."""
    found = {}

    def collect(step_list):
        for step in step_list:
            found[step["Name"]] = step
            if step["Type"] == "Condition":
                collect(step["Arguments"]["IfSteps"] + step["Arguments"]["ElseSteps"])

    collect(definition["Steps"])
    return found


@pytest.fixture(scope="module")
def service_model():
    import botocore.session

    return botocore.session.get_session().get_service_model("sagemaker")


def is_expression(value) -> bool:
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)) in EXPRESSIONS


def expressions(value, kind: str):
    """Every `{kind: …}` expression inside value."""
    if isinstance(value, dict):
        if kind in value and len(value) == 1:
            yield value[kind]
        for item in value.values():
            yield from expressions(item, kind)
    elif isinstance(value, list):
        for item in value:
            yield from expressions(item, kind)


def step_dependencies(step: dict) -> set[str]:
    """The steps whose properties this step reads (a Condition's own, not its branches')."""
    arguments = step["Arguments"]["Conditions"] if step["Type"] == "Condition" else step["Arguments"]
    return {ref.split(".")[1] for ref in expressions(arguments, "Get") if ref.startswith("Steps.")}


# ---------------------------------------------------------------- offline and reproducible


def test_builds_offline_byte_identical(text):
    assert build() == text
    assert text.startswith('{"Version": "2020-12-01"')


def test_builds_without_any_network(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError(f"network access while building the definition: {args}")

    for name in ("connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, name, no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    assert json.loads(build(prefix="other"))["Steps"]


def test_cli_builds_in_an_empty_environment(tmp_path):
    """No credentials, no region, no LIVETRAIN_* and no AWS_* variables: only PATH and HOME (a new one, so the
    first run builds with the SDK and the second reads the build from the cache in ~/.cache/livetrain)."""
    from pipelines.contract import PLACEHOLDER_ROLE_ARN
    from pipelines.definition import build_definition

    livetrain = Path(sys.executable).parent / "livetrain"
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    runs = [subprocess.run([str(livetrain), "pipeline", "definition"], capture_output=True, text=True, env=env,
                           cwd="/", timeout=300) for _ in range(2)]
    assert [run.returncode for run in runs] == [0, 0], runs[0].stderr
    assert runs[0].stdout == runs[1].stdout
    assert len(list(tmp_path.glob(".cache/livetrain/definitions/*.json"))) == 1
    assert "placeholder role" in runs[0].stderr
    config = Config()
    assert runs[0].stdout == build_definition(
        region=config.region, role_arn=PLACEHOLDER_ROLE_ARN, bucket=config.bucket,
        pipeline_name=config.pipeline_name, model_package_group=config.model_package_group,
        prefix=config.pipeline_name) + "\n"


def test_importing_or_building_changes_no_global_state():
    """The SDK's workarounds (a region, no IAM role check, its config validator replaced) hold only while the SDK
    is imported and while a definition is built. scikit-learn, which the processing scripts import, sets two
    KMP_* variables of its own when imported: it is imported first."""
    code = textwrap.dedent("""
        import os
        import sklearn
        from sagemaker.core.config.config_manager import SageMakerConfig
        validator, environment = SageMakerConfig.validate_sagemaker_config, dict(os.environ)
        import pipelines.definition as definition
        imported = [dict(os.environ) == environment, SageMakerConfig.validate_sagemaker_config is validator]
        definition.build_definition(region="eu-west-1", role_arn="arn:aws:iam::123456789012:role/x", bucket="b",
                                    pipeline_name="p", model_package_group="g", prefix="p")
        built = [dict(os.environ) == environment, SageMakerConfig.validate_sagemaker_config is validator]
        print(imported, built, "AWS_DEFAULT_REGION" in os.environ)
    """)
    env = {"PATH": os.environ["PATH"], "HOME": os.environ["HOME"]}  # no region: the SDK needs one to import
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd="/",
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["[True,", "True]", "[True,", "True]", "False"]


def test_the_driver_keeps_each_build_at_its_content_address(text, tmp_path, monkeypatch):
    from pipelines import definition, driver
    from pipelines.code import PROCESSING_DIR

    settings = driver.PipelineSettings(**ARGS)
    assert driver.build_definition(settings, tmp_path) == text
    assert [p.name for p in (tmp_path / "definitions").iterdir()] == [f"{driver.definition_key(settings)}.json"]

    def no_build(**arguments):
        raise AssertionError("built again")

    monkeypatch.setattr(definition, "build_definition", no_build)
    assert driver.build_definition(settings, tmp_path) == text

    # Every input moves the address: the arguments, the processing code, the sources that build it.
    keys = {driver.definition_key(changed) for changed in (settings, replace(settings, max_jobs=4),
                                                          replace(settings, bucket="other"))}
    code_dir = Path(shutil.copytree(PROCESSING_DIR, tmp_path / "processing"))
    with (code_dir / "evaluate.py").open("a") as f:
        f.write("\n# changed\n")
    keys.add(driver.definition_key(settings, code_dir))
    root = tmp_path / "root"
    for name in driver.DEFINITION_SOURCES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, root / name)
    monkeypatch.setattr(driver, "_ROOT", root)
    assert driver.definition_key(settings) == driver.definition_key(replace(settings))
    with (root / "pipelines" / "definition.py").open("a") as f:
        f.write("\n# changed\n")
    keys.add(driver.definition_key(settings))
    assert len(keys) == 5


# ---------------------------------------------------------------- the DAG


def test_the_steps_with_their_types_and_the_gate_as_a_chain_of_checks(definition, steps):
    assert [step["Name"] for step in definition["Steps"]] == list(STEP_NAMES[:9])
    assert {name: step["Type"] for name, step in steps.items()} == STEP_TYPES
    assert set(steps) == set(STEP_NAMES)
    checks = list(GATE_STEPS)
    for check, following in zip(checks, [*checks[1:], "RegisterBestModel"], strict=True):
        arguments = steps[check]["Arguments"]
        assert [s["Name"] for s in arguments["IfSteps"]] == [following]
        assert [s["Name"] for s in arguments["ElseSteps"]] == [GATE_STEPS[check]]


def test_dependencies(steps):
    gate = {name: {"EvaluateBestModel"} for name in [*GATE_STEPS, *GATE_STEPS.values()]}
    assert {name: step_dependencies(step) for name, step in steps.items()} == {
        "Preprocess": set(),
        "TuneLinearLearner": {"Preprocess"},
        "FitBaseline": {"Preprocess"},
        "BestModel": {"TuneLinearLearner"},
        "TransformTest": {"BestModel", "Preprocess"},
        "FindChampion": {"BestModel"},
        "TransformChampion": {"FindChampion", "Preprocess"},
        "EvaluateBestModel": {"TransformTest", "TransformChampion", "FindChampion", "Preprocess"},
        **gate,
        "RegisterBestModel": {"TuneLinearLearner", "EvaluateBestModel", "FindChampion"},  # the epic's group
    }
    # the baseline's output is read at a path built from the execution id, so the step says it waits for it
    assert {name: step.get("DependsOn") for name, step in steps.items() if "DependsOn" in step} == {
        "EvaluateBestModel": ["FitBaseline"]}


def test_every_step_has_a_display_name_description_and_throttling_retry(steps):
    for name, step in steps.items():
        assert step.get("DisplayName") and step.get("Description"), name
        if step["Type"] in REQUESTS:
            retried = {kind for policy in step["RetryPolicies"] for kind in policy["ExceptionType"]}
            assert {"Step.THROTTLING", "Step.SERVICE_FAULT"} <= retried, name
    assert steps["Preprocess"]["CacheConfig"]["Enabled"] is True


def resolve_property(service_model, shape_names: list[str], path: str, step: dict) -> None:
    """Walk `path` (e.g. `ProcessingOutputConfig.Outputs['train'].S3Output.S3Uri`) through the response shapes."""
    tokens = re.findall(r"[A-Za-z0-9]+|\[\d+\]|\['[^']+'\]", path)
    assert "".join(t if t.startswith("[") else "." + t for t in tokens).lstrip(".") == path, path
    candidates = [service_model.shape_for(name) for name in shape_names]
    for token in tokens:
        if token.startswith("["):
            assert all(shape.type_name == "list" for shape in candidates), path
            if token.startswith("['"):  # a processing output by name: the step must declare it
                outputs = step["Arguments"]["ProcessingOutputConfig"]["Outputs"]
                assert token[2:-2] in {output["OutputName"] for output in outputs}, path
            candidates = [shape.member for shape in candidates]
        else:
            candidates = [shape.members[token] for shape in candidates
                          if shape.type_name == "structure" and token in shape.members]
            assert candidates, f"{path}: no member {token}"
    assert all(shape.type_name not in ("structure", "list", "map") for shape in candidates), path


def test_every_get_refers_to_a_parameter_step_property_or_execution_variable(definition, steps, service_model):
    parameters = {p["Name"] for p in definition["Parameters"]}
    references = list(expressions(definition["Steps"], "Get"))
    assert references
    for reference in references:
        scope, _, rest = reference.partition(".")
        if scope == "Parameters":
            assert rest in parameters, reference
        elif scope == "Execution":
            assert rest in EXECUTION_VARIABLES, reference
        else:
            assert scope == "Steps", reference
            name, _, path = rest.partition(".")
            step = steps[name]
            if path.startswith("PropertyFiles."):
                assert path.removeprefix("PropertyFiles.") in {f["PropertyFileName"] for f in step["PropertyFiles"]}
            elif step["Type"] == "Lambda":
                assert path in {f"OutputParameters['{o['OutputName']}']" for o in step["OutputParameters"]}, path
            else:
                resolve_property(service_model, PROPERTY_SHAPES[step["Type"]], path, step)


def test_parameters_are_the_contract_and_all_used(definition, text):
    declared = [p["Name"] for p in definition["Parameters"]]
    assert declared == list(PARAMETER_NAMES)
    used = {ref.removeprefix("Parameters.") for ref in expressions(definition["Steps"], "Get")}
    assert set(declared) <= used
    defaults = {p["Name"]: p.get("DefaultValue") for p in definition["Parameters"]}
    assert defaults == {"InputBucket": "data-bucket", "InputManifestKey": None, "Epic": "CS.D.BITCOIN.CFD.IP",
                        "ProcessingInstanceType": "ml.m5.xlarge", "ProcessingInstanceCount": 1,
                        "TrainingInstanceType": "ml.m5.xlarge", "TrainingInstanceCount": 1,
                        "TargetRecall": 0.25, "MinTestWindows": 20, "MinPrecision": 0.4, "MinLift": 0.05,
                        "MaxShortfallVsBaseline": 0.0, "MaxShortfallVsChampion": 0.0,
                        "ModelApprovalStatus": "PendingManualApproval"}


def test_each_check_compares_an_interval_bound_from_the_property_file_with_a_parameter(steps):
    evaluate = steps["EvaluateBestModel"]
    [report] = evaluate["PropertyFiles"]
    assert report == {"PropertyFileName": EVALUATION_REPORT, "OutputName": "evaluation",
                      "FilePath": "evaluation.json"}
    outputs = evaluate["Arguments"]["ProcessingOutputConfig"]["Outputs"]
    assert [o["S3Output"]["LocalPath"] for o in outputs if o["OutputName"] == "evaluation"] == [
        "/opt/ml/processing/evaluation"]

    def comparison(condition) -> tuple:
        left, right = condition["LeftValue"], condition["RightValue"]
        assert left["Std:JsonGet"]["PropertyFile"] == {"Get": "Steps.EvaluateBestModel.PropertyFiles.EvaluationReport"}
        return condition["Type"], left["Std:JsonGet"]["Path"], right

    conditions = {check: steps[check]["Arguments"]["Conditions"] for check in GATE_STEPS}
    assert [comparison(c) for c in conditions["CheckPrecision"]] == [
        ("GreaterThanOrEqualTo", "binary_classification_metrics.precision.lower", {"Get": "Parameters.MinPrecision"})]
    assert [comparison(c) for c in conditions["CheckLift"]] == [
        ("GreaterThanOrEqualTo", "lift.lower", {"Get": "Parameters.MinLift"})]
    assert [comparison(c) for c in conditions["CheckBaseline"]] == [
        ("LessThanOrEqualTo", "vs_baseline.shortfall.lower", {"Get": "Parameters.MaxShortfallVsBaseline"})]
    [either] = conditions["CheckChampion"]
    assert either["Type"] == "Or" and [comparison(c) for c in either["Conditions"]] == [
        ("Equals", "vs_champion.present", False),
        ("LessThanOrEqualTo", "vs_champion.shortfall.lower", {"Get": "Parameters.MaxShortfallVsChampion"})]


# ---------------------------------------------------------------- what each step does


def test_preprocess_reads_the_manifest_and_keeps_each_run(steps):
    arguments = steps["Preprocess"]["Arguments"]
    inputs = {i["InputName"]: i["S3Input"] for i in arguments["ProcessingInputs"]}
    assert inputs["batch"]["S3DataType"] == "ManifestFile"
    assert inputs["batch"]["LocalPath"] == "/opt/ml/processing/input/batch"
    assert inputs["batch"]["S3DataDistributionType"] == "FullyReplicated"
    assert inputs["batch"]["S3Uri"] == {"Std:Join": {"On": "", "Values": [
        "s3://", {"Get": "Parameters.InputBucket"}, "/", {"Get": "Parameters.InputManifestKey"}]}}
    # the price shards: the manifest beside the batch's, shared out among the instances
    assert inputs["prices"]["S3DataType"] == "ManifestFile"
    assert inputs["prices"]["S3DataDistributionType"] == "ShardedByS3Key"
    assert inputs["prices"]["S3Uri"] == {"Std:Join": {"On": "", "Values": [
        "s3://", {"Get": "Parameters.InputBucket"}, "/", {"Get": "Parameters.InputManifestKey"}, ".prices"]}}
    assert arguments["ProcessingResources"]["ClusterConfig"]["InstanceCount"] == {
        "Get": "Parameters.ProcessingInstanceCount"}
    tuning = steps["TuneLinearLearner"]["Arguments"]["TrainingJobDefinition"]
    assert tuning["ResourceConfig"]["InstanceCount"] == {"Get": "Parameters.TrainingInstanceCount"}
    assert {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3DataDistributionType"]
            for c in tuning["InputDataConfig"]} == {"train": "ShardedByS3Key", "validation": "FullyReplicated"}
    assert inputs["code"]["LocalPath"] == "/opt/ml/processing/input/code"
    assert arguments["AppSpecification"]["ContainerEntrypoint"] == [
        "python3", "/opt/ml/processing/input/code/preprocess.py"]
    assert "sagemaker-scikit-learn" in arguments["AppSpecification"]["ImageUri"]
    assert ".eu-west-1." in arguments["AppSpecification"]["ImageUri"]
    for output in arguments["ProcessingOutputConfig"]["Outputs"]:
        name = output["OutputName"]
        assert output["S3Output"]["LocalPath"] == f"/opt/ml/processing/output/{name}"
        assert output["S3Output"]["S3Uri"] == {"Std:Join": {"On": "/", "Values": [
            "s3:/", "data-bucket", "runs/lt", "executions", {"Get": "Execution.PipelineExecutionId"},
            "preprocess", name]}}
    assert [o["OutputName"] for o in arguments["ProcessingOutputConfig"]["Outputs"]] == [
        "train", "validation", "test", "metadata"]
    container = arguments["AppSpecification"]["ContainerArguments"]
    assert container[container.index("--prices-dir") + 1] == inputs["prices"]["LocalPath"]
    assert container[container.index("--min-test-windows") + 1] == {
        "Std:Join": {"On": "", "Values": [{"Get": "Parameters.MinTestWindows"}]}}


def test_code_is_referenced_at_its_content_address(steps, tmp_path):
    from pipelines.code import PROCESSING_DIR, code_bundles

    bundles = code_bundles("data-bucket", "runs/lt")
    for name, bundle in bundles.items():
        if name not in steps:  # MeasureLiveQuality: the monitoring pipeline's (test_the_monitoring_pipeline_…)
            continue
        inputs = {i["InputName"]: i["S3Input"] for i in steps[name]["Arguments"]["ProcessingInputs"]}
        assert inputs["code"]["S3Uri"] == bundle.s3_prefix
        assert re.fullmatch(r"s3://data-bucket/runs/lt/code/[0-9a-f]{64}/", bundle.s3_prefix)
        assert bundle.files[bundle.script] == (PROCESSING_DIR / bundle.script).read_bytes()
    assert set(bundles["Preprocess"].files) == {"preprocess.py", "batch_contract.py"}
    assert set(bundles["FitBaseline"].files) == {"baseline.py", "script_io.py"}
    shipped = set(bundles["EvaluateBestModel"].files)
    assert {"evaluate.py", "script_io.py", "arch/__init__.py", "arch/LICENSE.md", "arch/bootstrap/base.py"} <= shipped
    assert not any(name.startswith(("arch/univariate", "arch/tests")) or not name.endswith((".py", ".md"))
                   for name in shipped)  # only what arch.bootstrap imports, no compiled files

    # Changing a shipped file moves the address; the definition follows.
    code_dir = Path(shutil.copytree(PROCESSING_DIR, tmp_path / "processing"))
    before = code_bundles("data-bucket", "runs/lt", code_dir)
    assert {k: b.s3_prefix for k, b in before.items()} == {k: b.s3_prefix for k, b in bundles.items()}
    with (code_dir / "batch_contract.py").open("a") as f:
        f.write("\n# changed\n")
    after = code_bundles("data-bucket", "runs/lt", code_dir)
    assert after["Preprocess"].s3_prefix != before["Preprocess"].s3_prefix
    changed = json.loads(build(code_dir=code_dir))
    assert after["Preprocess"].s3_prefix in json.dumps(changed["Steps"][0])


def test_shipped_files_follow_sibling_imports_only(tmp_path):
    from pipelines.code import shipped_files

    (tmp_path / "main.py").write_text("import json\nimport numpy as np\nimport helper\n")
    (tmp_path / "helper.py").write_text("from deeper import thing\n")
    (tmp_path / "deeper.py").write_text("thing = 1\n")
    (tmp_path / "unused.py").write_text("x = 1\n")
    (tmp_path / "json.py").write_text("")  # a sibling that shadows the standard library is shipped too
    assert [p.name for p in shipped_files(tmp_path / "main.py")] == ["deeper.py", "helper.py", "json.py", "main.py"]


def test_tuning(steps):
    arguments = steps["TuneLinearLearner"]["Arguments"]
    config = arguments["HyperParameterTuningJobConfig"]
    assert config["Strategy"] == "Bayesian"
    assert config["HyperParameterTuningJobObjective"] == {"Type": "Maximize", "MetricName": "validation:precision"}
    assert config["ResourceLimits"] == {"MaxNumberOfTrainingJobs": 10, "MaxParallelTrainingJobs": 2}
    ranges = config["ParameterRanges"]
    assert {r["Name"]: (r["MinValue"], r["MaxValue"]) for r in ranges["ContinuousParameterRanges"]} == {
        "l1": ("1e-07", "1.0"), "learning_rate": ("1e-05", "1.0"),
        "positive_example_weight_mult": ("0.5", "2.0"), "wd": ("1e-07", "1.0")}
    assert {r["Name"]: (r["MinValue"], r["MaxValue"]) for r in ranges["IntegerParameterRanges"]} == {
        "mini_batch_size": ("100", "1000")}
    assert ranges["CategoricalParameterRanges"] == [{"Name": "use_bias", "Values": ["true", "false"]}]
    job = arguments["TrainingJobDefinition"]
    assert job["StaticHyperParameters"] == {
        "feature_dim": str(len(feature_names())), "epochs": "15", "normalize_data": "true",
        "predictor_type": "binary_classifier",
        "binary_classifier_model_selection_criteria": "precision_at_target_recall",
        "target_recall": {"Std:Join": {"On": "", "Values": [{"Get": "Parameters.TargetRecall"}]}}}
    assert "linear-learner" in job["AlgorithmSpecification"]["TrainingImage"]
    assert [(c["ChannelName"], c["ContentType"]) for c in job["InputDataConfig"]] == [
        ("train", "text/csv"), ("validation", "text/csv")]
    assert job["ResourceConfig"]["InstanceType"] == {"Get": "Parameters.TrainingInstanceType"}


def test_tuning_budget_is_configurable():
    config = json.loads(build(max_jobs=4, max_parallel_jobs=1))["Steps"][1]["Arguments"]
    assert config["HyperParameterTuningJobConfig"]["ResourceLimits"] == {
        "MaxNumberOfTrainingJobs": 4, "MaxParallelTrainingJobs": 1}


def test_best_model_transform_and_evaluation(steps):
    model_url = steps["BestModel"]["Arguments"]["PrimaryContainer"]["ModelDataUrl"]
    assert "Steps.TuneLinearLearner.BestTrainingJob.TrainingJobName" in json.dumps(model_url)
    assert model_url["Std:Join"]["Values"][-2:] == ["output", "model.tar.gz"]
    output_path = steps["TuneLinearLearner"]["Arguments"]["TrainingJobDefinition"]["OutputDataConfig"]["S3OutputPath"]
    assert model_url["Std:Join"]["Values"][0] == output_path

    transform = steps["TransformTest"]["Arguments"]
    assert transform["ModelName"] == {"Get": "Steps.BestModel.ModelName"}
    assert transform["TransformInput"]["ContentType"] == "text/csv"
    assert transform["TransformInput"]["SplitType"] == "Line"
    assert transform["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"]["Std:Join"]["Values"][-1] == (
        "features")  # every shard's test features file, and nothing else of the test output
    assert transform["TransformOutput"]["Accept"] == "application/jsonlines"

    champion = steps["TransformChampion"]["Arguments"]
    assert champion["ModelName"] == {"Get": "Steps.FindChampion.OutputParameters['ChampionModelName']"}
    assert champion["TransformInput"] == transform["TransformInput"]
    find = steps["FindChampion"]
    assert find["FunctionArn"] == "arn:aws:lambda:eu-west-1:123456789012:function:lt-find-champion"
    assert find["Arguments"] == {"ModelPackageGroupPrefix": "lt-models", "Epic": {"Get": "Parameters.Epic"},
                                 "ChallengerModelName": {"Get": "Steps.BestModel.ModelName"},
                                 "ExecutionRoleArn": ARGS["role_arn"], "ModelNamePrefix": "lt-champion"}
    assert [o["OutputName"] for o in find["OutputParameters"]] == ["ModelPackageGroupName", "ChampionPackageArn",
                                                                   "ChampionModelName"]

    baseline = steps["FitBaseline"]["Arguments"]
    assert baseline["AppSpecification"]["ContainerEntrypoint"][-1] == "/opt/ml/processing/input/code/baseline.py"
    assert [o["S3Output"]["S3Uri"]["Std:Join"]["Values"][-1] for o in baseline["ProcessingOutputConfig"]["Outputs"]] \
        == ["baseline"]

    evaluate = steps["EvaluateBestModel"]["Arguments"]
    inputs = {i["InputName"]: i["S3Input"] for i in evaluate["ProcessingInputs"]}
    assert inputs["predictions"]["S3Uri"] == {"Get": "Steps.TransformTest.TransformOutput.S3OutputPath"}
    assert inputs["champion"]["S3Uri"] == {"Get": "Steps.TransformChampion.TransformOutput.S3OutputPath"}
    run_baseline, file = inputs["baseline"]["S3Uri"]["Std:Join"]["Values"]
    assert file == "test_features.csv.out"
    assert run_baseline == baseline["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"]
    assert inputs["test"]["S3Uri"]["Std:Join"]["Values"][-1] == "test_trades.csv"
    assert inputs["metadata"]["S3Uri"]["Std:Join"]["Values"][-1] == "features.json"
    arguments = evaluate["AppSpecification"]["ContainerArguments"]
    for name in ("predictions", "baseline", "champion", "test", "metadata"):
        assert arguments[arguments.index(f"--{name}-dir") + 1] == inputs[name]["LocalPath"]
    assert arguments[arguments.index("--target-recall") + 1] == {
        "Std:Join": {"On": "", "Values": [{"Get": "Parameters.TargetRecall"}]}}
    assert arguments[arguments.index("--champion-package-arn") + 1] == {
        "Get": "Steps.FindChampion.OutputParameters['ChampionPackageArn']"}
    assert evaluate["AppSpecification"]["ContainerEntrypoint"][-1] == "/opt/ml/processing/input/code/evaluate.py"


def test_registration_and_failure_message(steps):
    register = steps["RegisterBestModel"]["Arguments"]
    # the epic's group, lt-models-<epic slug>, which FindChampion names (and creates on the epic's first run)
    assert register["ModelPackageGroupName"] == {"Get": "Steps.FindChampion.OutputParameters['ModelPackageGroupName']"}
    assert register["ModelApprovalStatus"] == {"Get": "Parameters.ModelApprovalStatus"}
    spec = register["InferenceSpecification"]
    assert spec["SupportedContentTypes"] == ["text/csv", "application/json"]
    assert spec["SupportedResponseMIMETypes"] == ["application/json", "application/jsonlines"]
    assert spec["Containers"][0]["ModelDataUrl"] == steps["BestModel"]["Arguments"]["PrimaryContainer"]["ModelDataUrl"]
    statistics = register["ModelMetrics"]["ModelQuality"]["Statistics"]
    assert statistics["ContentType"] == "application/json"
    assert statistics["S3Uri"]["Std:Join"]["Values"] == [
        {"Get": "Steps.EvaluateBestModel.ProcessingOutputConfig.Outputs['evaluation'].S3Output.S3Uri"},
        "evaluation.json"]

    for check, fail in GATE_STEPS.items():
        message = steps[fail]["Arguments"]["ErrorMessage"]["Std:Join"]["Values"]
        threshold = steps[check]["Arguments"]["Conditions"][0]
        threshold = (threshold.get("Conditions") or [threshold])[-1]["RightValue"]
        assert message[0] == "Not registered: " and threshold in message, fail  # names its condition's parameter
        assert message[-1]["Std:JsonGet"]["Path"] == "summary", fail  # … then every number with its interval


# ---------------------------------------------------------------- request shapes


def shape_violations(value, shape, path: str) -> list[str]:
    """Where value breaks the botocore shape; pipeline expressions stand for any scalar."""
    kind = shape.type_name
    if is_expression(value):
        return [] if kind not in ("structure", "list", "map") else [f"{path}: an expression where a {kind} belongs"]
    if kind == "structure":
        if not isinstance(value, dict):
            return [f"{path}: {value!r} is not a structure"]
        errors = [f"{path}.{name}: required" for name in shape.required_members if name not in value]
        for key, item in value.items():
            if key in shape.members:
                errors += shape_violations(item, shape.members[key], f"{path}.{key}")
            else:
                errors.append(f"{path}.{key}: unknown member of {shape.name}")
        return errors
    if kind == "list":
        if not isinstance(value, list):
            return [f"{path}: {value!r} is not a list"]
        errors = [] if len(value) >= shape.metadata.get("min", 0) else [f"{path}: too few items"]
        for index, item in enumerate(value):
            errors += shape_violations(item, shape.member, f"{path}[{index}]")
        return errors
    if kind == "map":
        if not isinstance(value, dict):
            return [f"{path}: {value!r} is not a map"]
        errors = []
        for key, item in value.items():
            errors += shape_violations(key, shape.key, f"{path} key {key!r}")
            errors += shape_violations(item, shape.value, f"{path}[{key!r}]")
        return errors
    if kind == "string":
        if not isinstance(value, str):
            return [f"{path}: {value!r} is not a string"]
        errors = []
        if shape.enum and value not in shape.enum:
            errors.append(f"{path}: {value!r} is not one of {shape.enum}")
        if not shape.metadata.get("min", 0) <= len(value) <= shape.metadata.get("max", len(value)):
            errors.append(f"{path}: length {len(value)} outside {shape.metadata}")
        pattern = shape.metadata.get("pattern")
        if pattern and checkable(pattern) and not re.fullmatch(pattern, value, re.DOTALL):
            errors.append(f"{path}: {value!r} does not match {pattern}")
        return errors
    if kind in ("integer", "long"):
        ok = isinstance(value, int) and not isinstance(value, bool)
        if ok and not shape.metadata.get("min", value) <= value <= shape.metadata.get("max", value):
            return [f"{path}: {value} outside {shape.metadata}"]
    elif kind in ("float", "double"):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif kind == "boolean":
        ok = isinstance(value, bool)
    else:
        ok = False
    return [] if ok else [f"{path}: {value!r} is not a {kind}"]


def checkable(pattern: str) -> bool:
    """botocore patterns are Java regexes; the few Python cannot compile (\\p{L} classes) are skipped."""
    try:
        re.compile(pattern)
    except re.error:
        return False
    return True


@pytest.mark.parametrize("name", [n for n, t in STEP_TYPES.items() if t in REQUESTS])
def test_arguments_match_the_request_shape(name, steps, service_model):
    step = steps[name]
    operation, filled_by_service = REQUESTS[step["Type"]]
    shape = service_model.operation_model(operation).input_shape
    arguments = {**step["Arguments"], **({filled_by_service: "filled-by-the-pipeline"} if filled_by_service else {})}
    assert shape_violations(arguments, shape, operation) == []


def test_the_validator_catches_mistakes(steps, service_model):
    shape = service_model.operation_model("CreateProcessingJob").input_shape
    good = {**steps["Preprocess"]["Arguments"], "ProcessingJobName": "x"}
    broken = json.loads(json.dumps(good))
    del broken["RoleArn"]
    broken["AppSpecification"]["ImageUrl"] = "typo"
    broken["ProcessingResources"]["ClusterConfig"]["InstanceCount"] = "1"
    broken["ProcessingInputs"][0]["S3Input"]["S3DataType"] = "Manifest"
    broken["ProcessingInputs"][1]["S3Input"]["S3Uri"] = "https:/nowhere"
    broken["ProcessingOutputConfig"] = {"Get": "Parameters.InputBucket"}
    assert sorted(shape_violations(broken, shape, "R")) == sorted([
        "R.RoleArn: required",
        "R.AppSpecification.ImageUrl: unknown member of AppSpecification",
        "R.ProcessingResources.ClusterConfig.InstanceCount: '1' is not a integer",
        "R.ProcessingInputs[0].S3Input.S3DataType: 'Manifest' is not one of ['ManifestFile', 'S3Prefix']",
        "R.ProcessingInputs[1].S3Input.S3Uri: 'https:/nowhere' does not match (https|s3)://([^/]+)/?(.*)",
        "R.ProcessingOutputConfig: an expression where a structure belongs",
    ])


def test_placeholder_role_is_a_valid_arn_in_no_account(service_model):
    from pipelines.contract import PLACEHOLDER_ROLE_ARN

    assert shape_violations(PLACEHOLDER_ROLE_ARN, service_model.shape_for("RoleArn"), "RoleArn") == []
    assert ":000000000000:" in PLACEHOLDER_ROLE_ARN


def test_the_monitoring_pipeline_measures_the_capture_and_publishes_through_its_lambda():
    from pipelines.code import code_bundles
    from pipelines.contract import MONITOR_PARAMETER_NAMES

    monitor = json.loads(build(monitor=True))
    assert [p["Name"] for p in monitor["Parameters"]] == list(MONITOR_PARAMETER_NAMES)
    measure, publish = monitor["Steps"]
    assert (measure["Name"], measure["Type"], publish["Name"], publish["Type"]) == (
        "MeasureLiveQuality", "Processing", "PublishLiveQuality", "Lambda")
    arguments = measure["Arguments"]
    inputs = {i["InputName"]: i["S3Input"]["S3Uri"] for i in arguments["ProcessingInputs"]}
    bundle = code_bundles(ARGS["bucket"], ARGS["prefix"])["MeasureLiveQuality"]
    assert inputs["code"] == bundle.s3_prefix and {"monitor.py", "evaluate.py", "script_io.py"} <= set(bundle.files)
    assert inputs["capture"]["Std:Join"]["Values"] == [
        "s3:/", ARGS["bucket"], ARGS["prefix"], "datacapture", {"Get": "Parameters.EndpointName"}, ""]
    assert inputs["groundtruth"] == f"s3://{ARGS['bucket']}/{ARGS['prefix']}/groundtruth/"
    assert arguments["AppSpecification"]["ContainerEntrypoint"][-1].endswith("/monitor.py")
    assert publish["FunctionArn"].endswith(f":function:{ARGS['pipeline_name']}-publish-live-quality")
    assert publish["Arguments"]["MetricsUri"]["Std:Join"]["Values"][-1] == "cloudwatch_metrics.json"
