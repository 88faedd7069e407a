"""The evaluation step: the challenger, a simple baseline and the model in service, scored on one test slice.

    python evaluate.py --predictions-dir P --test-dir T --metadata-dir M --output-dir E
                       [--baseline-dir B] [--champion-dir C --champion-package-arn ARN] [--target-recall 0.25]

Reads, for each model, the `*.out` files in its folder in name order (JSON Lines, one
`{"score": …, "predicted_label": …}` per test row, as Linear Learner's Batch
Transform writes them, one per test feature file): P is the challenger, B the baseline (baseline.py), C the
champion (the latest Approved package of the group, scored by its own Batch
Transform). T/test_trades.csv gives each test row's label and open and close
times; M/features.json gives the dependence span (look-back plus longest trade)
that preprocess.py measured. Writes E/evaluation.json:

    binary_classification_metrics   the challenger at its own threshold (SageMaker's model quality layout):
                                    precision, recall, f1, accuracy, auc, and the confusion matrix
    base_rate, lift                 the share of winning trades; precision − base rate
    precision_at_target_recall      precision where the test precision-recall curve first reaches TargetRecall
    baseline, champion              the same metrics for each of them
    vs_baseline, vs_champion        paired comparison on precision_at_target_recall: the difference
                                    (challenger − other) and the shortfall (other − challenger)
    test_slice, interval            what the slice covers; how the intervals were computed
    text, summary                   each number rounded to what its interval supports, and one line of them all

Every metric is `{"value", "standard_deviation", "lower", "upper"}`. Trades
overlap in time (a label depends on prices up to the trade's close, the
features on the look-back before its open), so neighbouring test rows are
nearly one sample: the intervals come from a circular block bootstrap
(Politis & Romano 1992, `arch.bootstrap.CircularBlockBootstrap`) whose blocks
span one dependence span of market time, with every model resampled on the
same rows (a paired bootstrap) and every threshold-dependent metric recomputed
in each replicate; 95 % percentile intervals. A ratio with a zero denominator
(e.g. precision with no positive predictions) is 0.

Runs in SageMaker's scikit-learn Processing container: numpy and the
standard library, plus `arch.bootstrap`, which the pipeline ships with this
script (it needs pandas and scipy, which the image has). Bad input → one line
on stderr, exit 1, no evaluation.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

import numpy as np

try:  # in the Processing container a sibling file; in tests and the CLI, a package module
    from script_io import InputError, recall_fraction, write_atomically
except ImportError:
    from processing.script_io import InputError, recall_fraction, write_atomically

DEFAULT_PREDICTIONS_DIR = "/opt/ml/processing/input/predictions"
DEFAULT_TEST_DIR = "/opt/ml/processing/input/test"
DEFAULT_METADATA_DIR = "/opt/ml/processing/input/metadata"
DEFAULT_OUTPUT_DIR = "/opt/ml/processing/evaluation"
TEST_TRADES_FILE = "test_trades.csv"  # preprocess.py's test/test_trades.csv
FEATURES_FILE = "features.json"  # preprocess.py's metadata/features.json
EVALUATION_FILE = "evaluation.json"
DEFAULT_TARGET_RECALL = 0.25
LEVEL = 0.95
REPLICATES = 1000
BOOTSTRAP_SEED = 0
MODEL_METRICS = ("precision", "recall", "f1", "accuracy", "auc", "lift", "precision_at_target_recall")
THRESHOLD_METRICS = ("precision", "recall", "f1", "accuracy")
COMPARED = "precision_at_target_recall"
BASELINE_DESCRIPTION = "L2-regularised logistic regression on the same features (baseline.py)"
NO_CHAMPION = "none"


# ---------------------------------------------------------------- reading


def read_predictions(directory: Path) -> tuple[np.ndarray, np.ndarray]:
    """Scores and predicted labels from Batch Transform's JSON Lines outputs in `directory`, in name order."""
    files = sorted(Path(directory).glob("*.out"))
    if not files:
        raise InputError(f"{directory}: no predictions (*.out); check the step's input location")
    scores, predicted = [], []
    for path, number, line in ((file, number, line) for file in files
                               for number, line in enumerate(_lines(file), start=1)):
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


