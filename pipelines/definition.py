"""The livetrain SageMaker Pipeline, built with SageMaker Python SDK v3.

`get_pipeline(...)` reads top to bottom as the DAG:

    Preprocess ─┬─ TuneLinearLearner → BestModel ─┬─ TransformTest ──────────────────┐
                │                                  └─ FindChampion → TransformChampion ┼─ EvaluateBestModel
                └─ FitBaseline ─────────────────────────────────────────────────────────┘
    EvaluateBestModel → CheckChampion → CheckLift → CheckBaseline → CheckPrecision → RegisterBestModel
        each check's false branch: a Fail step named after it (WorseThanChampion, NoLiftOverBaseRate,
        WorseThanBaseline, PrecisionTooLow), whose message states every number with its interval

The gate is a statistical decision on the held-out, purged and embargoed test slice: each condition
compares a bound of a 95 % block-bootstrap interval (evaluate.py) with a pipeline parameter.

Building the definition needs no AWS account and no network: nothing is uploaded here. The
processing scripts are referenced at a content address, `s3://<bucket>/<prefix>/code/<sha256>/`,
computed from the local files (`code_bundles`); `livetrain pipeline upsert` uploads exactly those
files before it creates or updates the pipeline.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path

import boto3

from livetrain.config import Config
from pipelines.code import PROCESSING_DIR, code_bundles
from pipelines.contract import (
    EVALUATION_REPORT,
    INSTANCE_TYPE,
    MAX_SHORTFALL_VS_BASELINE,
    MAX_SHORTFALL_VS_CHAMPION,
    MIN_LIFT,
    MIN_PRECISION,
    PUBLISH_FUNCTION_SUFFIX,
    TARGET_RECALL,
    champion_function_arn,
    function_arn,
    monitor_pipeline_name,
)
from processing.baseline import PREDICTIONS_FILE as BASELINE_PREDICTIONS_FILE
from processing.batch_contract import PRICES_MANIFEST_SUFFIX, feature_names
from processing.evaluate import EVALUATION_FILE, FEATURES_FILE, TEST_TRADES_FILE
from processing.monitor import DEPENDENCE_SECONDS, METRICS_FILE, MIN_WINDOWS, WINDOW_HOURS
from processing.preprocess import MIN_TEST_WINDOWS, TEST_FEATURES_DIR


@contextmanager
def _environment(**values: str):
    """os.environ with `values` set, restored afterwards."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _sdk_environment():
    """The environment the SDK needs, set only while it is imported or builds.

    The SDK creates boto3 clients while it is imported and when steps are constructed, so it needs *a* region
    even offline (the definition itself uses the region passed to get_pipeline), and it would ask IAM to
    validate the role ARN while the definition is being built.
    """
    region = {} if boto3.Session().region_name else {"AWS_DEFAULT_REGION": Config.region}
    return _environment(SAGEMAKER_VALIDATE_ROLE="false", **region)


