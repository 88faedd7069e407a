"""The baseline step: a simple model fitted on the same slices as the challenger, scored on the same test slice.

    python baseline.py --train-dir T --validation-dir V --test-dir X --output-dir O [--target-recall 0.25]

Fits an L2-regularised logistic regression (scikit-learn, C = 0.001, on
standardised features) on the CSV files in T (all of them, in name order, as
Linear Learner reads a channel), chooses its decision threshold on those in V
as Linear Learner's `precision_at_target_recall` criterion does (the highest
precision among the thresholds that reach the target recall), and scores
those in X (validation and test read a chunk at a time: only the train slice
is held whole). Writes O/test_features.csv.out in
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
from collections.abc import Iterator
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
CHUNK_ROWS = 8192
REGULARISATION_C = 0.001  # strong L2: on 605 correlated price lags it scored best of 0.001-1 (bench/README)


def csv_files(directory: Path) -> list[Path]:
    """The slice's CSV files, in name order (as Linear Learner reads a channel); InputError when there are none."""
    files = sorted(Path(directory).glob("*.csv"))
    if not files:
        raise InputError(f"{directory}: no CSV files; check the step's input location")
    return files


def csv_chunks(directory: Path, labelled: bool) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """(float32 features, labels or None) of the slice's headerless CSV files, CHUNK_ROWS rows at a time, each
    checked: numeric and finite, the same number of columns throughout, a 0/1 label first when `labelled`;
    InputError naming the file otherwise."""
    import pandas as pd

    width = None
    for path in csv_files(directory):
        try:
            for chunk in pd.read_csv(path, header=None, dtype=np.float32, chunksize=CHUNK_ROWS):
                table = chunk.to_numpy()
                width = table.shape[1] if width is None else width
                if table.shape[1] != width:
                    raise InputError(f"{path}: {table.shape[1]} columns, other files have {width}")
                if not np.isfinite(table).all():
                    raise InputError(f"{path}: holds empty, NaN or infinite values")
                if labelled and not np.isin(table[:, 0], (0.0, 1.0)).all():
                    raise InputError(f"{path}: the first column must be a 0/1 label")
                yield table[:, labelled:], table[:, 0].astype(np.int64) if labelled else None
        except InputError:
            raise
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            raise InputError(f"{path}: not a numeric CSV ({str(exc).splitlines()[0]})") from None


def feature_count(directory: Path, labelled: bool) -> int:
    """The number of features in the slice's first rows."""
    features, _ = next(csv_chunks(directory, labelled), (None, None))
    if features is None:
        raise InputError(f"{directory}: the CSV files hold no rows")
    return features.shape[1]


def _lines(directory: Path) -> int:
    """Lines in the slice's files."""
    return sum(_count_lines(path) for path in csv_files(directory))


def _check_rows(directory: Path, rows: int, lines: int) -> None:
    """InputError unless `rows` rows were read, one per line of the slice's files (a blank line is skipped by the
    parser: its row would be missing from the predictions, which evaluate.py pairs with the test rows by line)."""
    if not rows or rows != lines:
        raise InputError(f"{directory}: {rows} rows read of {lines} lines; the CSV files hold no or blank rows")


def read_csv(directory: Path, labelled: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """(float32 features, labels or None) of the whole slice, in arrays sized by a count of the lines, so the slice
    is held once (float32, as Linear Learner computes: a million-trade train slice is 1.7 GB)."""
    rows = _lines(directory)
    features = labels = None
    done = 0
    for table, table_labels in csv_chunks(directory, labelled):
        if features is None:
            features = np.empty((rows, table.shape[1]), np.float32)
            labels = np.empty(rows, np.int64) if labelled else None
        features[done:done + len(table)] = table
        if labelled:
            labels[done:done + len(table)] = table_labels
        done += len(table)
    _check_rows(directory, done, rows)
    return features, labels


def _count_lines(path: Path) -> int:
    """Lines in a file, the last one counted whether or not it ends with a newline."""
    lines, last = 0, b"\n"
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            lines, last = lines + block.count(b"\n"), block[-1:]
    return lines + (last != b"\n")


def threshold_at_target_recall(labels: np.ndarray, scores: np.ndarray, target_recall: float) -> float:
    """The threshold with the highest precision among those reaching `target_recall` (ties: more recall)."""
    from sklearn.metrics import precision_recall_curve

    precision, recall, thresholds = precision_recall_curve(labels, scores)
    reaching = np.flatnonzero(recall[:-1] >= target_recall)
    best = reaching[precision[reaching] == precision[reaching].max()][0]  # thresholds ascend: first = most recall
    return float(thresholds[best])


def _both_labels(name: str, labels: np.ndarray) -> None:
    if labels.min() == labels.max():
        raise InputError(f"the {name} slice has only label {labels[0]}; the baseline needs both")


def fit(x: np.ndarray, y: np.ndarray):
    """(the fitted logistic regression, its StandardScaler) on the train slice, standardised in place."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    _both_labels("train", y)
    # Standardised CHUNK_ROWS rows at a time and in place: fitting the scaler on the whole slice at once makes
    # float64 temporaries of it (6.3 GB for a million trades where the slice takes 1.7 GB)
    scaler = StandardScaler(copy=False)
    for start in range(0, len(x), CHUNK_ROWS):
        scaler.partial_fit(x[start:start + CHUNK_ROWS])
    for start in range(0, len(x), CHUNK_ROWS):
        scaler.transform(x[start:start + CHUNK_ROWS])
    return LogisticRegression(C=REGULARISATION_C, max_iter=1000).fit(x, y), scaler


def score(model, scaler, directory: Path, labelled: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """(the model's scores, the labels or None) of a slice read CHUNK_ROWS rows at a time: never held whole."""
    scores, labels = [], []
    for features, chunk_labels in csv_chunks(directory, labelled):
        scores.append(model.predict_proba(scaler.transform(features))[:, 1])
        labels.append(chunk_labels)
    _check_rows(directory, sum(map(len, scores)), _lines(directory))
    return np.concatenate(scores), np.concatenate(labels) if labelled else None


def run(train_dir, validation_dir, test_dir, output_dir, target_recall: float = 0.25) -> float:
    """Fit, score and write the predictions (atomically); returns the threshold. Raises InputError."""
    x, y = read_csv(Path(train_dir), labelled=True)
    widths = {x.shape[1], feature_count(Path(validation_dir), True), feature_count(Path(test_dir), False)}
    if len(widths) != 1:
        raise InputError(f"the slices have different numbers of features ({sorted(widths)}); "
                         f"they must come from one Preprocess run")
    model, scaler = fit(x, y)
    del x  # the validation and test slices are scored a chunk at a time, beside the model only
    validation_scores, validation_labels = score(model, scaler, Path(validation_dir), labelled=True)
    _both_labels("validation", validation_labels)
    threshold = threshold_at_target_recall(validation_labels, validation_scores, target_recall)
    scores, _ = score(model, scaler, Path(test_dir), labelled=False)
    lines = (json.dumps({"score": float(s), "predicted_label": int(s >= threshold)}) + "\n" for s in scores)
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
