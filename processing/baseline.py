"""The baseline step: a simple model fitted on the same slices as the challenger, scored on the same test slice.

    python baseline.py --train-dir T --validation-dir V --test-dir X --output-dir O [--target-recall 0.25]

Fits an L2-regularised logistic regression (scikit-learn, C = 0.001, on
standardised features) on T/train.csv, chooses its decision threshold on
V/validation.csv as Linear Learner's `precision_at_target_recall` criterion
does (the highest precision among the thresholds that reach the target
recall), and scores X/test_features.csv. Writes O/test_features.csv.out in
the layout of Batch Transform's output (one `{"score": …, "predicted_label": …}`
per line), so that evaluate.py reads the baseline like any other model.

If a tuned Linear Learner cannot beat this, the tuning bought nothing: the
pipeline registers a challenger only when it is not significantly worse.

Runs in SageMaker's scikit-learn Processing container (numpy, pandas,
scikit-learn). Bad input → one line on stderr, exit 1, no output.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

try:  # in the Processing container a sibling file; in tests and the CLI, a package module
    from script_io import PREDICTIONS_FILE, InputError, recall_fraction, write_atomically
except ImportError:
    from processing.script_io import PREDICTIONS_FILE, InputError, recall_fraction, write_atomically

DEFAULT_TRAIN_DIR = "/opt/ml/processing/input/train"
DEFAULT_VALIDATION_DIR = "/opt/ml/processing/input/validation"
DEFAULT_TEST_DIR = "/opt/ml/processing/input/test"
DEFAULT_OUTPUT_DIR = "/opt/ml/processing/output"
TRAIN_FILE, VALIDATION_FILE, TEST_FEATURES_FILE = "train.csv", "validation.csv", "test_features.csv"
REGULARISATION_C = 0.001  # strong L2: on 605 correlated price lags it scored best of 0.001-1 (bench/README)


def read_csv(path: Path, labelled: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """(features, labels or None) from a headerless CSV; labels are the first column when `labelled`."""
    import pandas as pd

    try:
        table = pd.read_csv(path, header=None, dtype=np.float64).to_numpy()
    except FileNotFoundError:
        raise InputError(f"{path}: missing; check the step's input location") from None
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise InputError(f"{path}: not a numeric CSV ({str(exc).splitlines()[0]})") from None
    if not np.isfinite(table).all():
        raise InputError(f"{path}: holds empty, NaN or infinite values")
    if not labelled:
        return table, None
    labels = table[:, 0]
    if not np.isin(labels, (0.0, 1.0)).all():
        raise InputError(f"{path}: the first column must be a 0/1 label")
    return table[:, 1:], labels.astype(np.int64)


def threshold_at_target_recall(labels: np.ndarray, scores: np.ndarray, target_recall: float) -> float:
    """The threshold with the highest precision among those reaching `target_recall` (ties: more recall)."""
    from sklearn.metrics import precision_recall_curve

    precision, recall, thresholds = precision_recall_curve(labels, scores)
    reaching = np.flatnonzero(recall[:-1] >= target_recall)
    best = reaching[precision[reaching] == precision[reaching].max()][0]  # thresholds ascend: first = most recall
    return float(thresholds[best])


def fit_and_score(train: tuple, validation: tuple, test_features: np.ndarray, target_recall: float):
    """(test scores, test predicted labels, threshold)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    (x, y), (xv, yv) = train, validation
    for name, labels in (("train", y), ("validation", yv)):
        if labels.min() == labels.max():
            raise InputError(f"the {name} slice has only label {labels[0]}; the baseline needs both")
    model = make_pipeline(StandardScaler(), LogisticRegression(C=REGULARISATION_C, max_iter=1000))
    model.fit(x, y)
    threshold = threshold_at_target_recall(yv, model.predict_proba(xv)[:, 1], target_recall)
    scores = model.predict_proba(test_features)[:, 1]
    return scores, (scores >= threshold).astype(np.int64), threshold


def run(train_dir, validation_dir, test_dir, output_dir, target_recall: float = 0.25) -> float:
    """Fit, score and write the predictions (atomically); returns the threshold. Raises InputError."""
    train = read_csv(Path(train_dir) / TRAIN_FILE, labelled=True)
    validation = read_csv(Path(validation_dir) / VALIDATION_FILE, labelled=True)
    test_features, _ = read_csv(Path(test_dir) / TEST_FEATURES_FILE, labelled=False)
    widths = {train[0].shape[1], validation[0].shape[1], test_features.shape[1]}
    if len(widths) != 1:
        raise InputError(f"the slices have different numbers of features ({sorted(widths)}); "
                         f"they must come from one Preprocess run")
    scores, predicted, threshold = fit_and_score(train, validation, test_features, target_recall)
    lines = (json.dumps({"score": float(s), "predicted_label": int(p)}) + "\n"
             for s, p in zip(scores, predicted, strict=True))
    write_atomically(output_dir, PREDICTIONS_FILE, lambda out: out.writelines(lines))
    return threshold


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-dir", default=DEFAULT_TRAIN_DIR)
    parser.add_argument("--validation-dir", default=DEFAULT_VALIDATION_DIR)
    parser.add_argument("--test-dir", default=DEFAULT_TEST_DIR)
    parser.add_argument("--output-dir", default=DEFAULT_OUTPUT_DIR)
    parser.add_argument("--target-recall", type=recall_fraction, default=0.25)
    args = parser.parse_args(argv)
    try:
        threshold = run(args.train_dir, args.validation_dir, args.test_dir, args.output_dir, args.target_recall)
    except (InputError, OSError) as exc:
        print(f"baseline: error: {exc}", file=sys.stderr)
        return 1
    print(f"baseline: logistic regression (C={REGULARISATION_C}) scored the test slice; threshold {threshold:.3f} "
          f"chosen on validation for recall {args.target_recall:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
