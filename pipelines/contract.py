"""Names and defaults of the pipeline that other parts rely on (EventBridge targets, the CLI, the local engine).

Defaults shared beyond the pipeline (names, the tuning budget) are in `livetrain.config.Config`.

Standard library only: the CLI imports this without the SageMaker SDK.
"""

from __future__ import annotations

PARAMETER_NAMES = ("InputBucket", "InputManifestKey", "ProcessingInstanceType", "TrainingInstanceType",
                   "TargetRecall", "MinPrecision", "ModelApprovalStatus")
STEP_NAMES = ("Preprocess", "TuneLinearLearner", "BestModel", "TransformTest", "EvaluateBestModel",
              "CheckPrecision", "RegisterBestModel", "PrecisionTooLow")
EVALUATION_REPORT = "EvaluationReport"  # the PropertyFile on EvaluateBestModel (evaluation.json)

# A role ARN no account has: `livetrain pipeline definition` uses it when no role is given.
PLACEHOLDER_ROLE_ARN = "arn:aws:iam::000000000000:role/livetrain-placeholder-pass-role-arn"
INSTANCE_TYPE = "ml.m5.xlarge"
TARGET_RECALL = 0.25
# Precision at the model's own threshold on the held-out test slice. The planted-signal market and
# live trades run at a positive rate well under one half; 0.5 means "a flagged trade wins more often
# than not", the least a model must do to be worth trading on.
MIN_PRECISION = 0.5
RECALL_TOLERANCE = 0.05  # CheckPrecision accepts recall >= TargetRecall - this (evaluate.py computes it)
