"""processing/evaluate.py: hand-computed metrics, the block bootstrap's coverage under known dependence, the
paired comparisons, the JSON layout, rounding, bad input."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import norm

from processing import evaluate as ev

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "processing" / "evaluate.py"

# Ten test rows opened a minute apart; the model's own threshold is 0.35 (so predicted_label is not score > 0.5).
LABELS = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
SCORES = [0.9, 0.8, 0.6, 0.3, 0.7, 0.4, 0.2, 0.1, 0.05, 0.76]
PREDICTED = [1, 1, 1, 0, 1, 1, 0, 0, 0, 1]


FIRST, SECOND = "test_features-00000.csv.out", "test_features-00001.csv.out"  # two shards' transform outputs


def write_predictions(directory: Path, scores, predicted) -> Path:
    """Batch Transform's output for a test slice in two files: the first rows, then the rest."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"score": s, "predicted_label": float(p)}) + "\n"
             for s, p in zip(scores, predicted, strict=True)]
    half = (len(lines) + 1) // 2
    (directory / SECOND).write_text("".join(lines[half:]))
    (directory / FIRST).write_text("".join(lines[:half]))  # written last: the order is the names', not the times'
    return directory


def write_inputs(tmp_path: Path, labels=LABELS, scores=SCORES, predicted=PREDICTED, dependence_seconds=120.0):
    """(predictions, test, metadata) directories for rows opened a minute apart, each trade 30 s long."""
    test, metadata = tmp_path / "test", tmp_path / "metadata"
    test.mkdir()
    metadata.mkdir()
    (test / ev.TEST_TRADES_FILE).write_text("trade_id,open_ms,close_ms,label,pnl\n" + "".join(
        f"T{i},{60_000 * i},{60_000 * i + 30_000},{label},{1.0 if label else -1.0}\n"
        for i, label in enumerate(labels)))
    (metadata / ev.FEATURES_FILE).write_text(json.dumps({"market_time": {"dependence_seconds": dependence_seconds}}))
    return write_predictions(tmp_path / "predictions", scores, predicted), test, metadata


def arguments(predictions, test, metadata, output, *more) -> list[str]:
    return ["--predictions-dir", str(predictions), "--test-dir", str(test), "--metadata-dir", str(metadata),
            "--output-dir", str(output), *map(str, more)]


def test_metrics_of_known_inputs(tmp_path):
    predictions, test, metadata = write_inputs(tmp_path)
    result = subprocess.run([sys.executable, str(SCRIPT), *arguments(predictions, test, metadata, tmp_path / "out",
                                                                      "--target-recall", 0.5)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "out" / ev.EVALUATION_FILE).read_text())
    metrics = report["binary_classification_metrics"]
    # TP 3 (0.9 0.8 0.6), FN 1 (0.3), FP 3 (0.7 0.4 0.76), TN 3
    assert metrics["confusion_matrix"] == {"0": {"0": 3, "1": 3}, "1": {"0": 1, "1": 3}}
    assert metrics["precision"]["value"] == pytest.approx(3 / 6)
    assert metrics["recall"]["value"] == pytest.approx(3 / 4)
    assert metrics["f1"]["value"] == pytest.approx(2 * 0.5 * 0.75 / 1.25)
    assert metrics["accuracy"]["value"] == pytest.approx(6 / 10)
    # positive-over-negative pairs: 0.9 → 6, 0.8 → 6, 0.6 → 4, 0.3 → 3, of 4 × 6
    assert metrics["auc"]["value"] == pytest.approx(19 / 24)
    assert report["base_rate"]["value"] == pytest.approx(0.4)
    assert report["lift"]["value"] == pytest.approx(0.5 - 0.4)
    # by score: 0.9 (1) 0.8 (1): recall 2/4 reaches the target at the second row, where precision is 2/2;
    # at target 0.75 it takes 0.76 (0), 0.7 (0) and 0.6 (1): 3/5
    assert report["precision_at_target_recall"]["value"] == 1.0
    assert report["precision_at_target_recall"]["target_recall"] == 0.5
    assert ev.model_metrics(np.array(LABELS), ev.score_groups(np.array(SCORES)), np.array(PREDICTED),
                            0.75)[-1] == pytest.approx(3 / 5)
    # 10 rows over 9 minutes; the dependence span of 2 minutes holds about 2.2 rows
    assert report["interval"]["block_rows"] == 2 and report["test_slice"] == {
        "trades": 10, "hours": 0.15, "dependence_seconds": 120.0, "independent_windows": 4.5}
    for name in ("precision", "recall", "f1", "accuracy", "auc"):
        assert set(metrics[name]) == {"value", "standard_deviation", "lower", "upper"}, name
    for name in ("precision", "recall", "f1", "accuracy"):  # (auc: some replicates of 10 rows hold one label)
        entry = metrics[name]
        assert 0 < entry["standard_deviation"] < 0.5 and entry["lower"] < entry["upper"], name
    assert report["vs_champion"]["present"] is False and "baseline" not in report
    assert result.stdout.startswith("evaluate: precision 0.5 [") and "no champion yet" in result.stdout


