"""Executions requested through the SageMaker API, kept durably until the local engine has run them.

`StartPipelineExecution` (served by the local stack's moto, `infra/local/moto_gaps.py`) calls `submit`: under a
file lock it returns the execution already started with the same `ClientRequestToken`, or writes the new
execution's record (status Executing, no steps yet), the definition as it stood at the call (SageMaker runs that
snapshot, not later updates), and a queue entry. The stack's runner takes the entries in arrival order
(`pending`), runs each in the engine under the id given here, and removes the entry only when the run has
finished (`done`): an entry still there after a crash is a run to resume.
"""

from __future__ import annotations

import fcntl
import json
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from pipelines.local.expressions import now_iso
from pipelines.local.records import ExecutionStatus, ExecutionStore, new_execution_id, write_json_atomically

DEFINITION_FILE = "definition.json"
_thread_lock = threading.Lock()


class Submissions:
    """The queue of requested executions under a state directory."""

    def __init__(self, state_dir: str | Path):
        self.store = ExecutionStore(state_dir)
        self.queue_dir = Path(state_dir) / "queue"

    @contextmanager
    def _locked(self):
        """One writer at a time, across the threads of a process and across processes."""
        self.queue_dir.mkdir(parents=True, exist_ok=True)
        with _thread_lock, (self.queue_dir / ".lock").open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def submit(self, *, pipeline_name: str, pipeline_arn: str, definition: dict, parameters: dict[str, str],
               display_name: str | None = None, description: str | None = None,
               client_token: str | None = None) -> dict:
        """The execution's record: a new one, queued, or the one started earlier with the same client token."""
        with self._locked():
            if client_token:
                for record in self.store.all():
                    if record.get("ClientRequestToken") == client_token and record["PipelineArn"] == pipeline_arn:
                        return record
            execution_id = new_execution_id()
            now = now_iso()
            record = {"PipelineExecutionId": execution_id,
                      "PipelineExecutionArn": f"{pipeline_arn}/execution/{execution_id}",
                      "PipelineName": pipeline_name, "PipelineArn": pipeline_arn,
                      "PipelineExecutionDisplayName": display_name or f"execution-{execution_id}",
                      "PipelineExecutionDescription": description, "ClientRequestToken": client_token,
                      "Parameters": parameters, "PipelineExecutionStatus": ExecutionStatus.EXECUTING,
                      "CreationTime": now, "StartTime": now, "EndTime": None, "FailureReason": None, "Steps": {}}
            write_json_atomically(self.store.execution_dir(execution_id) / DEFINITION_FILE, definition)
            self.store.save(record)
            # the entry last: a record without one is a start that never completed (recover() fails it)
            write_json_atomically(self.queue_dir / f"{time.time_ns():020d}-{execution_id}.json",
                                  {"PipelineExecutionId": execution_id})
            return record

    def pending(self) -> list[str]:
        """The ids of the executions not yet finished, in arrival order."""
        return [path.stem.split("-", 1)[1] for path in sorted(self.queue_dir.glob("*.json"))]

    def definition(self, execution_id: str) -> dict:
        return json.loads((self.store.execution_dir(execution_id) / DEFINITION_FILE).read_text())

    def fail(self, execution_id: str, reason: str) -> dict:
        """Mark the execution Failed with `reason` (it could not run, or cannot be resumed); its record."""
        record = self.store.load(execution_id)
        record.update(PipelineExecutionStatus=ExecutionStatus.FAILED, FailureReason=reason, EndTime=now_iso())
        self.store.save(record)
        return record

    def done(self, execution_id: str) -> None:
        """The execution has finished (its record says how): take it off the queue."""
        with self._locked():
            for path in self.queue_dir.glob(f"*-{execution_id}.json"):
                path.unlink()
