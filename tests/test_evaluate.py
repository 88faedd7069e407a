"""processing/evaluate.py: hand-computed metrics on known inputs, the JSON layout, bad input."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from processing import evaluate as ev

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "processing" / "evaluate.py"

# Ten test rows; the model's own threshold is 0.35 (so predicted_label is not score > 0.5).
LABELS = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
SCORES = [0.9, 0.8, 0.6, 0.3, 0.7, 0.4, 0.2, 0.1, 0.05, 0.76]
PREDICTED = [1, 1, 1, 0, 1, 1, 0, 0, 0, 1]


def write_inputs(tmp_path: Path, labels=LABELS, scores=SCORES, predicted=PREDICTED) -> tuple[Path, Path]:
    predictions, label_dir = tmp_path / "predictions", tmp_path / "labels"
    predictions.mkdir()
    label_dir.mkdir()
    lines = [json.dumps({"score": s, "predicted_label": float(p)}) for s, p in zip(scores, predicted, strict=True)]
    (predictions / ev.PREDICTIONS_FILE).write_text("".join(line + "\n" for line in lines))
    (label_dir / ev.LABELS_FILE).write_text("".join(f"{label}\n" for label in labels))
    return predictions, label_dir


def run_script(predictions: Path, labels: Path, output: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--predictions-dir", predictions, "--labels-dir", labels,
                           "--output-dir", output, *map(str, args)], capture_output=True, text=True, timeout=120)


def test_metrics_of_known_inputs(tmp_path):
    predictions, labels = write_inputs(tmp_path)
    result = run_script(predictions, labels, tmp_path / "evaluation", "--target-recall", 0.3,
                        "--recall-tolerance", 0.1)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "evaluation" / ev.EVALUATION_FILE).read_text())
    metrics = report["binary_classification_metrics"]
    # TP 3 (0.9 0.8 0.6), FN 1 (0.3), FP 3 (0.7 0.4 0.76), TN 3
    assert metrics["confusion_matrix"] == {"0": {"0": 3, "1": 3}, "1": {"0": 1, "1": 3}}
    assert metrics["precision"]["value"] == pytest.approx(3 / 6)
    assert metrics["recall"]["value"] == pytest.approx(3 / 4)
    assert metrics["f1"]["value"] == pytest.approx(2 * 0.5 * 0.75 / 1.25)
    assert metrics["accuracy"]["value"] == pytest.approx(6 / 10)
    # positive-over-negative pairs: 0.9 → 6, 0.8 → 6, 0.6 → 4, 0.3 → 3, of 4 × 6
    assert metrics["auc"]["value"] == pytest.approx(19 / 24)
    # score > 0.75: 0.9 (1), 0.8 (1), 0.76 (0)
    assert report["at_score_0_75"] == {"precision": pytest.approx(2 / 3), "recall": pytest.approx(2 / 4), "count": 3}
    assert report["positive_rate"] == pytest.approx(0.4) and report["samples"] == 10
    assert report["target_recall"] == {"target": 0.3, "tolerance": 0.1, "minimum_recall": 0.2}
    for name in ("precision", "recall", "f1", "auc", "accuracy"):
        assert 0 < metrics[name]["standard_deviation"] < 0.5, name
    assert result.stdout.startswith("evaluate: 10 test rows, positive rate 0.400: precision 0.5, recall 0.75")


def test_standard_deviations_are_reproducible_and_match_the_binomial_error(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 4000)
    scores = np.clip(0.3 * labels + 0.7 * rng.random(4000), 0, 1)
    predicted = (scores > 0.5).astype(int)
    first = ev.evaluate(labels, scores, predicted, 0.25, 0.05)["binary_classification_metrics"]
    again = ev.evaluate(labels, scores, predicted, 0.25, 0.05)["binary_classification_metrics"]
    assert first == again
    accuracy = first["accuracy"]["value"]
    binomial = np.sqrt(accuracy * (1 - accuracy) / len(labels))
    assert first["accuracy"]["standard_deviation"] == pytest.approx(binomial, rel=0.25)
    precision = first["precision"]["value"]
    binomial = np.sqrt(precision * (1 - precision) / predicted.sum())
    assert first["precision"]["standard_deviation"] == pytest.approx(binomial, rel=0.25)


def test_undefined_values_follow_sagemaker_conventions():
    report = ev.evaluate(np.zeros(5, int), np.linspace(0.1, 0.9, 5), np.zeros(5, int), 0.25, 0.05)
    metrics = report["binary_classification_metrics"]
    assert metrics["auc"] == {"value": "NaN", "standard_deviation": "NaN"}  # one label: no ranking to judge
    assert metrics["precision"]["value"] == 0.0 and metrics["recall"]["value"] == 0.0  # nothing predicted
    assert metrics["accuracy"]["value"] == 1.0
    assert report["at_score_0_75"] == {"precision": 0.0, "recall": 0.0, "count": 1}


def test_defaults_for_the_target_recall(tmp_path):
    predictions, labels = write_inputs(tmp_path)
    assert ev.main(["--predictions-dir", str(predictions), "--labels-dir", str(labels),
                    "--output-dir", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / ev.EVALUATION_FILE).read_text())
    assert report["target_recall"] == {"target": 0.25, "tolerance": 0.05, "minimum_recall": 0.2}


BAD_INPUTS = {  # case: (how to break the inputs, what the one line must say)
    "missing predictions": (lambda p, lab: (p / ev.PREDICTIONS_FILE).unlink(), "test_features.csv.out: missing"),
    "missing labels": (lambda p, lab: (lab / ev.LABELS_FILE).unlink(), "test_labels.csv: missing"),
    "line count mismatch": (lambda p, lab: (lab / ev.LABELS_FILE).write_text("1\n0\n"),
                            "test_features.csv.out: 10 predictions but"),
    "malformed JSON line": (lambda p, lab: (p / ev.PREDICTIONS_FILE).write_text('{"score": 0.4, "predicted_label": 0}\n'
                                                                               '{"score": 0.7\n'),
                            "test_features.csv.out: line 2: expected a JSON object"),
    "no score": (lambda p, lab: (p / ev.PREDICTIONS_FILE).write_text('{"predicted_label": 1}\n'),
                 "test_features.csv.out: line 1: expected a JSON object"),
    "label not 0 or 1": (lambda p, lab: (lab / ev.LABELS_FILE).write_text("1\n0\n2\n"),
                         "test_labels.csv: line 3: label must be 0 or 1"),
    "empty predictions": (lambda p, lab: (p / ev.PREDICTIONS_FILE).write_text(""), "test_features.csv.out: empty"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_fails_with_one_line_naming_the_file_and_writes_nothing(case, tmp_path, capsys):
    predictions, labels = write_inputs(tmp_path)
    breaks, message = BAD_INPUTS[case]
    breaks(predictions, labels)
    code = ev.main(["--predictions-dir", str(predictions), "--labels-dir", str(labels),
                    "--output-dir", str(tmp_path / "evaluation")])
    assert code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("evaluate: error: ") and message in lines[0], lines[0]
    assert not (tmp_path / "evaluation").exists()
