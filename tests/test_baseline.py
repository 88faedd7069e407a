"""processing/baseline.py: the logistic-regression baseline scores the test slice as Batch Transform would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from processing import baseline

SCRIPT = Path(__file__).resolve().parents[1] / "processing" / "baseline.py"


def write_slices(directory: Path, seed: int = 0, rows: int = 600, features: int = 8) -> dict[str, Path]:
    """train/validation (label first) and test features, where feature 0 carries the signal."""
    rng = np.random.default_rng(seed)
    dirs = {}
    for name, count in (("train", rows), ("validation", rows // 2), ("test", rows // 2)):
        x = rng.standard_normal((count, features))
        y = (x[:, 0] + 0.5 * rng.standard_normal(count) > 0.3).astype(int)
        table = x if name == "test" else np.column_stack([y, x])
        dirs[name] = directory / name
        dirs[name].mkdir(parents=True)
        half = count // 2  # two files per slice, as two shards write them
        np.savetxt(dirs[name] / f"{name}-00000.csv", table[:half], delimiter=",", fmt="%.6g")
        np.savetxt(dirs[name] / f"{name}-00001.csv", table[half:], delimiter=",", fmt="%.6g")
        if name == "test":
            dirs["test_labels"] = y
    return dirs


def run(dirs: dict, out: Path, *more) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--train-dir", dirs["train"], "--validation-dir",
                           dirs["validation"], "--test-dir", dirs["test"], "--output-dir", out, *map(str, more)],
                          capture_output=True, text=True, timeout=120)


def test_scores_every_test_row_with_a_threshold_chosen_on_validation(tmp_path):
    dirs = write_slices(tmp_path)
    result = run(dirs, tmp_path / "out", "--target-recall", 0.5)
    assert result.returncode == 0, result.stderr
    lines = (tmp_path / "out" / baseline.PREDICTIONS_FILE).read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 300 and set(records[0]) == {"score", "predicted_label"}
    scores = np.array([r["score"] for r in records])
    flagged = np.array([r["predicted_label"] for r in records]) == 1
    labels = dirs["test_labels"]
    assert flagged.any() and scores[flagged].min() > scores[~flagged].max()  # one threshold splits them
    assert labels[flagged].mean() > 0.8 > labels.mean()  # it learned the signal
    assert 0.35 < labels[flagged].sum() / labels.sum() < 0.65  # recall near the target of 0.5
    assert result.stdout.startswith("baseline: logistic regression (C=0.001) scored the test slice; threshold 0.")


def test_the_threshold_is_the_most_precise_one_reaching_the_target_recall():
    labels = np.array([1, 0, 1, 1, 0, 0, 1, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
    # recall ≥ 0.5 first at 0.7 (2 of 3 flagged win); at 0.6: 3 of 4 win, more precise and more recall
    assert baseline.threshold_at_target_recall(labels, scores, 0.5) == 0.6


def remove_files(directory: Path) -> None:
    for path in directory.iterdir():
        path.unlink()


@pytest.mark.parametrize("breaks, message", [
    (lambda d: remove_files(d["train"]), "train: no CSV files"),
    (lambda d: (d["validation"] / "validation-00001.csv").write_text("1,2,x\n"), "validation-00001.csv: not a numeric"),
    (lambda d: (d["train"] / "train-00001.csv").write_text("2,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5\n"),
     "train-00001.csv: the first column must be a 0/1 label"),
    (lambda d: (d["train"] / "train-00001.csv").write_text("1,0.5,0.5\n"), "train-00001.csv: 3 columns, other files"),
    (lambda d: [remove_files(d["test"]), (d["test"] / "test-00000.csv").write_text("1,2\n")],
     "different numbers of features"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, breaks, message):
    dirs = write_slices(tmp_path)
    breaks(dirs)
    result = run(dirs, tmp_path / "out")
    assert result.returncode == 1 and not (tmp_path / "out").exists()
    (line,) = result.stderr.splitlines()
    assert line.startswith("baseline: error: ") and message in line, line
