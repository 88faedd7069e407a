"""The report's arithmetic and its page for an execution without tuning or evaluation.

The full report (tuning and verdict plots from a real run) is checked in test_local_pipeline_e2e.py.
"""

from __future__ import annotations

import numpy as np

from pipelines.local.records import ExecutionStore
from pipelines.local.report import models_of, render_report
from processing import evaluate as ev


def evaluation_with_all_three_models() -> dict:
    """evaluation.json as evaluate.py writes it for a challenger, a baseline and a champion."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 600)
    scores = {name: np.clip(skill * labels + (1 - skill) * rng.random(600), 0, 1)
              for name, skill in (("challenger", 0.4), ("baseline", 0.2), ("champion", 0.3))}
    models = {name: (s, (s > 0.5).astype(np.int64)) for name, s in scores.items()}
    trades = {"label": labels, "open_ms": np.arange(600) * 30_000, "close_ms": np.arange(600) * 30_000 + 60_000}
    return ev.evaluate(trades, models, dependence_seconds=660.0, target_recall=0.25, champion_package_arn="arn:c")


def test_the_verdict_shows_each_model_with_its_intervals_beside_the_base_rate(tmp_path):
    evaluation = evaluation_with_all_three_models()
    assert list(models_of(evaluation)) == ["challenger", "baseline", "champion"]
    record = {"PipelineExecutionId": "e1", "PipelineName": "p", "PipelineExecutionArn": "arn:e1",
              "PipelineExecutionStatus": "Succeeded", "FailureReason": None, "StartTime": "2026-01-05T10:00:00.000Z",
              "EndTime": "2026-01-05T10:00:05.000Z", "Parameters": {},
              "Steps": {"EvaluateBestModel": {"StepName": "EvaluateBestModel", "StepType": "Processing",
                                              "StepStatus": "Succeeded", "Upstream": [], "Branch": None,
                                              "Properties": {"PropertyFiles": {"EvaluationReport": evaluation}}}}}
    text = render_report(record, tmp_path).read_text()
    for image in ("verdict.png", "confusion.png"):
        assert (tmp_path / image).read_bytes().startswith(b"\x89PNG")
    lift = evaluation["lift"]
    assert f"{lift['value']:.3f} [{lift['lower']:.3f}, {lift['upper']:.3f}]" in text
    assert "<th>challenger</th><th>baseline</th><th>champion</th>" in text
    assert "base rate (share of winning trades)" in text and "challenger − champion" in text
    assert "independent windows" in text and "circular block bootstrap" in text


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
    assert "tuning.png" not in text and "verdict.png" not in text


def test_an_out_directory_that_cannot_be_made_is_one_line(tmp_path, run_cli):
    ExecutionStore(tmp_path).save({"PipelineExecutionId": "e1", "PipelineName": "p", "PipelineExecutionArn": "arn:e1",
                                   "PipelineExecutionStatus": "Failed", "FailureReason": "r", "Parameters": {},
                                   "StartTime": "2026-01-05T10:00:00.000Z", "Steps": {}})
    (tmp_path / "a-file").write_text("")
    result = run_cli("report", "e1", "--state-dir", tmp_path, "--out", tmp_path / "a-file" / "report")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.splitlines() == [f"livetrain: error: cannot write the report to {tmp_path}/a-file/report "
                                          "(Not a directory); pass --out a directory you can create and write"]
