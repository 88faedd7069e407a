"""Local execution records on disk: `<state_dir>/executions/<id>/execution.json`, next to the steps' logs and jobs.

A record is rewritten atomically (temporary file + rename) each time a step changes state,
so a reader never sees half a record.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import string
from enum import StrEnum
from pathlib import Path

from livetrain.errors import UserError
from livetrain.files import write_text_atomically

RECORD_FILE = "execution.json"
STOP_FILE = "stop-requested"  # StopPipelineExecution's request to a running execution, read at each step boundary
_ID_ALPHABET = string.ascii_lowercase + string.digits


class StepStatus(StrEnum):
    """A step's `StepStatus` in the records (strings: a record read back compares equal)."""

    PENDING = "Pending"
    EXECUTING = "Executing"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    NOT_EXECUTED = "NotExecuted"  # its branch was not taken, or a step it needs failed or was not executed


class ExecutionStatus(StrEnum):
    """An execution's `PipelineExecutionStatus`, as SageMaker names them."""

    EXECUTING = "Executing"
    STOPPING = "Stopping"  # never in a record: an Executing record whose stop has been requested
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    STOPPED = "Stopped"


def new_execution_id() -> str:
    """A 12-character id shaped like SageMaker's pipeline execution ids."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(12))


def write_json_atomically(path: Path, value) -> None:
    """`value` as JSON at `path`, replacing any previous file in one rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(path, json.dumps(value, indent=2, default=str))


class ExecutionStore:
    """The executions kept under a state directory."""

    def __init__(self, state_dir: str | Path):
        self.state_dir = Path(state_dir)
        self.root = self.state_dir / "executions"

    def execution_dir(self, execution_id: str) -> Path:
        return self.root / execution_id

    def save(self, record: dict) -> None:
        write_json_atomically(self.execution_dir(record["PipelineExecutionId"]) / RECORD_FILE, record)

    def load(self, execution: str) -> dict:
        """The record of an execution given by its id or its ARN."""
        execution_id = execution.rstrip("/").rsplit("/", 1)[-1]
        path = self.execution_dir(execution_id) / RECORD_FILE
        if not execution_id or not path.exists():
            raise UserError(f"no local execution {execution!r} in {self.root}; "
                            "list them with `livetrain pipeline executions --local`")
        return json.loads(path.read_text())

    def request_stop(self, execution_id: str) -> None:
        (self.execution_dir(execution_id) / STOP_FILE).touch()

    def clear_stop(self, execution_id: str) -> None:
        (self.execution_dir(execution_id) / STOP_FILE).unlink(missing_ok=True)

    def stop_requested(self, execution_id: str) -> bool:
        return (self.execution_dir(execution_id) / STOP_FILE).exists()

    def all(self) -> list[dict]:
        """Every record, newest first."""
        records = [json.loads(p.read_text()) for p in self.root.glob(f"*/{RECORD_FILE}")]
        return sorted(records, key=lambda r: r.get("StartTime", ""), reverse=True)


def step_duration(step: dict) -> float | None:
    """Seconds between a step record's StartTime and EndTime, if both are known."""
    if not step.get("StartTime") or not step.get("EndTime"):
        return None
    start, end = (dt.datetime.fromisoformat(step[k].replace("Z", "+00:00")) for k in ("StartTime", "EndTime"))
    return (end - start).total_seconds()
