"""The evaluation step: Batch Transform predictions on the test slice + its labels → evaluation.json.

    python evaluate.py --predictions-dir P --labels-dir L --output-dir E
                       [--target-recall 0.25 --recall-tolerance 0.05]

Reads P/test_features.csv.out (JSON Lines, one `{"score": …, "predicted_label": …}`
per test row, as Linear Learner's Batch Transform writes it) and L/test_labels.csv
(one 0/1 label per line), and writes E/evaluation.json in SageMaker's model
quality layout:

    binary_classification_metrics: precision, recall, f1, accuracy (at the model's
        own threshold, i.e. its predicted_label), auc (from the scores), each
        {"value", "standard_deviation"}; confusion_matrix {actual: {predicted: count}}
    at_score_0_75: precision, recall and count of the rows with score > 0.75
    positive_rate, samples
    target_recall: {"target", "tolerance", "minimum_recall" = target − tolerance}
        (the pipeline's condition compares recall.value with minimum_recall)

standard_deviation is a bootstrap estimate: the standard deviation of the metric
over 100 resamples of the rows with replacement (seeded, so reruns agree), among
the resamples where it is defined (auc needs both labels); "NaN", as SageMaker
writes it, when it cannot be estimated. A ratio with a zero denominator (e.g.
precision with no positive predictions) is 0.

Runs in SageMaker's scikit-learn Processing container: numpy, scikit-learn and
the standard library only. Bad input → one line on stderr, exit 1, no evaluation.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

DEFAULT_PREDICTIONS_DIR = "/opt/ml/processing/input/predictions"
DEFAULT_LABELS_DIR = "/opt/ml/processing/input/labels"
DEFAULT_OUTPUT_DIR = "/opt/ml/processing/evaluation"
PREDICTIONS_FILE = "test_features.csv.out"
LABELS_FILE = "test_labels.csv"
EVALUATION_FILE = "evaluation.json"
HIGH_SCORE = 0.75
BOOTSTRAP_RESAMPLES = 100
BOOTSTRAP_SEED = 0


class InputError(ValueError):
    """Predictions or labels that cannot be evaluated; the message is one line naming the file."""


def read_predictions(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Scores and predicted labels from Batch Transform's JSON Lines output."""
    scores, predicted = [], []
    for number, line in enumerate(_lines(path), start=1):
        try:
            record = json.loads(line)
            score, label = float(record["score"]), float(record["predicted_label"])
        except (ValueError, TypeError, KeyError):
            raise InputError(f"{path}: line {number}: expected a JSON object with a numeric score and "
                             f"predicted_label, got {line[:80]!r}") from None
        if not (math.isfinite(score) and label in (0.0, 1.0)):
            raise InputError(f"{path}: line {number}: score must be a finite number and predicted_label 0 or 1")
        scores.append(score)
        predicted.append(int(label))
    return np.array(scores, dtype=np.float64), np.array(predicted, dtype=np.int64)


def read_labels(path: Path) -> np.ndarray:
    """The 0/1 labels of the test rows, one per line."""
    labels = []
    for number, line in enumerate(_lines(path), start=1):
        try:
            label = float(line)
        except ValueError:
            label = None
        if label not in (0.0, 1.0):
            raise InputError(f"{path}: line {number}: label must be 0 or 1, got {line[:80]!r}")
        labels.append(int(label))
    return np.array(labels, dtype=np.int64)


def _lines(path: Path) -> list[str]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InputError(f"{path}: missing; check the step's input location") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot be read ({exc})") from None
    lines = text.splitlines()
    if not lines:
        raise InputError(f"{path}: empty; the test slice has no rows")
    return lines


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator else 0.0


