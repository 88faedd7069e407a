"""Executions requested through the SageMaker API, kept durably until the local engine has run them.

`StartPipelineExecution` (served by the local stack's moto, `infra/local/moto_gaps.py`) calls `submit`: under a
file lock it returns the execution already started with the same `ClientRequestToken`, or writes the new
execution's record (status Executing, no steps yet), the definition as it stood at the call (SageMaker runs that
snapshot, not later updates), and a queue entry. The stack's runner takes the entries in arrival order
(`pending`), claims each (`claim`) and runs it in the engine under the id given here, and removes the entry only
when the run has finished (`done`): an entry still there after a crash is a run to resume.

After a crash (the stack killed while runs were queued or executing), `recover` runs when a stack starts on the
directory: an Executing record whose queue entry is still there is left queued, so the runner resumes it under the
same id (reusing its succeeded steps, as a retry does); one without an entry (a start cut short) is marked Failed.

`stop` (StopPipelineExecution) stops a queued execution at once (it never starts) and asks a claimed one to stop
at its next step boundary; `retry` (RetryPipelineExecution) queues a Failed execution again under the same id,
and the engine reuses the steps that had succeeded.
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
CRASH_REASON = ("the local stack stopped while this run was executing; "
                "retry it with RetryPipelineExecution")
_thread_lock = threading.Lock()


class StateConflict(Exception):
    """The execution is not in a state that allows the request (SageMaker's ConflictException)."""


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
            self._enqueue(execution_id)
            return record

    def _enqueue(self, execution_id: str) -> None:
        write_json_atomically(self.queue_dir / f"{time.time_ns():020d}-{execution_id}.json",
                              {"PipelineExecutionId": execution_id, "Claimed": False})

    def _entry(self, execution_id: str) -> Path | None:
        """The execution's queue entry (the earliest, if a retry queued it again before `done`)."""
        return next(iter(sorted(self.queue_dir.glob(f"*-{execution_id}.json"))), None)

    def pending(self) -> list[str]:
        """The ids of the executions not yet finished, in arrival order."""
        return [path.stem.split("-", 1)[1] for path in sorted(self.queue_dir.glob("*.json"))]

    def recover(self) -> tuple[list[str], list[str]]:
        """After a crash: (executions left queued for the runner to resume, executions marked Failed because
        nothing can resume them), each in arrival order. Only for a stack starting on the directory."""
        with self._locked():
            queued = set(self.pending())
            stranded = [record["PipelineExecutionId"] for record in reversed(self.store.all())
                        if record["PipelineExecutionStatus"] == ExecutionStatus.EXECUTING
                        and record["PipelineExecutionId"] not in queued]
            for execution_id in stranded:
                self.fail(execution_id, CRASH_REASON)
            resumed = [execution_id for execution_id in self.pending()
                       if self.store.load(execution_id)["PipelineExecutionStatus"] == ExecutionStatus.EXECUTING]
            return resumed, stranded

    def claim(self, execution_id: str) -> bool:
        """The runner takes a queued execution: False if it is no longer queued (stopped, or already run; an
        entry left behind by a crash after its run had finished is removed)."""
        with self._locked():
            entry = self._entry(execution_id)
            if entry is None:
                return False
            if self.store.load(execution_id)["PipelineExecutionStatus"] != ExecutionStatus.EXECUTING:
                entry.unlink()
                return False
            write_json_atomically(entry, {**json.loads(entry.read_text()), "Claimed": True})
            return True

    def stop(self, execution_id: str) -> dict:
        """StopPipelineExecution: a queued execution is Stopped at once; a running one is asked to stop."""
        with self._locked():
            record = self.store.load(execution_id)
            if record["PipelineExecutionStatus"] != ExecutionStatus.EXECUTING:
                raise StateConflict(f"Pipeline execution {record['PipelineExecutionArn']} is "
                                    f"{record['PipelineExecutionStatus']}; only an Executing one can be stopped.")
            entry = self._entry(execution_id)
            if entry is not None and not json.loads(entry.read_text())["Claimed"]:
                entry.unlink()
                record.update(PipelineExecutionStatus=ExecutionStatus.STOPPED, EndTime=now_iso())
                self.store.save(record)
            else:
                self.store.request_stop(execution_id)
            return record

    def retry(self, execution_id: str, client_token: str | None = None) -> dict:
        """RetryPipelineExecution: a Failed execution queued again under its id (idempotent by client token)."""
        with self._locked():
            record = self.store.load(execution_id)
            if client_token and record.get("RetryClientRequestToken") == client_token:
                return record
            if record["PipelineExecutionStatus"] != ExecutionStatus.FAILED:
                raise StateConflict(f"Pipeline execution {record['PipelineExecutionArn']} is "
                                    f"{record['PipelineExecutionStatus']}; only a Failed one can be retried.")
            record.update(PipelineExecutionStatus=ExecutionStatus.EXECUTING, FailureReason=None, EndTime=None,
                          RetryClientRequestToken=client_token)
            self.store.save(record)
            self.store.clear_stop(execution_id)
            self._enqueue(execution_id)
            return record

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
            entry = self._entry(execution_id)
            if entry is not None:
                entry.unlink()
