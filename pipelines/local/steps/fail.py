"""Fail step: stops the execution; its resolved ErrorMessage is the execution's failure reason."""

from __future__ import annotations

from pipelines.local.errors import StepFailure
from pipelines.local.steps.base import Job


def run(arguments: dict, job: Job) -> dict:
    message = arguments.get("ErrorMessage")
    raise StepFailure(str(message) if message not in (None, "") else f"Fail step {job.step_name} reached")
