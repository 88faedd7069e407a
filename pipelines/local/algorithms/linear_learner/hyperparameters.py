"""The Linear Learner container's hyperparameters: its defaults, and each value parsed and checked as it does."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

from pipelines.local.errors import LinearLearnerError

CRITERIA = ("accuracy", "f_beta", "precision_at_target_recall", "recall_at_target_precision", "loss_function")
# The metrics a binary classifier emits per channel, as the tuner names them (`<channel>:<name>`).
THRESHOLD_METRICS = ("binary_classification_accuracy", "binary_f_beta", "precision", "recall")
CHANNEL_METRICS = ("objective_loss", *THRESHOLD_METRICS, "roc_auc_score")


class _Spec(NamedTuple):
    default: str | None
    parse: Callable[[str], Any]


def _number(kind=float, low=None, high=None, low_open=False, high_open=False, auto=False, words=()):
    """A parser for a number in a range, optionally also accepting `auto` or fixed words."""
    if kind is int:
        what = "a positive integer" if low == 1 else "an integer"
    else:
        bounds = {(0, None, True): "a positive number", (0, None, False): "a non-negative number"}
        what = bounds.get((low, high, low_open)) or (
            f"a number {'>' if low_open else '≥'} {low} and {'<' if high_open else '≤'} {high}"
            if low is not None and high is not None else "a number")
    accepted = [*(["auto"] if auto else []), *words]
    expected = " or ".join([f"'{w}'" for w in accepted] + [what])

    def parse(text: str):
        if text in accepted:
            return text
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or (
                low is not None and (value <= low if low_open else value < low)) or (
                high is not None and (value >= high if high_open else value > high)):
            raise ValueError(f"expected {expected}")
        return value

    return parse


def _choice(*values, supported=None):
    def parse(text: str):
        if text not in values:
            raise ValueError(f"expected one of {', '.join(values)}")
        if supported is not None and text not in supported:
            raise ValueError(f"'{text}' is not supported by the local Linear Learner (supported: "
                             f"{', '.join(supported)})")
        return text

    return parse


def _boolean(auto=False):
    def parse(text: str):
        lowered = text.lower()
        if auto and lowered == "auto":
            return "auto"
        if lowered not in ("true", "false"):
            raise ValueError(f"expected {'auto, ' if auto else ''}true or false")
        return lowered == "true"

    return parse


_POSITIVE = _number(low=0, low_open=True)
_FRACTION = _number(low=0, high=1, low_open=True)
_AUTO_NON_NEGATIVE = _number(low=0, auto=True)
_AUTO_DECAY = _number(low=0, high=1, high_open=True, auto=True)

HYPERPARAMETERS: dict[str, _Spec] = {
    "predictor_type": _Spec(None, _choice("binary_classifier", "multiclass_classifier", "regressor",
                                          supported=("binary_classifier",))),
    "feature_dim": _Spec("auto", _number(int, low=1, auto=True)),
    "accuracy_top_k": _Spec("3", _number(int, low=1)),
    "balance_multiclass_weights": _Spec("false", _boolean()),
    "beta_1": _Spec("auto", _AUTO_DECAY),
    "beta_2": _Spec("auto", _AUTO_DECAY),
    "bias_lr_mult": _Spec("auto", _number(low=0, low_open=True, auto=True)),
    "bias_wd_mult": _Spec("auto", _AUTO_NON_NEGATIVE),
    "binary_classifier_model_selection_criteria": _Spec("accuracy", _choice(*CRITERIA)),
    "early_stopping_patience": _Spec("3", _number(int, low=1)),
    "early_stopping_tolerance": _Spec("0.001", _POSITIVE),
    "epochs": _Spec("15", _number(int, low=1)),
    "f_beta": _Spec("1.0", _POSITIVE),
    "huber_delta": _Spec("1.0", _POSITIVE),
    "init_bias": _Spec("0.0", _number()),
    "init_method": _Spec("uniform", _choice("uniform", "normal")),
    "init_scale": _Spec("0.07", _POSITIVE),
    "init_sigma": _Spec("0.01", _POSITIVE),
    "l1": _Spec("auto", _AUTO_NON_NEGATIVE),
    "learning_rate": _Spec("auto", _number(low=0, low_open=True, auto=True)),
    "loss": _Spec("auto", _choice("auto", "logistic", "squared_loss", "absolute_loss", "hinge_loss",
                                  "eps_insensitive_squared_loss", "eps_insensitive_absolute_loss",
                                  "quantile_loss", "huber_loss", supported=("auto", "logistic"))),
    "loss_insensitivity": _Spec("0.01", _POSITIVE),
    "lr_scheduler_factor": _Spec("auto", _number(low=0, high=1, low_open=True, auto=True)),
    "lr_scheduler_minimum_lr": _Spec("auto", _number(low=0, low_open=True, auto=True)),
    "lr_scheduler_step": _Spec("auto", _number(int, low=1, auto=True)),
    "margin": _Spec("1.0", _POSITIVE),
    "mini_batch_size": _Spec("1000", _number(int, low=1)),
    "momentum": _Spec("auto", _AUTO_DECAY),
    "normalize_data": _Spec("true", _boolean(auto=True)),
    "normalize_label": _Spec("auto", _boolean(auto=True)),
    "num_calibration_samples": _Spec("auto", _number(int, low=1, auto=True)),
    "num_classes": _Spec("1", _number(int, low=1)),
    "num_models": _Spec("auto", _number(int, low=1, auto=True)),
    "num_point_for_scaler": _Spec("10000", _number(int, low=1)),
    "optimizer": _Spec("auto", _choice("auto", "adam", "sgd", "rmsprop", supported=("auto", "adam"))),
    "positive_example_weight_mult": _Spec("1.0", _number(low=0, low_open=True, words=("balanced", "auto"))),
    "quantile": _Spec("0.5", _FRACTION),
    "target_precision": _Spec("0.8", _FRACTION),
    "target_recall": _Spec("0.8", _FRACTION),
    "unbias_data": _Spec("auto", _boolean(auto=True)),
    "unbias_label": _Spec("auto", _boolean(auto=True)),
    "use_bias": _Spec("true", _boolean()),
    "use_lr_scheduler": _Spec("true", _boolean()),
    "wd": _Spec("auto", _AUTO_NON_NEGATIVE),
}


def parse_hyperparameters(hyperparameters: dict[str, str]) -> dict[str, Any]:
    """The container's defaults merged with `hyperparameters` (strings), each parsed and checked.

    Names starting with `_` are the service's own (e.g. `_tuning_objective_metric`) and pass through.
    Raises LinearLearnerError naming the first unknown or invalid hyperparameter.
    """
    unknown = sorted(k for k in hyperparameters if k not in HYPERPARAMETERS and not k.startswith("_"))
    if unknown:
        raise LinearLearnerError(f"unknown hyperparameter '{unknown[0]}' for Linear Learner; "
                                 f"known: {', '.join(sorted(HYPERPARAMETERS))}")
    parsed: dict[str, Any] = {k: v for k, v in hyperparameters.items() if k.startswith("_")}
    for name, spec in HYPERPARAMETERS.items():
        text = hyperparameters.get(name, spec.default)
        if text is None:
            raise LinearLearnerError(f"hyperparameter '{name}' is required (e.g. {name}=binary_classifier)")
        if not isinstance(text, str):
            raise LinearLearnerError(f"hyperparameter '{name}' must be a string, not {type(text).__name__}")
        try:
            parsed[name] = spec.parse(text.strip())
        except ValueError as exc:
            raise LinearLearnerError(f"invalid hyperparameter {name}={text!r}: {exc}") from None
    return parsed


def emitted_metrics(channel_names) -> list[str]:
    """The final metrics a training job with these channels reports (the tuner's objective candidates)."""
    names = ["train:objective_loss"]
    if "validation" not in channel_names:  # the model is then selected on train, and scored there
        names += [f"train:{m}" for m in CHANNEL_METRICS if m != "objective_loss"]
    return names + [f"{c}:{m}" for c in ("validation", "test") if c in channel_names for m in CHANNEL_METRICS]


def hyperparameter_strings(hp: dict) -> dict[str, str]:
    """Parsed hyperparameters back as the strings the container logs and keeps in the artefact."""
    return {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in hp.items()}
