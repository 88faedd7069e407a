"""A local stand-in for SageMaker's built-in Linear Learner (binary classifier), in numpy.

It takes the container's hyperparameters (strings, as SageMaker passes them), reads `text/csv`
channels (label first, no header), trains one or several logistic models at once with mini-batch
Adam, L2 (`wd`), L1 (`l1`, a proximal step, so weights become exactly zero), a learning-rate schedule
and early stopping, then picks the model and its decision threshold with
`binary_classifier_model_selection_criteria` on the validation channel (train without one).
It logs the container's `#quality_metric` lines, which the tuner's metric regexes match, and writes
`model.tar.gz` holding JSON and `.npy` files only (no pickle).

Choices where the documentation leaves a value to the algorithm ("auto"), made here and documented:
learning_rate 0.001 (Adam's usual default), beta_1 0.9, beta_2 0.999, wd 0, l1 0, bias_lr_mult 1,
bias_wd_mult 0, lr_scheduler_step = one epoch of mini-batches, lr_scheduler_factor 0.99,
lr_scheduler_minimum_lr 1e-5, num_calibration_samples = every validation row; num_models 8 (1 under
automatic model tuning, i.e. when `_tuning_objective_metric` is set), model i using the given learning rate
times (1, 3, 1/3, 9, 1/9)[i % 5] and wd times (1, 10, 0.1)[i // 5 % 3]; positive_example_weight_mult
"auto" = odd models balanced, even ones 1 (balanced with one model). Each model keeps its best epoch on
the early-stopping measure (the selection criterion on validation, else the training loss); training
stops when no model improved for early_stopping_patience epochs. Training is seeded (reproducible).
Only `loss` logistic and `optimizer` adam are implemented.

The algorithm's interface (see pipelines/local/algorithms/__init__.py): its hyperparameters and metrics,
`train`, the artefact's `load_model`, and the serving codec.
"""

from pipelines.local.algorithms.linear_learner.hyperparameters import emitted_metrics, parse_hyperparameters
from pipelines.local.algorithms.linear_learner.model import LinearLearnerModel, load_model
from pipelines.local.algorithms.linear_learner.serving import decode_request, encode_response
from pipelines.local.algorithms.linear_learner.training import TRAINING_CONTENT_TYPES, train

# What a training job imports on first use (seconds when cold): a tuning job's workers import it before their
# first job, while its Tuning step is still downloading the channels.
TRAINING_IMPORTS = ("pandas", "threadpoolctl")

__all__ = ["TRAINING_CONTENT_TYPES", "TRAINING_IMPORTS", "LinearLearnerModel", "decode_request", "emitted_metrics",
           "encode_response", "load_model", "parse_hyperparameters", "train"]