def read_test_trades(path: Path) -> dict[str, np.ndarray]:
    """label, open_ms and close_ms of each test row, from preprocess.py's test_trades.csv."""
    rows = list(csv.DictReader(_lines(path)))
    columns = {"label": [], "open_ms": [], "close_ms": []}
    for number, row in enumerate(rows, start=2):
        try:
            values = {name: float(row[name]) for name in columns}
        except (KeyError, TypeError, ValueError):
            raise InputError(f"{path}: line {number}: expected numeric {', '.join(columns)}") from None
        if values["label"] not in (0.0, 1.0) or values["close_ms"] < values["open_ms"]:
            raise InputError(f"{path}: line {number}: label must be 0 or 1 and close_ms not before open_ms")
        for name, value in values.items():
            columns[name].append(value)
    if not rows:
        raise InputError(f"{path}: no test trades; the test slice is empty")
    trades = {name: np.array(values, dtype=np.int64) for name, values in columns.items()}
    if np.any(np.diff(trades["open_ms"]) < 0):
        raise InputError(f"{path}: trades are not in open-time order")
    return trades


def read_dependence_seconds(path: Path) -> float:
    try:
        return float(json.loads(path.read_text())["market_time"]["dependence_seconds"])
    except FileNotFoundError:
        raise InputError(f"{path}: missing; check the step's input location") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{path}: no market_time.dependence_seconds ({exc})") from None


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


# ---------------------------------------------------------------- metrics of one model on one set of rows


def _ratio(numerator, denominator) -> float:
    return float(numerator / denominator) if denominator else 0.0


def score_groups(scores: np.ndarray) -> np.ndarray:
    """Each row's rank among the distinct scores, highest first (equal scores share a group)."""
    distinct = np.unique(scores)[::-1]
    return np.searchsorted(-distinct, -scores).astype(np.int64)


def model_metrics(labels: np.ndarray, groups: np.ndarray, predicted: np.ndarray, target_recall: float) -> np.ndarray:
    """MODEL_METRICS of one model, in that order; auc is NaN when the labels are all equal.

    `groups` are score_groups(scores): counting rows per group gives the precision-recall and ROC
    curves without sorting, so a bootstrap replicate costs a few passes over its rows.
    """
    positives, flagged = int(labels.sum()), int(predicted.sum())
    true_pos = int(np.sum(predicted & labels))
    precision, recall = _ratio(true_pos, flagged), _ratio(true_pos, positives)
    f1 = _ratio(2 * precision * recall, precision + recall)
    accuracy = float(np.mean(predicted == labels))
    size = int(groups.max()) + 1
    flagged_at = np.cumsum(np.bincount(groups, minlength=size))  # rows at or above each distinct score
    true_pos_at = np.cumsum(np.bincount(groups, weights=labels, minlength=size))
    reached = np.flatnonzero(true_pos_at >= target_recall * positives) if positives else []
    at_target = _ratio(true_pos_at[reached[0]], flagged_at[reached[0]]) if len(reached) else 0.0
    auc = _auc(true_pos_at, flagged_at, positives, len(labels))
    return np.array([precision, recall, f1, accuracy, auc, precision - labels.mean(), at_target])


def _auc(true_pos_at: np.ndarray, flagged_at: np.ndarray, positives: int, rows: int) -> float:
    """Area under the ROC curve from the cumulative counts at each distinct score (ties count one half)."""
    negatives = rows - positives
    if positives == 0 or negatives == 0:
        return math.nan
    tpr = np.r_[0.0, true_pos_at] / positives
    fpr = np.r_[0.0, flagged_at - true_pos_at] / negatives
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


# ---------------------------------------------------------------- the bootstrap


def block_rows(open_ms: np.ndarray, dependence_seconds: float) -> int:
    """Rows per dependence span of market time: the bootstrap's block length."""
    span = float(open_ms[-1] - open_ms[0])
    if span <= 0:
        return len(open_ms)
    return max(1, min(len(open_ms), round(len(open_ms) * 1000 * dependence_seconds / span)))


def bootstrap(labels: np.ndarray, models: dict[str, tuple[np.ndarray, np.ndarray]], target_recall: float,
              block: int) -> tuple[dict, dict]:
    """(values, intervals) of every model's metrics and of each comparison with the challenger.

    Keys are "base_rate", "<model>.<metric>" and "vs_<model>.difference"; intervals
    map each key to (standard deviation, lower, upper).
    """
    from arch.bootstrap import CircularBlockBootstrap

    names = list(models)
    keys = ["base_rate", *(f"{name}.{metric}" for name in names for metric in MODEL_METRICS)]
    keys += [f"vs_{name}.difference" for name in names[1:]]
    compared = MODEL_METRICS.index(COMPARED)

    def statistics(labels, *arrays):
        per_model = [model_metrics(labels, arrays[2 * i], arrays[2 * i + 1], target_recall)
                     for i in range(len(names))]
        differences = [per_model[0][compared] - other[compared] for other in per_model[1:]]
        return np.concatenate([[labels.mean()], *per_model, differences])

    arrays = [array for scores, predicted in models.values() for array in (score_groups(scores), predicted)]
    values = dict(zip(keys, statistics(labels, *arrays), strict=True))
    resampler = CircularBlockBootstrap(block, labels, *arrays, seed=BOOTSTRAP_SEED)
    covariance = np.atleast_2d(resampler.cov(statistics, reps=REPLICATES))
    bounds = resampler.conf_int(statistics, reps=REPLICATES, method="percentile", size=LEVEL, reuse=True)
    intervals = {key: (math.sqrt(covariance[i, i]), bounds[0, i], bounds[1, i]) for i, key in enumerate(keys)}
    return values, intervals


