"""What every step runner is: `run(arguments, job) -> properties`, and the `Job` it gets.

`arguments` are the step's resolved `Arguments` (the request shape of the API call the step stands for);
`properties` are what the matching Describe call would return, so that `{"Get": "Steps.<name>.<path>"}` reads
the same paths as on SageMaker. A runner is the wire layer: it reads the request, calls the behaviour behind
it (a script in a sandbox, the tuner, an algorithm, the records at moto) and shapes the answer.
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


@dataclass
class Job:
    """What a runner gets besides its arguments: names, a private directory, a log, AWS clients, and the
    execution's local copies of the S3 objects it has moved (s3io.LocalCopies)."""

    step_name: str
    job_name: str
    arn_prefix: str  # arn:aws:sagemaker:<region>:<account>
    work_dir: Path
    log_path: Path
    s3: Any
    sagemaker: Any
    cloudwatch: Any = None  # only the monitoring pipeline's Lambda step uses it
    copies: Any = None
    last_line: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def log(self, message: str) -> None:
        """Append a line to the job's log (the tuner and the runners call this)."""
        line = str(message).rstrip("\n")
        with self._lock, self.log_path.open("a") as out:
            out.write(line + "\n")
        if line.strip():
            self.last_line = line.strip()

    def arn(self, resource: str) -> str:
        return f"{self.arn_prefix}:{resource}/{self.job_name.lower()}"


class StepRunner(Protocol):
    def __call__(self, arguments: dict, job: Job) -> dict:
        """Run the step; its properties. Raises StepFailure (or any error, which fails the step)."""


def plain(response: dict) -> dict:
    """A boto3 Describe response as JSON values: no ResponseMetadata, datetimes as ISO-8601 strings."""

    def convert(value):
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items() if k != "ResponseMetadata"}
        if isinstance(value, list):
            return [convert(v) for v in value]
        if isinstance(value, dt.datetime):
            return value.isoformat()
        return value

    return convert(response)
