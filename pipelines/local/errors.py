"""Everything that can go wrong in local mode, each with a one-line message.

The engine fails a step with the message of a StepFailure (and retries it when its `exception_type` matches a
RetryPolicy); every other error here is turned into a step's failure reason, an HTTP status, or a UserError
by the layer that meets it.
"""

from __future__ import annotations


class DefinitionError(Exception):
    """A definition the engine cannot run; the execution fails at once with this one line."""


class ExpressionError(Exception):
    """An expression that cannot be resolved; the message is one line naming it."""


class StepFailure(Exception):
    """A step failed; the message is its one-line failure reason.

    `exception_type` is the RetryPolicies ExceptionType the failure matches
    (e.g. "SageMaker.JOB_INTERNAL_ERROR"); None means it is not retryable.
    """

    def __init__(self, reason: str, exception_type: str | None = None):
        super().__init__(reason)
        self.exception_type = exception_type


class TuningError(ValueError):
    """The tuning job cannot run (bad request, no local algorithm) or every training job failed."""


class AlgorithmError(ValueError):
    """A built-in algorithm refused its hyperparameters, data or artefact: the job fails with this message."""


class LinearLearnerError(AlgorithmError):
    """Bad hyperparameters, training data or model artefact for the local Linear Learner."""


class InferenceError(ValueError):
    """A request the model cannot answer; `status` is the HTTP status the container returns."""

    status = 400


class BadRequest(InferenceError):
    status = 400


class UnsupportedContentType(InferenceError):
    status = 415


class UnsupportedAccept(InferenceError):
    status = 406


class TransformError(ValueError):
    """The input of a batch transform cannot be transformed; the message names the file and the line."""
