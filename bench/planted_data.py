"""A synthetic binary data set shaped like the pipeline's features (price lags), with a planted linear signal.

Used by the Linear Learner tests and benchmark while they need data of the real shape without running
the whole preprocessing: each row is a random walk over 605 lags (strongly correlated columns of growing
scale), and the label follows a logistic model of a few of them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SPLIT = (0.7, 0.15, 0.15)
DECIMALS = 3


def planted_data(rows: int, features: int = 605, seed: int = 0, strength: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    """(features (rows, features), 0/1 labels) with P(label=1) = sigmoid(strength * signal - 0.3)."""
    rng = np.random.default_rng(seed)
    walks = np.cumsum(rng.normal(0.0, 1.0, (rows, features)), axis=1)
    signal = walks[:, 4] - walks[:, 29] + 0.5 * (walks[:, 299] - walks[:, 119])
    signal /= signal.std()
    labels = (rng.random(rows) < 1.0 / (1.0 + np.exp(-(strength * signal - 0.3)))).astype(np.float64)
    return walks.round(DECIMALS), labels


def write_csv(path: Path, features: np.ndarray, labels: np.ndarray | None = None) -> Path:
    """A headerless CSV, label first when `labels` is given (what Linear Learner reads as text/csv).

    The numbers are planted_data's, rounded to DECIMALS: written exactly with the Preprocess step's writer."""
    from processing.preprocess import csv_text

    table = features if labels is None else np.column_stack([labels, features])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(csv_text(np.round(table * 10**DECIMALS).astype(np.int64), DECIMALS))
    return path


def write_channels(directory: Path, rows: int = 10_000, features: int = 605, seed: int = 0) -> dict[str, Path]:
    """train/validation/test channel directories (70/15/15, label first) under `directory`."""
    x, y = planted_data(rows, features, seed)
    cuts = np.cumsum([int(rows * f) for f in SPLIT[:-1]])
    channels = {}
    for name, xs, ys in zip(("train", "validation", "test"), np.split(x, cuts), np.split(y, cuts), strict=True):
        channels[name] = write_csv(Path(directory) / name / f"{name}.csv", xs, ys).parent
    return channels
