"""The Linear Learner's artefact: `model.tar.gz` holding model.json and `.npy` arrays (no pickle), and the model."""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.local.errors import BadRequest, LinearLearnerError

ARTEFACT_FORMAT = "livetrain-linear-learner/1"


def expit(x):
    """The logistic function, without overflow warnings."""
    return 0.5 * (1.0 + np.tanh(0.5 * x))


@dataclass
class LinearLearnerModel:
    """A trained binary classifier: score = sigmoid(((x - mean) / scale) · weights + bias)."""

    weights: np.ndarray
    bias: float
    mean: np.ndarray
    scale: np.ndarray
    threshold: float
    hyperparameters: dict[str, str]

    def __post_init__(self):
        # Fold the normalisation into the weights once: one matrix-vector product per request.
        self._effective_weights = self.weights / self.scale
        self._effective_bias = self.bias - float(self.mean @ self._effective_weights)

    @property
    def feature_dim(self) -> int:
        return len(self.weights)

    def predict(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(scores in [0, 1], predicted labels 0/1) for rows of `feature_dim` features."""
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or features.shape[1] != self.feature_dim:
            raise BadRequest(f"expected rows of {self.feature_dim} features, got shape {features.shape}")
        scores = expit(features @ self._effective_weights + self._effective_bias)
        return scores, (scores >= self.threshold).astype(np.int64)


_ARRAYS = ("weights", "mean", "scale")


def save_model(model: LinearLearnerModel, path: Path) -> None:
    """Write the artefact: model.json plus one .npy per array, in a gzip tar."""
    meta = {"format": ARTEFACT_FORMAT, "predictor_type": "binary_classifier", "feature_dim": model.feature_dim,
            "bias": model.bias, "threshold": model.threshold, "hyperparameters": model.hyperparameters}
    members = {"model.json": json.dumps(meta, indent=2).encode()}
    for name in _ARRAYS:
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(getattr(model, name), dtype=np.float64), allow_pickle=False)
        members[f"{name}.npy"] = buffer.getvalue()
    partial = Path(path).with_name(Path(path).name + ".partial")
    with tarfile.open(partial, "w:gz") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    partial.replace(path)


def load_model(path_to_model_tar_gz) -> LinearLearnerModel:
    """Read an artefact written by `save_model` (no pickle: JSON and `.npy` with allow_pickle=False)."""
    try:
        with tarfile.open(path_to_model_tar_gz, "r:gz") as tar:
            def member(name: str) -> bytes:
                handle = tar.extractfile(name)
                if handle is None:
                    raise KeyError(name)
                return handle.read()

            meta = json.loads(member("model.json"))
            if meta.get("format") != ARTEFACT_FORMAT:
                raise ValueError(f"format {meta.get('format')!r} is not {ARTEFACT_FORMAT}")
            arrays = {name: np.load(io.BytesIO(member(f"{name}.npy")), allow_pickle=False) for name in _ARRAYS}
    except (OSError, KeyError, ValueError, tarfile.TarError) as exc:
        raise LinearLearnerError(f"{path_to_model_tar_gz} is not a local Linear Learner model.tar.gz ({exc})") from None
    return LinearLearnerModel(bias=float(meta["bias"]), threshold=float(meta["threshold"]),
                              hyperparameters=meta["hyperparameters"], **arrays)