def threshold_metrics(labels: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Precision, recall, f1 and accuracy of 0/1 predictions (0 where a denominator is 0)."""
    tp = int(np.sum((predicted == 1) & (labels == 1)))
    precision, recall = _ratio(tp, np.sum(predicted == 1)), _ratio(tp, np.sum(labels == 1))
    return {"precision": precision, "recall": recall, "f1": _ratio(2 * precision * recall, precision + recall),
            "accuracy": _ratio(np.sum(predicted == labels), len(labels))}


def all_metrics(labels: np.ndarray, scores: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """The five binary classification metrics; auc is NaN when the labels are all equal."""
    auc = float(roc_auc_score(labels, scores)) if 0 < labels.sum() < len(labels) else math.nan
    return {**threshold_metrics(labels, predicted), "auc": auc}


def bootstrap_std(labels: np.ndarray, scores: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Standard deviation of each metric over seeded resamples of the rows (with replacement) where it is defined."""
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    draws = [all_metrics(labels[rows], scores[rows], predicted[rows])
             for rows in (rng.integers(0, len(labels), len(labels)) for _ in range(BOOTSTRAP_RESAMPLES))]
    deviations = {}
    for name in draws[0]:
        defined = [d[name] for d in draws if not math.isnan(d[name])]
        deviations[name] = float(np.std(defined, ddof=1)) if len(defined) > 1 else math.nan
    return deviations


def evaluate(labels: np.ndarray, scores: np.ndarray, predicted: np.ndarray, target_recall: float,
             recall_tolerance: float) -> dict:
    """evaluation.json's content (see the module docstring)."""
    values, deviations = all_metrics(labels, scores, predicted), bootstrap_std(labels, scores, predicted)
    metrics = {name: {"value": _json_number(values[name]), "standard_deviation": _json_number(deviations[name])}
               for name in ("precision", "recall", "f1", "auc", "accuracy")}
    metrics["confusion_matrix"] = {str(actual): {str(guess): int(np.sum((labels == actual) & (predicted == guess)))
                                                 for guess in (0, 1)} for actual in (0, 1)}
    high = (scores > HIGH_SCORE).astype(np.int64)
    at_high = threshold_metrics(labels, high)
    return {
        "binary_classification_metrics": metrics,
        "at_score_0_75": {"precision": at_high["precision"], "recall": at_high["recall"], "count": int(high.sum())},
        "positive_rate": float(labels.mean()),
        "samples": len(labels),
        "target_recall": {"target": target_recall, "tolerance": recall_tolerance,
                          "minimum_recall": max(0.0, round(target_recall - recall_tolerance, 10))},
    }


def _json_number(value: float):
    return "NaN" if math.isnan(value) else value  # as SageMaker's model quality reports write it


def run(predictions_dir: str | os.PathLike, labels_dir: str | os.PathLike, output_dir: str | os.PathLike,
        target_recall: float = 0.25, recall_tolerance: float = 0.05) -> dict:
    """Read, check, evaluate and write evaluation.json (atomically); raises InputError for bad input."""
    predictions_path, labels_path = Path(predictions_dir) / PREDICTIONS_FILE, Path(labels_dir) / LABELS_FILE
    scores, predicted = read_predictions(predictions_path)
    labels = read_labels(labels_path)
    if len(scores) != len(labels):
        raise InputError(f"{predictions_path}: {len(scores)} predictions but {labels_path} has {len(labels)} "
                         f"labels; the transform must return one line per test row")
    report = evaluate(labels, scores, predicted, target_recall, recall_tolerance)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=output_dir, prefix=".evaluation-", delete=False) as out:
        json.dump(report, out, indent=2)
        out.write("\n")
    os.replace(out.name, output_dir / EVALUATION_FILE)
    return report


def _recall(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, not {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--predictions-dir", default=DEFAULT_PREDICTIONS_DIR, help="default: %(default)s")
    parser.add_argument("--labels-dir", default=DEFAULT_LABELS_DIR, help="default: %(default)s")
    parser.add_argument("--output-dir", default=DEFAULT_OUTPUT_DIR, help="default: %(default)s")
    parser.add_argument("--target-recall", type=_recall, default=0.25)
    parser.add_argument("--recall-tolerance", type=_recall, default=0.05)
    args = parser.parse_args(argv)
    try:
        report = run(args.predictions_dir, args.labels_dir, args.output_dir, args.target_recall,
                     args.recall_tolerance)
    except (InputError, OSError) as exc:
        print(f"evaluate: error: {exc}", file=sys.stderr)
        return 1
    values = {name: metric["value"] for name, metric in report["binary_classification_metrics"].items()
              if name != "confusion_matrix"}
    print(f"evaluate: {report['samples']:,} test rows, positive rate {report['positive_rate']:.3f}: "
          + ", ".join(f"{name} {value if value == 'NaN' else round(value, 3)}" for name, value in values.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