with _sdk_environment():
    from sagemaker.core import image_uris
    from sagemaker.core.config.config_manager import SageMakerConfig
    from sagemaker.core.lambda_helper import Lambda
    from sagemaker.core.parameter import CategoricalParameter, ContinuousParameter, IntegerParameter
    from sagemaker.core.processing import Processor
    from sagemaker.core.shapes import (
        Channel,
        DataSource,
        MetricsSource,
        ModelMetrics,
        ModelQuality,
        ProcessingInput,
        ProcessingOutput,
        ProcessingS3Input,
        ProcessingS3Output,
        S3DataSource,
    )
    from sagemaker.core.training.configs import Compute, OutputDataConfig
    from sagemaker.core.transformer import Transformer
    from sagemaker.core.workflow.conditions import (
        ConditionEquals,
        ConditionGreaterThanOrEqualTo,
        ConditionLessThanOrEqualTo,
        ConditionOr,
    )
    from sagemaker.core.workflow.execution_variables import ExecutionVariables
    from sagemaker.core.workflow.functions import Join, JsonGet
    from sagemaker.core.workflow.parameters import ParameterFloat, ParameterInteger, ParameterString
    from sagemaker.core.workflow.pipeline_context import PipelineSession
    from sagemaker.core.workflow.properties import PropertyFile
    from sagemaker.mlops.workflow.condition_step import ConditionStep
    from sagemaker.mlops.workflow.fail_step import FailStep
    from sagemaker.mlops.workflow.lambda_step import LambdaOutput, LambdaStep
    from sagemaker.mlops.workflow.model_step import ModelStep
    from sagemaker.mlops.workflow.pipeline import Pipeline
    from sagemaker.mlops.workflow.retry import (
        SageMakerJobExceptionTypeEnum,
        SageMakerJobStepRetryPolicy,
        StepExceptionTypeEnum,
        StepRetryPolicy,
    )
    from sagemaker.mlops.workflow.steps import CacheConfig, ProcessingStep, TransformStep, TuningStep
    from sagemaker.serve.model_builder import ModelBuilder
    from sagemaker.train import ModelTrainer
    from sagemaker.train.tuner import HyperparameterTuner

