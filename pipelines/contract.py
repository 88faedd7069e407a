"""Names and defaults of the pipeline that other parts rely on (EventBridge targets, the CLI, the local engine).

Defaults shared beyond the pipeline (names, the tuning budget) are in `livetrain.config.Config`.

Standard library only: the CLI imports this without the SageMaker SDK.
"""

from __future__ import annotations

PARAMETER_NAMES = ("InputBucket", "InputManifestKey", "Epic", "ProcessingInstanceType", "ProcessingInstanceCount",
                   "TrainingInstanceType", "TrainingInstanceCount",
                   "TargetRecall", "MinTestWindows", "MinPrecision", "MinLift", "MaxShortfallVsBaseline",
                   "MaxShortfallVsChampion", "ModelApprovalStatus")
GATE_STEPS = {  # each check of the quality gate, in the order the pipeline makes them, and its Fail step
    "CheckChampion": "WorseThanChampion",  # keep the model in service when it does better on this very slice
    "CheckLift": "NoLiftOverBaseRate",  # no better than flagging trades at random
    "CheckBaseline": "WorseThanBaseline",  # the tuning bought nothing over a simple model
    "CheckPrecision": "PrecisionTooLow",  # skill, but too little precision to trade on
}
STEP_NAMES = ("Preprocess", "TuneLinearLearner", "FitBaseline", "BestModel", "TransformTest", "FindChampion",
              "TransformChampion", "EvaluateBestModel", *GATE_STEPS, "RegisterBestModel", *GATE_STEPS.values())
EVALUATION_REPORT = "EvaluationReport"  # the PropertyFile on EvaluateBestModel (evaluation.json)

# A role ARN no account has: `livetrain pipeline definition` uses it when no role is given.
PLACEHOLDER_ROLE_ARN = "arn:aws:iam::000000000000:role/livetrain-placeholder-pass-role-arn"
INSTANCE_TYPE = "ml.m5.xlarge"
TARGET_RECALL = 0.25
# The gate's defaults; each bounds one side of a 95 % block-bootstrap interval on the test slice (README, "The gate").
MIN_PRECISION = 0.4  # lower bound of precision at the model's threshold
MIN_LIFT = 0.05  # lower bound of precision minus the base rate: flagged trades win clearly more often than trades do
MAX_SHORTFALL_VS_BASELINE = 0.0  # lower bound of (baseline − challenger) in precision at the target recall
MAX_SHORTFALL_VS_CHAMPION = 0.0  # … and of (champion − challenger): not significantly worse than the model in service
CHAMPION_FUNCTION_SUFFIX = "-find-champion"  # the FindChampion Lambda is named <pipeline name><this>
# The live-quality monitor: a second pipeline, <pipeline name><MONITOR_PIPELINE_SUFFIX>, that the template starts on a
# schedule (and the local stack on a timer); its Lambda step publishes the figures as CloudWatch metrics.
MONITOR_PIPELINE_SUFFIX = "-monitor"
PUBLISH_FUNCTION_SUFFIX = "-publish-live-quality"
MONITOR_PARAMETER_NAMES = ("EndpointName", "WindowHours", "DependenceSeconds", "MinWindows", "ProcessingInstanceType")


def monitor_pipeline_name(pipeline_name: str) -> str:
    """The live-quality monitoring pipeline that goes with a training pipeline."""
    return f"{pipeline_name}{MONITOR_PIPELINE_SUFFIX}"


def function_arn(region: str, role_arn: str, pipeline_name: str, suffix: str) -> str:
    """The ARN of one of the pipelines' Lambda functions, `<pipeline name><suffix>`, in the pipeline role's account
    and region (the template creates them)."""
    account = role_arn.split(":")[4]
    return f"arn:aws:lambda:{region}:{account}:function:{pipeline_name}{suffix}"


def champion_function_arn(region: str, role_arn: str, pipeline_name: str) -> str:
    """The FindChampion Lambda's ARN."""
    return function_arn(region, role_arn, pipeline_name, CHAMPION_FUNCTION_SUFFIX)


def manifest_epic(key: str) -> str | None:
    """The epic of a batch manifest's key, `batches/<epic>/…` (the batch contract's layout; the epic's rule matches
    that prefix), or None for a key outside it."""
    from processing.batch_contract import BATCHES_PREFIX

    parts = key.split("/")
    return parts[1] if len(parts) > 2 and parts[0] == BATCHES_PREFIX and parts[1] else None
