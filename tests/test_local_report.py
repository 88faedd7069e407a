"""The report's arithmetic and its page for an execution without tuning or evaluation.

The full report (tuning and confusion plots from a real run) is checked in test_local_pipeline_e2e.py.
"""

from __future__ import annotations

from pipelines.local.report import confusion_matrices, render_report


def test_confusion_at_score_is_derived_from_precision_and_count():
    evaluation = {"binary_classification_metrics": {"confusion_matrix": {"0": {"0": 50, "1": 10},
                                                                         "1": {"0": 20, "1": 20}}},
                  "at_score_0_75": {"precision": 0.8, "recall": 0.2, "count": 10}}
    matrices = confusion_matrices(evaluation)
    assert matrices["at the model's threshold"] == [[50, 10], [20, 20]]
    ((tn, fp), (fn, tp)) = matrices["at score > 0.75"]
    assert (tn, fp, fn, tp) == (58, 2, 32, 8)
    assert tp / (tp + fn) == evaluation["at_score_0_75"]["recall"]

    nothing_flagged = {**evaluation, "at_score_0_75": {"precision": None, "recall": 0.0, "count": 0}}
    assert confusion_matrices(nothing_flagged)["at score > 0.75"] == [[60, 0], [40, 0]]


def test_report_of_a_failed_execution_has_the_dag_and_the_reason(tmp_path):
    step = {"StartTime": "2026-01-05T10:00:00.000Z", "EndTime": "2026-01-05T10:00:02.500Z"}
    record = {
        "PipelineExecutionId": "abc123def456", "PipelineName": "p",
        "PipelineExecutionArn": "arn:aws:sagemaker:us-east-1:123456789012:pipeline/p/execution/abc123def456",
        "PipelineExecutionStatus": "Failed", "FailureReason": "value 0.41 < 0.5 <script>",
        "StartTime": "2026-01-05T10:00:00.000Z", "EndTime": "2026-01-05T10:00:05.000Z", "Parameters": {"X": 1},
        "Steps": {
            "Measure": {"StepName": "Measure", "StepType": "Processing", "StepStatus": "Succeeded", "Upstream": [],
                        "Branch": None, "Properties": {}, **step},
            "Check": {"StepName": "Check", "StepType": "Condition", "StepStatus": "Succeeded",
                      "Upstream": ["Measure"], "Branch": None, "Properties": {"Outcome": False}, **step},
            "Register": {"StepName": "Register", "StepType": "RegisterModel", "StepStatus": "NotExecuted",
                         "Upstream": ["Check", "Measure"], "Branch": ["Check", True]},
            "TooLow": {"StepName": "TooLow", "StepType": "Fail", "StepStatus": "Failed", "Upstream": ["Check"],
                       "Branch": ["Check", False], **step}}}
    page = render_report(record, tmp_path)
    text = page.read_text()
    assert (tmp_path / "dag.png").read_bytes().startswith(b"\x89PNG")
    assert "value 0.41 &lt; 0.5 &lt;script&gt;" in text and "<script>" not in text
    assert "tuning.png" not in text and "confusion.png" not in text