# ---------------------------------------------------------------- the report


def metric(value: float, interval: tuple[float, float, float]) -> dict:
    """{"value", "standard_deviation", "lower", "upper"}; NaN written as SageMaker writes it."""
    deviation, lower, upper = interval
    return {"value": _json_number(value), "standard_deviation": _json_number(deviation),
            "lower": _json_number(lower), "upper": _json_number(upper)}


def rounded(entry: dict) -> str:
    """"0.62 [0.49, 0.72]", with as many decimals as the interval supports.

    The Particle Data Group's rule: the half-width keeps two significant digits when its three
    leading digits are 100-354, one when they are 355-949, and rounds up to two at 950-999.
    """
    if "NaN" in (entry["value"], entry["lower"], entry["upper"]):
        return "NaN"
    half_width = (entry["upper"] - entry["lower"]) / 2
    decimals = 4
    if half_width > 0:
        exponent = math.floor(math.log10(half_width))
        leading = round(half_width / 10 ** (exponent - 2))
        if leading >= 950:
            exponent, leading = exponent + 1, 100
        decimals = min(4, max(0, (2 if leading < 355 else 1) - 1 - exponent))
    return f"{entry['value']:.{decimals}f} [{entry['lower']:.{decimals}f}, {entry['upper']:.{decimals}f}]"


def _json_number(value: float):
    return "NaN" if math.isnan(value) else float(value)  # as SageMaker's model quality reports write it


def evaluate(trades: dict[str, np.ndarray], models: dict[str, tuple[np.ndarray, np.ndarray]],
             dependence_seconds: float, target_recall: float, champion_package_arn: str | None) -> dict:
    """evaluation.json's content; `models` has "challenger" first, then "baseline" and "champion" if scored.

    A champion is the latest Approved package of the group; `champion_package_arn` names it.
    """
    labels = trades["label"]
    block = block_rows(trades["open_ms"], dependence_seconds)
    values, intervals = bootstrap(labels, models, target_recall, block)

    def metrics_of(name: str) -> dict:
        return {m: metric(values[f"{name}.{m}"], intervals[f"{name}.{m}"]) for m in MODEL_METRICS}

    challenger = metrics_of("challenger")
    predicted = models["challenger"][1]
    hours = float(trades["open_ms"][-1] - trades["open_ms"][0]) / 3.6e6
    report = {
        "binary_classification_metrics": {
            **{m: challenger[m] for m in (*THRESHOLD_METRICS, "auc")},
            "confusion_matrix": {str(actual): {str(guess): int(np.sum((labels == actual) & (predicted == guess)))
                                               for guess in (0, 1)} for actual in (0, 1)},
        },
        "base_rate": metric(values["base_rate"], intervals["base_rate"]),
        "lift": challenger["lift"],
        "precision_at_target_recall": {**challenger["precision_at_target_recall"], "target_recall": target_recall},
        "test_slice": {"trades": len(labels), "hours": round(hours, 2), "dependence_seconds": dependence_seconds,
                       "independent_windows": round(hours * 3600 / dependence_seconds, 1)},
        "interval": {"level": LEVEL, "method": "percentile", "replicates": REPLICATES, "seed": BOOTSTRAP_SEED,
                     "bootstrap": "circular block bootstrap (arch.bootstrap.CircularBlockBootstrap), paired "
                                  "across models", "block_rows": block,
                     "block": "rows opened within one dependence span (look-back plus the longest trade)"},
    }
    if "baseline" in models:
        report["baseline"] = {"description": BASELINE_DESCRIPTION, **metrics_of("baseline")}
        report["vs_baseline"] = _comparison(values, intervals, "baseline")
    if "champion" in models:
        report["champion"] = {"package_arn": champion_package_arn, **metrics_of("champion")}
    report["vs_champion"] = _comparison(values, intervals, "champion") if "champion" in models else _no_champion()
    report["text"] = _texts(report)
    report["summary"] = _summary(report)
    return report


def _comparison(values: dict, intervals: dict, other: str) -> dict:
    """Challenger − other on COMPARED, and the shortfall (other − challenger) the gate bounds."""
    key = f"vs_{other}.difference"
    deviation, lower, upper = intervals[key]
    return {"present": True, "metric": COMPARED, "difference": metric(values[key], intervals[key]),
            "shortfall": metric(-values[key], (deviation, -upper, -lower))}