def test_intervals_are_reproducible(tmp_path):
    predictions, test, metadata = write_inputs(tmp_path)
    first = ev.run(predictions, test, metadata, tmp_path / "a")
    assert ev.run(predictions, test, metadata, tmp_path / "b") == first


def dependent_series(seed: int, rows: int, window: int, threshold: float) -> np.ndarray:
    """0/1 labels of a moving-average process: rows closer than `window` are dependent, the rest independent."""
    shocks = np.random.default_rng(seed).standard_normal(rows + window - 1)
    moving = np.convolve(shocks, np.ones(window) / math.sqrt(window), mode="valid")  # N(0, 1) at every row
    return (moving > threshold).astype(np.int64)


def test_block_bootstrap_covers_a_known_base_rate_under_dependence_where_an_iid_one_does_not(monkeypatch):
    """Labels that depend on the 20 rows around them (20 rows = one dependence span): the 95 % interval of the
    base rate should contain the true rate, 1 − Φ(0.5), about 95 % of the time; an iid bootstrap's should not."""
    monkeypatch.setattr(ev, "REPLICATES", 200)
    truth, window, rows, runs = 1 - norm.cdf(0.5), 20, 600, 60
    covered = {"block": 0, "iid": 0}
    for seed in range(runs):
        labels = dependent_series(seed, rows, window, 0.5)
        model = {"challenger": (np.zeros(rows), np.zeros(rows, np.int64))}
        for kind, block in (("block", window), ("iid", 1)):
            _, intervals = ev.bootstrap(labels, model, 0.25, block)
            _, lower, upper = intervals["base_rate"]
            covered[kind] += lower <= truth <= upper
    assert 0.88 <= covered["block"] / runs <= 0.99, covered
    assert covered["iid"] / runs < 0.6, covered


def test_block_length_is_the_rows_opened_within_one_dependence_span():
    opened = np.arange(0, 3_600_000, 30_000)  # one trade every 30 s for an hour
    assert ev.block_rows(opened, dependence_seconds=1500) == 50
    assert ev.block_rows(opened, dependence_seconds=10) == 1  # never below one row
    assert ev.block_rows(opened, dependence_seconds=10**6) == len(opened)  # never above the slice
    assert ev.block_rows(np.array([5]), dependence_seconds=1500) == 1


def test_a_model_compared_with_itself_differs_by_exactly_nothing_and_a_better_one_by_a_bounded_margin(tmp_path):
    rng = np.random.default_rng(1)
    rows = 1200
    labels = rng.integers(0, 2, rows)
    good = np.clip(0.6 * labels + 0.4 * rng.random(rows), 0, 1)
    noise = rng.random(rows)
    predictions, test, metadata = write_inputs(tmp_path, labels, good, (good > 0.5).astype(int), 60.0)
    write_predictions(tmp_path / "baseline", noise, (noise > 0.5).astype(int))
    write_predictions(tmp_path / "champion", good, (good > 0.5).astype(int))
    report = ev.run(predictions, test, metadata, tmp_path / "out", baseline_dir=tmp_path / "baseline",
                    champion_dir=tmp_path / "champion", champion_package_arn="arn:champion")
    assert report["vs_champion"]["difference"] == {"value": 0.0, "standard_deviation": 0.0, "lower": 0.0,
                                                   "upper": 0.0}
    assert report["champion"]["package_arn"] == "arn:champion"
    baseline = report["vs_baseline"]
    assert baseline["metric"] == "precision_at_target_recall" and baseline["present"] is True
    assert baseline["difference"]["lower"] > 0.3  # precision ≈ 1 against ≈ 0.5
    assert baseline["shortfall"] == {"value": -baseline["difference"]["value"],
                                     "standard_deviation": baseline["difference"]["standard_deviation"],
                                     "lower": -baseline["difference"]["upper"],
                                     "upper": -baseline["difference"]["lower"]}
    assert "minus the baseline's" in report["summary"] and "minus the champion's" in report["summary"]


