"""The built-in SageMaker algorithms local mode runs, behind one small interface, found by their image.

SageMaker picks an algorithm by its container image; so does local mode: ALGORITHMS maps the ECR repository
name of an image (`<registry>/linear-learner:1` → linear-learner) to the package that stands in for it. The
Tuning step trains with it, the Transform step and the endpoint serve with it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from pipelines.local.algorithms import linear_learner
from pipelines.local.errors import TuningError


class Model(Protocol):
    feature_dim: int

    def predict(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


class Algorithm(Protocol):
    """What a local stand-in for a built-in algorithm provides (a module or package)."""

    TRAINING_CONTENT_TYPES: tuple[str, ...]
    TRAINING_IMPORTS: tuple[str, ...]  # modules a training job imports; its worker imports them beforehand

    def parse_hyperparameters(self, hyperparameters: dict[str, str]) -> dict:
        """The container's defaults merged with the given strings, checked; AlgorithmError when invalid."""

    def emitted_metrics(self, channel_names) -> list[str]:
        """The final metrics a training job with these channels reports, as `<channel>:<name>`."""

    def train(self, hyperparameters: dict[str, str], channels: dict[str, Path], model_dir: Path,
              log=print) -> dict[str, float]:
        """One training job: `model_dir/model.tar.gz` written, the final metrics returned."""

    def load_model(self, path) -> Model: ...

    def decode_request(self, body: bytes, content_type: str, feature_dim: int) -> np.ndarray: ...

    def encode_response(self, scores: np.ndarray, labels: np.ndarray, accept: str | None) -> tuple[bytes, str]: ...


ALGORITHMS: dict[str, Algorithm] = {"linear-learner": linear_learner}


def algorithm_for_image(image: str) -> Algorithm:
    """The local algorithm of a training or inference image URI; TuningError when there is none."""
    repository = image.rsplit("/", 1)[-1].split("@", 1)[0].split(":", 1)[0]
    if repository not in ALGORITHMS:
        raise TuningError(f"no local implementation for training image {image!r}; local tuning runs "
                          f"{', '.join(ALGORITHMS)} images only")
    return ALGORITHMS[repository]