def _no_champion() -> dict:
    """No model in service to fall short of: the comparison's numbers are those of the challenger with itself."""
    zero = metric(0.0, (0.0, 0.0, 0.0))
    return {"present": False, "note": "no approved model in the group yet: this would be its first model",
            "metric": COMPARED, "difference": zero, "shortfall": zero}


def _texts(report: dict) -> dict:
    texts = {m: rounded(report["binary_classification_metrics"][m]) for m in (*THRESHOLD_METRICS, "auc")}
    texts.update(base_rate=rounded(report["base_rate"]), lift=rounded(report["lift"]),
                 precision_at_target_recall=rounded(report["precision_at_target_recall"]))
    for other in ("baseline", "champion"):
        if other in report:
            texts[other] = {m: rounded(report[other][m]) for m in MODEL_METRICS}
        comparison = report.get(f"vs_{other}")
        if comparison and comparison["present"]:
            texts[f"vs_{other}"] = rounded(comparison["difference"])
    return texts


def _summary(report: dict) -> str:
    text, test = report["text"], report["test_slice"]
    parts = [f"precision {text['precision']} at recall {text['recall']}", f"base rate {text['base_rate']}",
             f"lift {text['lift']}", f"precision at recall {report['precision_at_target_recall']['target_recall']:g} "
             f"{text['precision_at_target_recall']}"]
    if "vs_baseline" in text:
        parts.append(f"minus the baseline's {text['baseline']['precision_at_target_recall']}: {text['vs_baseline']}")
    if "vs_champion" in text:
        parts.append(f"minus the champion's {text['champion']['precision_at_target_recall']}: {text['vs_champion']}")
    else:
        parts.append("no champion yet")
    return (f"{'; '.join(parts)} (95% intervals; test slice {test['trades']:,} trades over {test['hours']:.1f} h, "
            f"{test['independent_windows']:g} independent windows)")


# ---------------------------------------------------------------- the step


def run(predictions_dir, test_dir, metadata_dir, output_dir, baseline_dir=None, champion_dir=None,
        champion_package_arn: str | None = None, target_recall: float = DEFAULT_TARGET_RECALL) -> dict:
    """Read, check, evaluate and write evaluation.json (atomically); raises InputError for bad input."""
    trades = read_test_trades(Path(test_dir) / TEST_TRADES_FILE)
    dependence_seconds = read_dependence_seconds(Path(metadata_dir) / FEATURES_FILE)
    if champion_package_arn in (None, "", NO_CHAMPION):
        champion_dir = None  # (the pipeline scores the challenger in its place: there is nothing to compare)
    models = {}
    for name, directory in (("challenger", predictions_dir), ("baseline", baseline_dir), ("champion", champion_dir)):
        if directory is None:
            continue
        models[name] = read_predictions(Path(directory))
        if len(models[name][0]) != len(trades["label"]):
            raise InputError(f"{directory}: {len(models[name][0])} predictions but the test slice has "
                             f"{len(trades['label'])} trades; the transform must return one line per test row")
    report = evaluate(trades, models, dependence_seconds, target_recall, champion_package_arn)
    write_atomically(output_dir, EVALUATION_FILE, lambda out: out.write(json.dumps(report, indent=2) + "\n"))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--predictions-dir", default=DEFAULT_PREDICTIONS_DIR, help="the challenger's predictions")
    parser.add_argument("--test-dir", default=DEFAULT_TEST_DIR, help=f"holds {TEST_TRADES_FILE}")
    parser.add_argument("--metadata-dir", default=DEFAULT_METADATA_DIR, help=f"holds {FEATURES_FILE}")
    parser.add_argument("--output-dir", default=DEFAULT_OUTPUT_DIR, help="default: %(default)s")
    parser.add_argument("--baseline-dir", help="the baseline's predictions (baseline.py)")
    parser.add_argument("--champion-dir", help="the champion's predictions")
    parser.add_argument("--champion-package-arn", help=f"the champion's model package, or {NO_CHAMPION!r}")
    parser.add_argument("--target-recall", type=recall_fraction, default=DEFAULT_TARGET_RECALL)
    args = parser.parse_args(argv)
    try:
        report = run(args.predictions_dir, args.test_dir, args.metadata_dir, args.output_dir, args.baseline_dir,
                     args.champion_dir, args.champion_package_arn, args.target_recall)
    except (InputError, OSError) as exc:
        print(f"evaluate: error: {exc}", file=sys.stderr)
        return 1
    print(f"evaluate: {report['summary']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
