"""Training the local Linear Learner: channels read, models fitted side by side, one selected with its threshold,
the container's metric lines logged, the artefact written. The algorithm's choices are in __init__.py."""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from pipelines.local.algorithms.linear_learner.hyperparameters import hyperparameter_strings, parse_hyperparameters
from pipelines.local.algorithms.linear_learner.model import LinearLearnerModel, expit, save_model
from pipelines.local.errors import LinearLearnerError

TRAINING_CONTENT_TYPES = ("text/csv",)  # channels: label first, no header (recordio-protobuf is not read locally)
HOST = "algo-1"
LOSS_NAME = "binary_classification_cross_entropy_objective"
NEARBY_LR_MULTIPLIERS = (1.0, 3.0, 1 / 3, 9.0, 1 / 9)
NEARBY_WD_MULTIPLIERS = (1.0, 10.0, 0.1)
CHUNK_ROWS = 8192  # rows decoded, standardised or scored at a time
BLOCK_BYTES = 256 * 2**20  # feature rows a job holds while training (its shuffle buffer): its memory at any size


# ---------------------------------------------------------------------------------------------
# Data


class Features:
    """A decoded channel's feature rows (float32, row after row) in a file, read a block at a time with plain reads.

    The file's pages stay in the page cache, where the jobs of a tuning job share them, and a job holds only the
    rows it is working on: a memory map would put every page a job touched in that job's resident memory."""

    def __init__(self, path: Path, rows: int, width: int):
        self.path, self.rows, self.width = Path(path), rows, width

    @property
    def shape(self) -> tuple[int, int]:
        return self.rows, self.width

    def __len__(self) -> int:
        return self.rows

    def head(self, rows: int) -> Features:
        """The first `rows` rows."""
        return Features(self.path, min(rows, self.rows), self.width)

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows [start, stop) (default: all), as an array."""
        stop = self.rows if stop is None else min(stop, self.rows)
        return np.fromfile(self.path, dtype=np.float32, count=max(stop - start, 0) * self.width,
                           offset=start * self.width * 4).reshape(-1, self.width)

    def chunks(self, rows: int = CHUNK_ROWS) -> Iterator[np.ndarray]:
        """All rows, `rows` at a time."""
        for start in range(0, self.rows, rows):
            yield self.read(start, start + rows)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return self.read() if dtype is None else self.read().astype(dtype)


def read_channel(name: str, path: Path) -> tuple[Features, np.ndarray]:
    """(features, labels) of the CSV files under `path` (label first, no header).

    The first reader decodes the files, CHUNK_ROWS rows at a time, into binaries beside the channel (features
    as float32, as the algorithm's container computes: half the memory of float64)
    (`.<channel dir>.decoded/`); every later reader of the same files (the other jobs of a tuning job, which
    share one download) reads those, so the jobs parse nothing, and hold their features a block at a time."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(
        p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    stamp = hashlib.sha256(repr([(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files]).encode())
    decoded = path.with_name(f".{path.name}.decoded") / stamp.hexdigest()[:16]
    decoded.parent.mkdir(parents=True, exist_ok=True)
    with open(decoded.parent / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one decoder; the others wait for its files
        if not (decoded / "shape.json").exists():
            _decode(name, files, path, decoded)
    rows, width = json.loads((decoded / "shape.json").read_text())
    return Features(decoded / "features.f32", rows, width), np.fromfile(decoded / "labels.f64", dtype=np.float64)


def _decode(name: str, files: list[Path], path: Path, decoded: Path) -> None:
    """Check and decode a channel's CSV files into decoded/features.f32, labels.f64 and shape.json."""
    import pandas as pd

    staging = decoded.with_name(decoded.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    rows, widths = 0, set()
    with open(staging / "features.f32", "wb") as features, open(staging / "labels.f64", "wb") as labels:
        for file in files:
            if file.stat().st_size == 0:
                continue
            try:
                for frame in pd.read_csv(file, header=None, dtype=np.float64, na_filter=False, engine="c",
                                         chunksize=CHUNK_ROWS):
                    data = frame.to_numpy()
                    widths.add(data.shape[1])
                    _check_chunk(name, data, widths)
                    features.write(data[:, 1:].astype(np.float32).tobytes())
                    labels.write(data[:, 0].tobytes())
                    rows += len(data)
            except (ValueError, pd.errors.ParserError) as exc:
                raise LinearLearnerError(f"channel '{name}': {file.name} is not numeric text/csv with the label "
                                         f"first and no header ({str(exc).splitlines()[0]})") from None
    if not rows:
        raise LinearLearnerError(f"channel '{name}' has no data under {path}")
    (staging / "shape.json").write_text(json.dumps([rows, widths.pop() - 1]))
    staging.rename(decoded)


def _check_chunk(name: str, data: np.ndarray, widths: set[int]) -> None:
    if len(widths) > 1:
        raise LinearLearnerError(f"channel '{name}': files have different column counts {sorted(widths)}")
    if data.shape[1] < 2:
        raise LinearLearnerError(f"channel '{name}' needs a label column and at least one feature column")
    if not np.isfinite(data).all():
        raise LinearLearnerError(f"channel '{name}' holds NaN or infinite values")
    if not np.isin(data[:, 0], (0.0, 1.0)).all():
        raise LinearLearnerError(f"channel '{name}': binary_classifier labels must be 0 or 1 (first column)")


# ---------------------------------------------------------------------------------------------
# Metrics and thresholds


def logistic_loss(margins: np.ndarray, labels: np.ndarray, weights: np.ndarray | float = 1.0) -> np.ndarray:
    """Mean weighted logistic loss of linear outputs (n, m) against 0/1 labels (n,); one value per model."""
    losses = np.logaddexp(0.0, margins) - labels[:, None] * margins
    return np.mean(losses * weights, axis=0)


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (ties count one half); 0.5 when a class is missing.

    The Mann-Whitney statistic of the positives' mid-ranks, in numpy: scipy.stats would cost every training
    job's process a second or two of import for this one function.
    """
    positives = int(labels.sum())
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return 0.5
    _, group, counts = np.unique(scores, return_inverse=True, return_counts=True)
    mid_ranks = np.cumsum(counts) - (counts - 1) / 2.0  # tied scores share the mean of their ranks (from 1)
    ranks = mid_ranks[group.ravel()]
    return float((ranks[labels == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def _f_beta(precision, recall, beta):
    denominator = beta**2 * precision + recall
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, (1 + beta**2) * precision * recall / np.maximum(denominator, 1e-300), 0.0)


def choose_threshold(scores: np.ndarray, labels: np.ndarray, hp: dict) -> tuple[float, float]:
    """(threshold, criterion value) for one model's scores; predicted positive means score ≥ threshold.

    The value is larger-is-better (the negated loss for `loss_function`, whose threshold is 0.5).
    `precision_at_target_recall` breaks ties in precision towards more recall; `recall_at_target_precision`
    falls back to the highest precision when no threshold reaches the target.
    """
    criterion = hp["binary_classifier_model_selection_criteria"]
    if criterion == "loss_function":
        return 0.5, -float(logistic_loss(_margins(scores), labels)[0])
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], labels[order]
    # Cut after each run of equal scores; index 0 is "no positive prediction".
    cuts = np.flatnonzero(np.append(ranked[1:] != ranked[:-1], True))
    true_pos = np.concatenate([[0.0], np.cumsum(hits)[cuts]])
    predicted = np.concatenate([[0.0], cuts + 1.0])
    positives, n = hits.sum(), len(hits)
    precision = np.divide(true_pos, predicted, out=np.zeros_like(true_pos), where=predicted > 0)
    recall = true_pos / positives if positives else np.zeros_like(true_pos)
    if criterion == "accuracy":
        values = (true_pos + (n - positives) - (predicted - true_pos)) / n
    elif criterion == "f_beta":
        values = _f_beta(precision, recall, hp["f_beta"])
    elif criterion == "precision_at_target_recall":
        values = np.where(recall >= hp["target_recall"], precision, -1.0)
    else:  # recall_at_target_precision
        reached = precision >= hp["target_precision"]
        values = np.where(reached, recall, -1.0) if reached.any() else precision
    best = int(np.argmax(values))
    if criterion == "precision_at_target_recall":  # of equally precise thresholds, the one with most recall
        best = int(np.flatnonzero(values == values[best])[-1])
    threshold = np.nextafter(ranked[0], np.inf) if best == 0 else ranked[cuts[best - 1]]
    return float(threshold), float(values[best])


def binary_metrics(scores: np.ndarray, labels: np.ndarray, threshold: float, beta: float,
                   positive_weight: float) -> dict[str, float]:
    """The container's per-channel metrics for a binary classifier at `threshold`."""
    predicted = scores >= threshold
    true_pos = float(np.sum(predicted & (labels == 1)))
    precision = true_pos / predicted.sum() if predicted.any() else 0.0
    recall = true_pos / labels.sum() if labels.any() else 0.0
    weights = np.where(labels == 1, positive_weight, 1.0)[:, None]
    return {
        "objective_loss": float(logistic_loss(_margins(scores), labels, weights)[0]),
        "binary_classification_accuracy": float(np.mean(predicted == (labels == 1))),
        "binary_f_beta": float(_f_beta(np.float64(precision), np.float64(recall), beta)),
        "precision": float(precision),
        "recall": float(recall),
        "roc_auc_score": roc_auc(scores, labels),
    }


def _margins(scores: np.ndarray) -> np.ndarray:
    """Linear outputs (n, 1) back from scores, clipped away from 0 and 1."""
    clipped = np.clip(scores, 1e-15, 1 - 1e-15)
    return np.log(clipped / (1 - clipped))[:, None]


# ---------------------------------------------------------------------------------------------
# Training


class _Scaler:
    """The normalisation, applied to rows as they are read (the data stays raw, on disk), in float32 as the
    algorithm's container computes: a float64 copy of every mini-batch took half a job's time."""

    def __init__(self, mean: np.ndarray, scale: np.ndarray):
        self.mean, self.scale = mean, scale
        self._mean32, self._scale32 = mean.astype(np.float32), scale.astype(np.float32)

    def standardize(self, rows: np.ndarray) -> np.ndarray:
        """`rows` (float32, a copy the caller owns) standardised in place."""
        rows -= self._mean32
        rows /= self._scale32
        return rows


def _linear(rows: np.ndarray, weights: np.ndarray, biases) -> np.ndarray:
    """rows @ weights + biases: the product in float32 (the rows' type), the result in float64."""
    return (rows @ weights.astype(np.float32)).astype(np.float64) + biases


class _Standardized:
    """A channel's rows as the models see them: standardised once and held when they fit in `block` rows (one
    block: every epoch uses the same copy), otherwise read from disk and standardised as they are used."""

    def __init__(self, x: Features, scaler: _Scaler, block: int):
        self.x, self.scaler, self.block = x, scaler, block
        self.held = scaler.standardize(x.read()) if len(x) <= block else None

    def __len__(self) -> int:
        return len(self.x)

    def minibatches(self, batch: int, rng) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """One epoch's mini-batches, every row once: (row numbers, standardised rows). Blocks of `block`
        consecutive rows come in random order, each shuffled within (a shuffle buffer, as a trainer streaming its
        data has); held rows are shuffled as a whole. A block read from disk is standardised a mini-batch at a
        time, once its rows are gathered (in the CPU's cache rather than over the whole block)."""
        starts = np.arange(0, len(self), self.block)
        for first in (starts if self.held is not None else starts[rng.permutation(len(starts))]):
            block = self.held if self.held is not None else self.x.read(first, first + self.block)
            order = rng.permutation(len(block))
            for start in range(0, len(block), batch):
                local = order[start:start + batch]
                yield first + local, block[local] if self.held is not None else self.scaler.standardize(block[local])

    def margins(self, weights: np.ndarray, biases) -> np.ndarray:
        """Every row's linear output for each model (column)."""
        if self.held is not None:
            return _linear(self.held, weights, biases)
        return np.concatenate([_linear(self.scaler.standardize(rows), weights, biases) for rows in self.x.chunks()])


class _Selection(NamedTuple):
    """The rows that choose the model and threshold: validation, or train without a validation channel."""

    channel: str
    x: _Standardized
    y: np.ndarray


def block_rows(width: int, batch: int) -> int:
    """Rows of `width` features a job reads at a time while training (BLOCK_BYTES, at least a mini-batch)."""
    return max(batch, BLOCK_BYTES // (4 * width))


def scaler_statistics(x: Features, size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(mean, standard deviation, rows used) of `size` rows of `x` drawn at random (every row when there are no
    more), in float64: worked out by the first job that asks, kept beside the decoded channel for the other jobs of
    the tuning job (the same rows: the draw has a seed of its own)."""
    saved = x.path.with_name(f"scaler-{size}.npy")
    if not saved.exists():
        sample = _scaler_sample(x, size, np.random.default_rng(0))
        partial = saved.with_name(f"{saved.name}.{os.getpid()}.partial")
        with open(partial, "wb") as out:
            np.save(out, np.stack([sample.mean(axis=0, dtype=np.float64), sample.std(axis=0, dtype=np.float64)]))
        os.replace(partial, saved)  # two jobs at once write the same values
    mean, std = np.load(saved)
    return mean, std, min(size, len(x))


def _scaler_sample(x: Features, size: int, rng) -> np.ndarray:
    """`size` rows drawn without replacement (every row when there are no more), read a block at a time."""
    if len(x) <= size:
        return x.read()
    chosen = np.sort(rng.choice(len(x), size, replace=False))
    step = block_rows(x.width, 1)
    return np.concatenate([x.read(first, first + step)[chosen[(chosen >= first) & (chosen < first + step)] - first]
                           for first in range(0, len(x), step)])


@dataclass
class _Models:
    """`m` linear models trained side by side: column j of `weights` is model j."""

    learning_rate: np.ndarray
    wd: np.ndarray
    l1: np.ndarray
    positive_weight: np.ndarray

    @property
    def count(self) -> int:
        return len(self.learning_rate)


def _model_settings(hp: dict, labels: np.ndarray) -> _Models:
    tuning = bool(hp.get("_tuning_objective_metric"))
    count = 1 if tuning else (8 if hp["num_models"] == "auto" else hp["num_models"])
    learning_rate = 0.001 if hp["learning_rate"] == "auto" else hp["learning_rate"]
    wd = 0.0 if hp["wd"] == "auto" else hp["wd"]
    l1 = 0.0 if hp["l1"] == "auto" else hp["l1"]
    positives = labels.sum()
    balanced = (len(labels) - positives) / positives if positives else 1.0
    weight = hp["positive_example_weight_mult"]
    lr_mult = np.array([NEARBY_LR_MULTIPLIERS[i % 5] for i in range(count)])
    wd_mult = np.array([NEARBY_WD_MULTIPLIERS[(i // 5) % 3] for i in range(count)])
    if weight == "auto":
        positive_weight = np.array([balanced if i % 2 or count == 1 else 1.0 for i in range(count)])
    else:
        positive_weight = np.full(count, balanced if weight == "balanced" else weight)
    return _Models(learning_rate * lr_mult, wd * wd_mult, np.full(count, l1), positive_weight)


class _Adam:
    def __init__(self, shape, beta_1, beta_2):
        self.beta_1, self.beta_2, self.steps = beta_1, beta_2, 0
        self.first, self.second = np.zeros(shape), np.zeros(shape)

    def step(self, gradient: np.ndarray, rate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(update to subtract, per-coordinate step size) for this gradient."""
        self.steps += 1
        self.first = self.beta_1 * self.first + (1 - self.beta_1) * gradient
        self.second = self.beta_2 * self.second + (1 - self.beta_2) * gradient**2
        corrected_first = self.first / (1 - self.beta_1**self.steps)
        size = rate / (np.sqrt(self.second / (1 - self.beta_2**self.steps)) + 1e-8)
        return size * corrected_first, size


def _improved(value: float, best: float, tolerance: float) -> bool:
    """True when `value` (larger is better) beats `best` by more than the relative tolerance."""
    if not math.isfinite(value):
        return False
    return not math.isfinite(best) or value > best + tolerance * abs(best)


def _log_metric(log, channel: str, name: str, value: float, epoch: int | None = None) -> None:
    kind = "loss" if name == LOSS_NAME else "score"
    where = f"host={HOST}, " + (f"epoch={epoch}, " if epoch is not None else "")
    log(f"#quality_metric: {where}{channel} {name} <{kind}>={value}")


def _container_metric_name(name: str, hp: dict) -> str:
    """The metric's name in the container's log lines (what SageMaker's metric regexes match)."""
    return {"objective_loss": LOSS_NAME, "binary_f_beta": f"binary_f_{hp['f_beta']:.3f}"}.get(name, name)


def _fit(x: _Standardized, y, selection: _Selection, hp, models: _Models, rng, log):
    """Train all models on the rows `x`; returns (weights (d, m), biases (m,), train loss per model at its best
    epoch)."""
    n, d = x.x.shape
    if hp["init_method"] == "uniform":
        weights = rng.uniform(-hp["init_scale"], hp["init_scale"], (d, models.count))
    else:
        weights = rng.normal(0.0, hp["init_sigma"], (d, models.count))
    biases = np.full(models.count, hp["init_bias"] if hp["use_bias"] else 0.0)
    beta_1 = 0.9 if hp["beta_1"] == "auto" else hp["beta_1"]
    beta_2 = 0.999 if hp["beta_2"] == "auto" else hp["beta_2"]
    adam_w, adam_b = _Adam(weights.shape, beta_1, beta_2), _Adam(biases.shape, beta_1, beta_2)
    bias_lr = 1.0 if hp["bias_lr_mult"] == "auto" else hp["bias_lr_mult"]
    bias_wd = 0.0 if hp["bias_wd_mult"] == "auto" else hp["bias_wd_mult"]
    batch = min(hp["mini_batch_size"], n)
    batches_per_epoch = sum(math.ceil(min(x.block, n - first) / batch) for first in range(0, n, x.block))
    schedule_step = batches_per_epoch if hp["lr_scheduler_step"] == "auto" else hp["lr_scheduler_step"]
    schedule_factor = 0.99 if hp["lr_scheduler_factor"] == "auto" else hp["lr_scheduler_factor"]
    minimum_lr = 1e-5 if hp["lr_scheduler_minimum_lr"] == "auto" else hp["lr_scheduler_minimum_lr"]
    sample_weight = np.where(y[:, None] == 1, models.positive_weight[None, :], 1.0)

    best_value = np.full(models.count, -np.inf)
    best_weights, best_biases = weights.copy(), biases.copy()
    best_train_loss = np.full(models.count, np.nan)
    stale_epochs, updates = 0, 0
    learning_rate = models.learning_rate.copy()
    for epoch in range(hp["epochs"]):
        started = time.perf_counter()
        epoch_loss = np.zeros(models.count)
        for rows, xb in x.minibatches(batch, rng):
            yb, wb = y[rows], sample_weight[rows]
            margins = _linear(xb, weights, biases)
            epoch_loss += np.sum((np.logaddexp(0.0, margins) - yb[:, None] * margins) * wb, axis=0)
            residual = (expit(margins) - yb[:, None]) * wb / len(rows)
            gradient = (xb.T @ residual.astype(np.float32)).astype(np.float64) + models.wd * weights
            step, size = adam_w.step(gradient, learning_rate)
            weights -= step
            if models.l1.any():  # proximal step: soft-threshold by the coordinate's step size
                weights = np.sign(weights) * np.maximum(np.abs(weights) - size * models.l1, 0.0)
            if hp["use_bias"]:
                biases -= adam_b.step(residual.sum(axis=0) + models.wd * bias_wd * biases, learning_rate * bias_lr)[0]
            updates += 1
            if hp["use_lr_scheduler"] and updates % schedule_step == 0:
                learning_rate = np.maximum(learning_rate * schedule_factor, np.minimum(minimum_lr, learning_rate))
        epoch_loss /= n
        selection_margins = selection.x.margins(weights, biases) if selection.channel == "validation" else None
        values = _epoch_values(selection_margins, selection, hp, epoch_loss)
        improved = np.array([_improved(v, b, hp["early_stopping_tolerance"])
                             for v, b in zip(values, best_value, strict=True)])
        best_weights[:, improved], best_biases[improved] = weights[:, improved], biases[improved]
        best_train_loss[improved] = epoch_loss[improved]
        best_value = np.where(improved, values, best_value)
        stale_epochs = 0 if improved.any() else stale_epochs + 1
        best_model = int(np.argmax(best_value))
        _log_metric(log, "train", LOSS_NAME, float(epoch_loss[best_model]), epoch)
        if selection_margins is not None:
            weight = models.positive_weight[best_model]
            loss = logistic_loss(selection_margins[:, [best_model]], selection.y,
                                 np.where(selection.y == 1, weight, 1.0)[:, None])
            _log_metric(log, "validation", LOSS_NAME, float(loss[0]), epoch)
        log(f"#progress_metric: host={HOST}, completed {100 * (epoch + 1) / hp['epochs']:.1f} % of epochs")
        log(f"#throughput_metric: host={HOST}, train throughput={n / (time.perf_counter() - started):.1f} "
            "records/second")
        if stale_epochs >= hp["early_stopping_patience"]:
            measure = (hp["binary_classifier_model_selection_criteria"] if selection.channel == "validation"
                       else "the training loss")
            log(f"Early stop condition met. Stopping training after epoch {epoch}: no model improved "
                f"{measure} for {stale_epochs} epochs.")
            break
    return best_weights, best_biases, best_train_loss


def _epoch_values(margins: np.ndarray | None, selection: _Selection, hp, train_loss) -> np.ndarray:
    """Per model, the early-stopping value (larger is better): from the selection rows' `margins`, or the
    training loss when there is no validation channel (`margins` None)."""
    if margins is None:
        values = -train_loss
    else:
        scores = expit(margins)
        values = np.array([choose_threshold(scores[:, j], selection.y, hp)[1] for j in range(margins.shape[1])])
    return np.where(np.isnan(values), -np.inf, values)  # a diverged model never counts as an improvement


def train(hyperparameters: dict[str, str], channels: dict[str, Path], model_dir: Path, log=print) -> dict[str, float]:
    """Run one training job: validate, train, select, log metrics, write `model_dir/model.tar.gz`.

    `channels` maps "train" (required), "validation" and "test" to CSV directories (label first).
    Returns the final metrics by tuner name (`validation:precision`, ...). Raises LinearLearnerError.
    """
    from threadpoolctl import threadpool_limits

    started = time.perf_counter()
    hp = parse_hyperparameters(hyperparameters)
    unknown = sorted(set(channels) - {"train", "validation", "test"})
    if unknown or "train" not in channels:
        raise LinearLearnerError(f"channels must be train (required), validation, test; got {sorted(channels)}")
    log(f"Final configuration: {json.dumps(hyperparameter_strings(hp))}")
    data = {name: read_channel(name, path) for name, path in channels.items()}
    x, y = data["train"]
    feature_dim = x.shape[1] if hp["feature_dim"] == "auto" else hp["feature_dim"]
    for name, (features, _) in data.items():
        if features.shape[1] != feature_dim:
            raise LinearLearnerError(f"feature_dim is {feature_dim} but channel '{name}' has "
                                     f"{features.shape[1]} feature columns after the label")
    rng = np.random.default_rng(0)
    sample_mean, sample_std, points = scaler_statistics(x, hp["num_point_for_scaler"])
    unbias = hp["use_bias"] if hp["unbias_data"] == "auto" else hp["unbias_data"]
    normalize = hp["normalize_data"] is not False
    mean = sample_mean if (normalize or unbias) else np.zeros(feature_dim)
    scale = np.where(sample_std > 0, sample_std, 1.0) if normalize else np.ones(feature_dim)
    log(f"Scaling model computed on {points} points (normalize_data={normalize}, unbias_data={unbias})")

    scaler = _Scaler(mean, scale)
    block = block_rows(feature_dim, min(hp["mini_batch_size"], len(y)))
    rows = _Standardized(x, scaler, block)
    if "validation" in data:
        xv, yv = data["validation"]
        calibration = len(yv) if hp["num_calibration_samples"] == "auto" else hp["num_calibration_samples"]
        selection = _Selection("validation", _Standardized(xv.head(calibration), scaler, block), yv[:calibration])
    else:
        selection = _Selection("train", rows, y)
    models = _model_settings(hp, y)
    log(f"Training {models.count} model(s) on {len(y)} records, {feature_dim} features, "
        f"criterion {hp['binary_classifier_model_selection_criteria']}")
    with threadpool_limits(1):  # small matrix products: BLAS threads only add contention
        weights, biases, train_loss = _fit(rows, y, selection, hp, models, rng, log)

    margins = selection.x.margins(weights, biases)
    candidates = [choose_threshold(expit(margins[:, j]), selection.y, hp) for j in range(models.count)]
    best = int(np.argmax([value for _, value in candidates]))
    threshold = candidates[best][0]
    model = LinearLearnerModel(weights=weights[:, best], bias=float(biases[best]), mean=mean, scale=scale,
                               threshold=threshold, hyperparameters=hyperparameter_strings(hp))
    log(f"Selected model {best} of {models.count} (learning_rate={models.learning_rate[best]:g}, "
        f"wd={models.wd[best]:g}, positive_example_weight_mult={models.positive_weight[best]:g}); "
        f"threshold {threshold:.6g} by {hp['binary_classifier_model_selection_criteria']} on {selection.channel}")

    metrics = {"train:objective_loss": float(train_loss[best])}
    _log_metric(log, "train", LOSS_NAME, metrics["train:objective_loss"])
    evaluated = {"validation": data.get("validation"), "test": data.get("test")}
    if selection.channel == "train":
        evaluated = {"train": data["train"], **evaluated}
    for channel, channel_data in evaluated.items():
        if channel_data is None:
            continue
        features = channel_data[0]
        scores = np.concatenate([model.predict(rows)[0] for rows in features.chunks()])
        values = binary_metrics(scores, channel_data[1], threshold, hp["f_beta"], models.positive_weight[best])
        for name, value in values.items():
            if channel == "train" and name == "objective_loss":
                continue  # already reported for the selected model's last epoch
            metrics[f"{channel}:{name}"] = value
            _log_metric(log, channel, _container_metric_name(name, hp), value)

    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    save_model(model, model_dir / "model.tar.gz")
    log(f"Training finished in {time.perf_counter() - started:.2f} s; wrote {model_dir / 'model.tar.gz'}")
    return metrics
