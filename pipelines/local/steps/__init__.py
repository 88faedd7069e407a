"""Step runners, one module per SageMaker step type, each `run(arguments, job) -> properties` (steps/base.py).

RUNNERS is the whole dispatch: a step type the map lacks is one local mode cannot run. To add one, write
`steps/<type>.py` with its `run` and add it here.
"""

from __future__ import annotations

from pipelines.local.steps import condition, fail, lambda_function, model, processing, register, transform, tuning
from pipelines.local.steps.base import StepRunner

RUNNERS: dict[str, StepRunner] = {
    "Processing": processing.run,
    "Tuning": tuning.run,
    "Model": model.run,
    "Transform": transform.run,
    "Lambda": lambda_function.run,
    "Condition": condition.run,
    "Fail": fail.run,
    "RegisterModel": register.run,
}
SUPPORTED_STEP_TYPES = tuple(RUNNERS)