# No SDK defaults from the user's config files and no telemetry: the definition depends on the arguments only.
SDK_CONFIG = {"SchemaVersion": "1.0", "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}}}
SageMakerConfig.validate_sagemaker_config(SDK_CONFIG)
_BUILD_LOCK = threading.Lock()  # a build changes process-wide state (environment, the SDK's validator) for its time

SKLEARN_VERSION = "1.9-0"  # the SageMaker scikit-learn image: Python 3.12, numpy, scipy, pandas, scikit-learn
CODE_DIR = "/opt/ml/processing/input/code"
PREPROCESS_OUTPUTS = ("train", "validation", "test", "metadata")

# The pipeline service retries throttled and faulted service calls; job steps also wait out
# account limits and capacity shortages instead of failing the run.
SERVICE_RETRY = StepRetryPolicy(
    exception_types=[StepExceptionTypeEnum.THROTTLING, StepExceptionTypeEnum.SERVICE_FAULT],
    interval_seconds=10, backoff_rate=2.0, max_attempts=5)
JOB_RETRY = SageMakerJobStepRetryPolicy(
    exception_types=[SageMakerJobExceptionTypeEnum.RESOURCE_LIMIT, SageMakerJobExceptionTypeEnum.CAPACITY_ERROR],
    interval_seconds=60, backoff_rate=2.0, max_attempts=5)


def get_pipeline(region: str, role_arn: str, bucket: str, pipeline_name: str, model_package_group: str,
                 prefix: str, max_jobs: int = Config.max_jobs, max_parallel_jobs: int = Config.max_parallel_jobs,
                 code_dir: Path = PROCESSING_DIR) -> Pipeline:
    """The pipeline; every run keeps its data under s3://<bucket>/<prefix>/executions/<execution id>/."""
    session = PipelineSession(boto_session=boto3.Session(region_name=region), default_bucket=bucket,
                              sagemaker_config=SDK_CONFIG)
    code = code_bundles(bucket, prefix, code_dir)

    def run_uri(*parts: str) -> Join:
        return Join(on="/", values=["s3:/", bucket, prefix, "executions", ExecutionVariables.PIPELINE_EXECUTION_ID,
                                    *parts])

    input_bucket = ParameterString("InputBucket", default_value=bucket)
    input_manifest_key = ParameterString("InputManifestKey")  # no default: each run names its batch
    epic = ParameterString("Epic", default_value=Config.epic)  # the batch's instrument: its group and endpoint
    processing_instance_type = ParameterString("ProcessingInstanceType", default_value=INSTANCE_TYPE)
    processing_instance_count = ParameterInteger("ProcessingInstanceCount", default_value=1)  # Preprocess's
    training_instance_type = ParameterString("TrainingInstanceType", default_value=INSTANCE_TYPE)
    training_instance_count = ParameterInteger("TrainingInstanceCount", default_value=1)
    target_recall = ParameterFloat("TargetRecall", default_value=TARGET_RECALL)
    min_test_windows = ParameterInteger("MinTestWindows", default_value=MIN_TEST_WINDOWS)
    min_precision = ParameterFloat("MinPrecision", default_value=MIN_PRECISION)
    min_lift = ParameterFloat("MinLift", default_value=MIN_LIFT)
    max_shortfall_vs_baseline = ParameterFloat("MaxShortfallVsBaseline", default_value=MAX_SHORTFALL_VS_BASELINE)
    max_shortfall_vs_champion = ParameterFloat("MaxShortfallVsChampion", default_value=MAX_SHORTFALL_VS_CHAMPION)
    model_approval_status = ParameterString("ModelApprovalStatus", default_value="PendingManualApproval")
    sklearn_image = image_uris.retrieve("sklearn", region, version=SKLEARN_VERSION)
    linear_learner_image = image_uris.retrieve("linear-learner", region)

    def run_script(step_name: str, inputs: list, outputs: list, arguments: list, instance_count=1):
        return script_job(code[step_name], role_arn, sklearn_image, processing_instance_type, pipeline_name, session,
                          inputs, outputs, arguments, instance_count)

    # 1. Preprocess: the batch named by the manifest → features, split by market time with purge and embargo;
    # the price shards (listed in the manifest's `.prices` sibling) spread over the instances, each instance
    # reading all trades (processing/batch_contract.py).
    manifest_uri = Join(on="", values=["s3://", input_bucket, "/", input_manifest_key])
    prices_manifest_uri = Join(on="", values=["s3://", input_bucket, "/", input_manifest_key, PRICES_MANIFEST_SUFFIX])
    preprocess = ProcessingStep(
        name="Preprocess", display_name="Preprocess batch",
        description="Features from the batch's ticks for each closed trade, split by market time into train, "
                    "validation and test with purging and an embargo; stops when the test slice holds fewer "
                    "than MinTestWindows independent windows (processing/preprocess.py).",
        step_args=run_script(
            "Preprocess",
            inputs=[s3_input("batch", manifest_uri, "/opt/ml/processing/input/batch", data_type="ManifestFile"),
                    s3_input("prices", prices_manifest_uri, "/opt/ml/processing/input/prices",
                             data_type="ManifestFile", distribution="ShardedByS3Key")],
            outputs=[s3_output(name, f"/opt/ml/processing/output/{name}", run_uri("preprocess", name))
                     for name in PREPROCESS_OUTPUTS],
            arguments=["--input-dir", "/opt/ml/processing/input/batch",
                       "--prices-dir", "/opt/ml/processing/input/prices", "--output-dir", "/opt/ml/processing/output",
                       "--min-test-windows", min_test_windows.to_string()],
            instance_count=processing_instance_count),
        cache_config=CacheConfig(enable_caching=True, expire_after="P30D"),
        retry_policies=[SERVICE_RETRY, JOB_RETRY])
    preprocessed = preprocess.properties.ProcessingOutputConfig.Outputs

    def preprocessed_file(output: str, file_name: str) -> Join:
        return Join(on="/", values=[preprocessed[output].S3Output.S3Uri, file_name])

    test_features_uri = preprocessed_file("test", Path(TEST_FEATURES_DIR).name)  # every shard's file

    # 2. TuneLinearLearner: Bayesian search over the built-in Linear Learner, scored on validation precision.
    models_uri = run_uri("models")
    trainer = ModelTrainer(
        training_image=linear_learner_image, role=role_arn, base_job_name=f"{pipeline_name}-linear-learner",
        compute=Compute(instance_type=training_instance_type, instance_count=training_instance_count),
        output_data_config=OutputDataConfig(s3_output_path=models_uri), sagemaker_session=session,
        hyperparameters={"feature_dim": len(feature_names()), "epochs": 15, "normalize_data": "true",
                         "predictor_type": "binary_classifier",
                         "binary_classifier_model_selection_criteria": "precision_at_target_recall",
                         "target_recall": target_recall})
    tuner = HyperparameterTuner(
        model_trainer=trainer, objective_metric_name="validation:precision", objective_type="Maximize",
        strategy="Bayesian", max_jobs=max_jobs, max_parallel_jobs=max_parallel_jobs,
        base_tuning_job_name=pipeline_name,
        hyperparameter_ranges={
            "use_bias": CategoricalParameter(["true", "false"]),
            "l1": ContinuousParameter(1e-7, 1.0, scaling_type="Logarithmic"),
            "learning_rate": ContinuousParameter(1e-5, 1.0, scaling_type="Logarithmic"),
            # Weights far from 1 only push every score towards 0 or 1, where the threshold chosen on validation
            # no longer holds on new data; within a factor of 2 the scores stay readable (README, "The gate").
            "positive_example_weight_mult": ContinuousParameter(0.5, 2.0, scaling_type="Logarithmic"),
            "wd": ContinuousParameter(1e-7, 1.0, scaling_type="Logarithmic"),
            "mini_batch_size": IntegerParameter(100, 1000),
        })
    tune = TuningStep(
        name="TuneLinearLearner", display_name="Tune Linear Learner",
        description=f"Bayesian search, {max_jobs} training jobs ({max_parallel_jobs} at a time), maximising "
                    "validation precision at the target recall.",
        step_args=tuner.tune(inputs=[  # several instances: each trains on its share of the train files
            Channel(channel_name=channel, content_type="text/csv", data_source=DataSource(s3_data_source=S3DataSource(
                s3_data_type="S3Prefix", s3_uri=preprocessed[channel].S3Output.S3Uri,
                s3_data_distribution_type=distribution)))
            for channel, distribution in (("train", "ShardedByS3Key"), ("validation", "FullyReplicated"))]),
        retry_policies=[SERVICE_RETRY, JOB_RETRY])

    # 3. FitBaseline: a simple model on the same slices, scored on the same test slice (beside the tuning).
    baseline_uri = run_uri("baseline")
    fit_baseline = ProcessingStep(
        name="FitBaseline", display_name="Fit baseline",
        description="L2-regularised logistic regression on the same train and validation slices; its test-slice "
                    "scores are what the challenger must not fall short of (processing/baseline.py).",
        step_args=run_script(
            "FitBaseline",
            inputs=[s3_input(channel, preprocessed[channel].S3Output.S3Uri, f"/opt/ml/processing/input/{channel}")
                    for channel in ("train", "validation")]
                   + [s3_input("test", test_features_uri, "/opt/ml/processing/input/test")],
            outputs=[s3_output("predictions", "/opt/ml/processing/output", baseline_uri)],
            arguments=[*(argument for channel in ("train", "validation", "test")
                         for argument in (f"--{channel}-dir", f"/opt/ml/processing/input/{channel}")),
                       "--output-dir", "/opt/ml/processing/output", "--target-recall", target_recall.to_string()]),
        cache_config=CacheConfig(enable_caching=True, expire_after="P30D"),
        retry_policies=[SERVICE_RETRY, JOB_RETRY])

    # 4. BestModel: a SageMaker model from the best training job's artefact.
    best_artefact = Join(on="/", values=[models_uri, tune.properties.BestTrainingJob.TrainingJobName,
                                         "output", "model.tar.gz"])
    best_model = ModelBuilder(image_uri=linear_learner_image, s3_model_data_url=best_artefact, role_arn=role_arn,
                              sagemaker_session=session, dependencies=None)
    create_model = ModelStep(
        name="BestModel", display_name="Create best model",
        description="A SageMaker model from the artefact of the tuning job's best training job.",
        step_args=best_model.build(), retry_policies=[SERVICE_RETRY])

    def score_test_slice(name: str, display_name: str, description: str, model_name, output: str):
        """Batch Transform of the test feature files, JSON Lines out as <file>.out each."""
        transformer = Transformer(
            model_name=model_name, instance_count=1, instance_type=processing_instance_type,
            accept="application/jsonlines", assemble_with="Line", output_path=run_uri(output),
            base_transform_job_name=f"{pipeline_name}-{output}", sagemaker_session=session)
        return TransformStep(
            name=name, display_name=display_name, description=description,
            step_args=transformer.transform(data=test_features_uri,
                                            content_type="text/csv", split_type="Line"),
            retry_policies=[SERVICE_RETRY, JOB_RETRY])

    # 5. TransformTest: the challenger scores the held-out test slice.
    transform = score_test_slice("TransformTest", "Score test slice",
                                 "Batch Transform of the test slice with the best model.",
                                 create_model.properties.ModelName, "transform")

    # 6. FindChampion and TransformChampion: the model in service scores the same test slice.
    find_champion = LambdaStep(
        name="FindChampion", display_name="Find champion",
        description="The epic's model package group (created if new) and its latest Approved package (the model "
                    "in service), as a SageMaker model; the challenger's own model when the group has none "
                    "(lambdas/find_champion.py).",
        lambda_func=Lambda(function_arn=champion_function_arn(region, role_arn, pipeline_name),
                           session=session),
        inputs={"ModelPackageGroupPrefix": model_package_group, "Epic": epic,
                "ChallengerModelName": create_model.properties.ModelName,
                "ExecutionRoleArn": role_arn, "ModelNamePrefix": f"{pipeline_name}-champion"},
        outputs=[LambdaOutput(output_name=name)
                 for name in ("ModelPackageGroupName", "ChampionPackageArn", "ChampionModelName")])
    champion = find_champion.properties.Outputs
    transform_champion = score_test_slice("TransformChampion", "Score test slice with champion",
                                          "Batch Transform of the test slice with the model in service.",
                                          champion["ChampionModelName"], "champion")

    # 7. EvaluateBestModel: challenger, baseline and champion on the test slice → evaluation.json with intervals.
    evaluation_report = PropertyFile(name=EVALUATION_REPORT, output_name="evaluation", path=EVALUATION_FILE)
    evaluate = ProcessingStep(
        name="EvaluateBestModel", display_name="Evaluate best model",
        description="Precision, recall, lift over the base rate, AUC and the comparisons with the baseline and the "
                    "champion on the test slice, each with a 95 % time-block bootstrap interval "
                    "(processing/evaluate.py).",
        step_args=run_script(
            "EvaluateBestModel",
            inputs=[s3_input("predictions", transform.properties.TransformOutput.S3OutputPath,
                             "/opt/ml/processing/input/predictions"),
                    s3_input("baseline", Join(on="/", values=[baseline_uri, BASELINE_PREDICTIONS_FILE]),
                             "/opt/ml/processing/input/baseline"),
                    s3_input("champion", transform_champion.properties.TransformOutput.S3OutputPath,
                             "/opt/ml/processing/input/champion"),
                    s3_input("test", preprocessed_file("test", TEST_TRADES_FILE), "/opt/ml/processing/input/test"),
                    s3_input("metadata", preprocessed_file("metadata", FEATURES_FILE),
                             "/opt/ml/processing/input/metadata")],
            outputs=[s3_output("evaluation", "/opt/ml/processing/evaluation", run_uri("evaluation"))],
            arguments=["--predictions-dir", "/opt/ml/processing/input/predictions",
                       "--baseline-dir", "/opt/ml/processing/input/baseline",
                       "--champion-dir", "/opt/ml/processing/input/champion",
                       "--champion-package-arn", champion["ChampionPackageArn"],
                       "--test-dir", "/opt/ml/processing/input/test",
                       "--metadata-dir", "/opt/ml/processing/input/metadata",
                       "--output-dir", "/opt/ml/processing/evaluation",
                       "--target-recall", target_recall.to_string()]),
        property_files=[evaluation_report], depends_on=[fit_baseline], retry_policies=[SERVICE_RETRY, JOB_RETRY])

    def report(path: str) -> JsonGet:
        return JsonGet(step_name=evaluate.name, property_file=evaluation_report, json_path=path)

    # 8. RegisterBestModel: into the epic's model package group (FindChampion's), with evaluation.json as its metrics.
    evaluation_uri = Join(on="/", values=[
        evaluate.properties.ProcessingOutputConfig.Outputs["evaluation"].S3Output.S3Uri, EVALUATION_FILE])
    register = ModelStep(
        name="RegisterBestModel", display_name="Register best model",
        description="A model package version in the epic's group, with evaluation.json as its model quality "
                    "metrics.",
        step_args=best_model.register(
            model_package_group_name=champion["ModelPackageGroupName"], approval_status=model_approval_status,
            content_types=["text/csv", "application/json"],
            response_types=["application/json", "application/jsonlines"],
            inference_instances=["ml.t2.medium", INSTANCE_TYPE], transform_instances=[INSTANCE_TYPE],
            model_metrics=ModelMetrics(model_quality=ModelQuality(
                statistics=MetricsSource(content_type="application/json", s3_uri=evaluation_uri)))),
        retry_policies=[SERVICE_RETRY])

    # 9. The gate: four checks in a row, each with a Fail step named after what it found; the first failure stops.
    def fail(name: str, display_name: str, *reason) -> FailStep:
        return FailStep(name=name, display_name=display_name,
                        description=f"{display_name}: the challenger is not registered.",
                        error_message=Join(on="", values=["Not registered: ", *reason, ". Measured: ",
                                                          report("summary")]))

    checks = [
        ("CheckChampion", "Check against champion",
         "No champion yet, or the champion's advantage in precision at the target recall, at its lower bound, "
         "<= MaxShortfallVsChampion.",
         [ConditionOr(conditions=[
             ConditionEquals(left=report("vs_champion.present"), right=False),
             ConditionLessThanOrEqualTo(left=report("vs_champion.shortfall.lower"),
                                        right=max_shortfall_vs_champion)])],
         fail("WorseThanChampion", "Worse than champion", "the model in service beats it on the same test slice in "
              "precision at the target recall by more than MaxShortfallVsChampion (", max_shortfall_vs_champion,
              ") at the lower bound")),
        ("CheckLift", "Check lift over base rate",
         "The lower bound of lift (precision minus the test slice's base rate) >= MinLift.",
         [ConditionGreaterThanOrEqualTo(left=report("lift.lower"), right=min_lift)],
         fail("NoLiftOverBaseRate", "No lift over base rate", "the lower bound of lift over the base rate "
              "(precision minus the share of winning trades) is below MinLift (", min_lift, ")")),
        ("CheckBaseline", "Check against baseline",
         "The baseline's advantage in precision at the target recall, at its lower bound, <= MaxShortfallVsBaseline.",
         [ConditionLessThanOrEqualTo(left=report("vs_baseline.shortfall.lower"), right=max_shortfall_vs_baseline)],
         fail("WorseThanBaseline", "Worse than baseline", "a logistic regression on the same slices beats it in "
              "precision at the target recall by more than MaxShortfallVsBaseline (", max_shortfall_vs_baseline,
              ") at the lower bound")),
        ("CheckPrecision", "Check precision", "The lower bound of precision at the model's threshold >= MinPrecision.",
         [ConditionGreaterThanOrEqualTo(left=report("binary_classification_metrics.precision.lower"),
                                        right=min_precision)],
         fail("PrecisionTooLow", "Precision too low", "the lower bound of precision is below MinPrecision (",
              min_precision, ")")),
    ]
    next_step = register
    for name, display_name, description, conditions, failure in reversed(checks):
        next_step = ConditionStep(name=name, display_name=display_name, description=description,
                                  conditions=conditions, if_steps=[next_step], else_steps=[failure])

    return Pipeline(
        name=pipeline_name, sagemaker_session=session,
        parameters=[input_bucket, input_manifest_key, epic, processing_instance_type, processing_instance_count,
                    training_instance_type, training_instance_count, target_recall, min_test_windows, min_precision,
                    min_lift, max_shortfall_vs_baseline, max_shortfall_vs_champion, model_approval_status],
        steps=[preprocess, tune, fit_baseline, create_model, transform, find_champion, transform_champion, evaluate,
               next_step])


def script_job(bundle, role_arn: str, image: str, instance_type, pipeline_name: str, session, inputs: list,
               outputs: list, arguments: list, instance_count=1):
    """A processing job that runs a code bundle's script in the scikit-learn image."""
    processor = Processor(role=role_arn, image_uri=image, instance_count=instance_count, instance_type=instance_type,
                          entrypoint=["python3", f"{CODE_DIR}/{bundle.script}"],
                          base_job_name=f"{pipeline_name}-{Path(bundle.script).stem}", sagemaker_session=session)
    return processor.run(inputs=[s3_input("code", bundle.s3_prefix, CODE_DIR), *inputs], outputs=outputs,
                         arguments=arguments)


def get_monitor_pipeline(region: str, role_arn: str, bucket: str, pipeline_name: str, prefix: str,
                         code_dir: Path = PROCESSING_DIR, **_tuning) -> Pipeline:
    """The live-quality monitoring pipeline, `<pipeline name>-monitor`, which the template starts on a schedule:

        MeasureLiveQuality (processing/monitor.py over the endpoint's data capture and the trades' ground truth)
        → PublishLiveQuality (Lambda: its cloudwatch_metrics.json → PutMetricData, where the live-lift alarm
          watches)

    Each run writes s3://<bucket>/<prefix>/monitoring/<endpoint>/<start time>-<execution id>/ (newest last by
    name; one schedule per epic's endpoint)."""
    session = PipelineSession(boto_session=boto3.Session(region_name=region), default_bucket=bucket,
                              sagemaker_config=SDK_CONFIG)
    endpoint_name = ParameterString("EndpointName", default_value=Config.endpoint_name)
    window_hours = ParameterFloat("WindowHours", default_value=WINDOW_HOURS)
    dependence_seconds = ParameterFloat("DependenceSeconds", default_value=DEPENDENCE_SECONDS)
    min_windows = ParameterFloat("MinWindows", default_value=MIN_WINDOWS)
    instance_type = ParameterString("ProcessingInstanceType", default_value=INSTANCE_TYPE)
    output_uri = Join(on="/", values=["s3:/", bucket, prefix, "monitoring", endpoint_name, Join(on="-", values=[
        ExecutionVariables.START_DATETIME, ExecutionVariables.PIPELINE_EXECUTION_ID])])
    measure = ProcessingStep(
        name="MeasureLiveQuality", display_name="Measure live quality",
        description="Captured predictions joined with the trades' outcomes: live precision, recall, base rate and "
                    "lift per window and model version with 95 % block-bootstrap intervals (processing/monitor.py).",
        step_args=script_job(
            code_bundles(bucket, prefix, code_dir)["MeasureLiveQuality"], role_arn,
            image_uris.retrieve("sklearn", region, version=SKLEARN_VERSION), instance_type, pipeline_name, session,
            inputs=[s3_input("capture", Join(on="/", values=["s3:/", bucket, prefix, "datacapture", endpoint_name, ""]),
                             "/opt/ml/processing/input/capture"),
                    s3_input("groundtruth", f"s3://{bucket}/{prefix}/groundtruth/",
                             "/opt/ml/processing/input/groundtruth")],
            outputs=[s3_output("monitoring", "/opt/ml/processing/output", output_uri)],
            arguments=["--capture-dir", "/opt/ml/processing/input/capture",
                       "--ground-truth-dir", "/opt/ml/processing/input/groundtruth",
                       "--output-dir", "/opt/ml/processing/output", "--window-hours", window_hours.to_string(),
                       "--dependence-seconds", dependence_seconds.to_string(),
                       "--min-windows", min_windows.to_string(), "--endpoint", endpoint_name]),
        retry_policies=[SERVICE_RETRY, JOB_RETRY])
    publish = LambdaStep(
        name="PublishLiveQuality", display_name="Publish live quality",
        description="The monitor's cloudwatch_metrics.json → PutMetricData (lambdas/publish_live_quality.py).",
        lambda_func=Lambda(function_arn=function_arn(region, role_arn, pipeline_name, PUBLISH_FUNCTION_SUFFIX),
                           session=session),
        inputs={"MetricsUri": Join(on="/", values=[
            measure.properties.ProcessingOutputConfig.Outputs["monitoring"].S3Output.S3Uri, METRICS_FILE])},
        outputs=[LambdaOutput(output_name="DataPoints")])
    return Pipeline(name=monitor_pipeline_name(pipeline_name), sagemaker_session=session,
                    parameters=[endpoint_name, window_hours, dependence_seconds, min_windows, instance_type],
                    steps=[measure, publish])


@contextmanager
def _sdk_workarounds():
    """What the build needs of the SDK's process-wide state, for the build's time only.

    The environment of `_sdk_environment`; and the SDK validates the session's config against its JSON schema
    at every lookup (about 70 times, 4.5 of the 5 s a build takes), so SDK_CONFIG, validated once at import,
    is not validated again.
    """
    validate = SageMakerConfig.validate_sagemaker_config
    descriptor = vars(SageMakerConfig)["validate_sagemaker_config"]  # a staticmethod: restored as it was

    def validate_other_config(sagemaker_config=None):
        if sagemaker_config is not SDK_CONFIG:
            validate(sagemaker_config)

    with _BUILD_LOCK, _sdk_environment():
        SageMakerConfig.validate_sagemaker_config = staticmethod(validate_other_config)
        try:
            yield
        finally:
            SageMakerConfig.validate_sagemaker_config = descriptor


@contextmanager
def _quiet_build():
    """The SDK's workarounds, without its chatter on stderr; nothing global changes beyond the block."""
    with _sdk_workarounds(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Running within a PipelineSession, there will be No Wait…"
        logging.disable(logging.WARNING)  # "Popping out 'ProcessingJobName' from the pipeline definition…"
        try:
            yield
        finally:
            logging.disable(logging.NOTSET)


def build_definition(monitor: bool = False, **pipeline_args) -> str:
    """The definition JSON of `get_pipeline(**pipeline_args)`, or with `monitor` of get_monitor_pipeline's."""
    with _quiet_build():
        return (get_monitor_pipeline if monitor else get_pipeline)(**pipeline_args).definition()


def build_pipeline(**pipeline_args) -> Pipeline:
    """The SDK's Pipeline object of `get_pipeline(**pipeline_args)`, to start and watch runs with (its session's
    clients use the environment's AWS_ENDPOINT_URL, so it drives the local stack as it drives SageMaker)."""
    with _quiet_build():
        return get_pipeline(**pipeline_args)


def s3_input(name: str, s3_uri, local_path: str, data_type: str = "S3Prefix",
             distribution: str = "FullyReplicated") -> ProcessingInput:
    """A processing input downloaded before the script starts: all of it, or with "ShardedByS3Key" an instance's
    share of its objects."""
    return ProcessingInput(input_name=name, s3_input=ProcessingS3Input(
        s3_uri=s3_uri, local_path=local_path, s3_data_type=data_type, s3_input_mode="File",
        s3_data_distribution_type=distribution))


def s3_output(name: str, local_path: str, s3_uri) -> ProcessingOutput:
    """A processing output uploaded when the job ends."""
    return ProcessingOutput(output_name=name, s3_output=ProcessingS3Output(
        s3_uri=s3_uri, local_path=local_path, s3_upload_mode="EndOfJob"))