def test_no_champion_means_nothing_to_fall_short_of(tmp_path):
    predictions, test, metadata = write_inputs(tmp_path)
    write_predictions(tmp_path / "champion", [0.5] * 3, [0] * 3)  # the pipeline scores the challenger here: ignored
    report = ev.run(predictions, test, metadata, tmp_path / "out", champion_dir=tmp_path / "champion",
                    champion_package_arn=ev.NO_CHAMPION)
    zero = {"value": 0.0, "standard_deviation": 0.0, "lower": 0.0, "upper": 0.0}
    assert report["vs_champion"] == {"present": False, "metric": "precision_at_target_recall",
                                     "note": "no approved model in the group yet: this would be its first model",
                                     "difference": zero, "shortfall": zero}
    assert "champion" not in report and report["summary"].count("no champion yet") == 1


def test_undefined_values_follow_sagemaker_conventions(tmp_path):
    predictions, test, metadata = write_inputs(tmp_path, [0] * 5, [0.1, 0.3, 0.5, 0.7, 0.9], [0] * 5)
    report = ev.run(predictions, test, metadata, tmp_path / "out")
    metrics = report["binary_classification_metrics"]
    assert metrics["auc"]["value"] == "NaN"  # one label: no ranking to judge
    assert metrics["precision"]["value"] == 0.0 and metrics["recall"]["value"] == 0.0  # nothing predicted
    assert metrics["accuracy"]["value"] == 1.0
    assert report["text"]["auc"] == "NaN"


@pytest.mark.parametrize("value, lower, upper, text", [
    (0.6667, 0.558, 0.748, "0.67 [0.56, 0.75]"),  # half-width 0.095: 950 rounds up to 0.10, two digits
    (0.2567, 0.1457, 0.3636, "0.26 [0.15, 0.36]"),  # 0.109: two significant digits
    (0.0123, 0.0081, 0.0161, "0.012 [0.008, 0.016]"),  # 0.004: one significant digit
    (0.5, 0.5, 0.5, "0.5000 [0.5000, 0.5000]"),  # no spread: four decimals
    (0.41, -0.2, 1.0, "0.4 [-0.2, 1.0]"),  # 0.6: one digit
])
def test_numbers_are_rounded_to_what_their_interval_supports(value, lower, upper, text):
    assert ev.rounded({"value": value, "lower": lower, "upper": upper}) == text


BAD_INPUTS = {  # case: (how to break the inputs, what the one line must say)
    "missing predictions": (lambda p, t, m: [(p / FIRST).unlink(), (p / SECOND).unlink()],
                            "predictions: no predictions (*.out)"),
    "missing test trades": (lambda p, t, m: (t / ev.TEST_TRADES_FILE).unlink(), "test_trades.csv: missing"),
    "missing metadata": (lambda p, t, m: (m / ev.FEATURES_FILE).unlink(), "features.json: missing"),
    "metadata without the dependence span": (lambda p, t, m: (m / ev.FEATURES_FILE).write_text("{}"),
                                             "features.json: no market_time.dependence_seconds"),
    "row count mismatch": (lambda p, t, m: (t / ev.TEST_TRADES_FILE).write_text(
        "trade_id,open_ms,close_ms,label,pnl\nT0,0,1,1,1.0\n"), "predictions: 10 predictions but"),
    "malformed JSON line": (lambda p, t, m: (p / SECOND).write_text(
        '{"score": 0.4, "predicted_label": 0}\n{"score": 0.7\n'), f"{SECOND}: line 2: expected a JSON"),
    "no score": (lambda p, t, m: (p / FIRST).write_text('{"predicted_label": 1}\n'),
                 f"{FIRST}: line 1: expected a JSON object"),
    "label not 0 or 1": (lambda p, t, m: (t / ev.TEST_TRADES_FILE).write_text(
        "trade_id,open_ms,close_ms,label,pnl\nT0,0,1,2,1.0\n"), "test_trades.csv: line 2: label must be 0 or 1"),
    "trades out of order": (lambda p, t, m: (t / ev.TEST_TRADES_FILE).write_text(
        "trade_id,open_ms,close_ms,label,pnl\nT0,5,6,1,1.0\nT1,4,6,0,-1.0\n"), "test_trades.csv: trades are not in"),
    "empty predictions": (lambda p, t, m: (p / FIRST).write_text(""), f"{FIRST}: empty"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_fails_with_one_line_naming_the_file_and_writes_nothing(case, tmp_path, capsys):
    predictions, test, metadata = write_inputs(tmp_path)
    breaks, message = BAD_INPUTS[case]
    breaks(predictions, test, metadata)
    assert ev.main(arguments(predictions, test, metadata, tmp_path / "evaluation")) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("evaluate: error: ") and message in lines[0], lines[0]
    assert not (tmp_path / "evaluation").exists()
