"""moto's state across restarts: its mutating requests appended to a journal, replayed when the server starts.

moto keeps S3, the model registry and the pipelines in memory. moto's own recorder
(moto_api/_internal/recorder) appends every request to a file before handling it; here it is narrowed to the
requests that change what a user reads back: S3 writes (PUT, POST, DELETE) and SageMaker
Create/Update/Delete/Put/Add calls. Not recorded: reads, EventBridge and SQS (the stack's provisioning makes
its rules and queues again; SQS messages not yet received when the server stopped are not kept), Secrets
Manager (a secret is never written to a file; provisioning makes the IG secret again), CloudWatch metrics, and
Start/Stop/RetryPipelineExecution (the engine keeps executions on disk itself).

The recorder opens, appends and closes the journal before moto handles the request, so a request whose
response was sent is in the file (in the kernel's page cache: it survives kill -9 of the server, not a power
cut). At start, before the port answers, the journal is replayed in-process through moto's own WSGI app, in
order. No EventBridge rule exists yet at that moment (rules are not recorded), so the S3 and model-package
events the replay emits reach no target: no run starts again and no deployment is repeated.
What a replay cannot keep: creation times and S3 version ids are the replay's, not the originals.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from urllib.parse import urlsplit

JOURNAL = "moto-journal.jsonl"
_RECORDED_TARGETS = ("SageMaker",)  # JSON-protocol services whose writes are recorded
_WRITES = ("Create", "Update", "Delete", "Put", "Add")
_SIGNED_SERVICE = re.compile(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/")


def mutates(method: str, headers) -> bool:
    """Whether a request changes state worth keeping: S3 writes and SageMaker writes."""
    target = headers.get("X-Amz-Target", "")
    if target:
        service, _, action = target.partition(".")
        return service in _RECORDED_TARGETS and action.startswith(_WRITES)
    signed_for = _SIGNED_SERVICE.search(headers.get("Authorization", ""))
    return bool(signed_for) and signed_for.group(1) == "s3" and method in ("PUT", "POST", "DELETE")


def persist(state_dir: str | Path) -> int:
    """Replay the journal under state_dir into this process's moto, then record its writes there; the number of
    requests replayed. Call after moto_gaps.apply() and before the server serves."""
    from moto.moto_api import recorder

    journal = Path(state_dir) / JOURNAL
    replayed = _replay(journal)
    record_everything = recorder._record_request

    def record_writes(request, body=None) -> None:
        if mutates(request.method, request.headers):
            record_everything(request, body)

    recorder._location = str(journal)
    recorder._record_request = record_writes
    recorder.start_recording()
    return replayed


def _replay(journal: Path) -> int:
    """Each recorded request, in order, through moto's WSGI app (answers as they were: a failed create fails
    again)."""
    if not journal.exists():
        return 0
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.test import Client

    client = Client(DomainDispatcherApplication(create_backend_app))
    count = 0
    with journal.open() as lines:
        for line in lines:
            if not line.endswith("\n"):  # a write cut short by a crash: its request never got an answer
                break
            entry = json.loads(line)
            body = base64.b64decode(entry["body"]) if entry.get("body_encoded") else (entry.get("body") or b"")
            url = urlsplit(entry["url"])
            headers = {name: value for name, value in entry["headers"].items() if name != "Transfer-Encoding"}
            client.open(url.path, method=entry["method"], query_string=url.query, headers=headers, data=body)
            count += 1
    return count
